/* .clip archives: validated mmap reading.
 *
 * The reader maps the file, checks the checksum, the section table, the
 * layers and their checkpoints once, and every inode, entry and xattr as it
 * is read, so that nothing read through the accessors is out of bounds.
 * The byte layout is in format.h; archive_write.c writes it.
 */
#include "clip/archive.h"

#include <errno.h>
#include <fcntl.h>
#include <isa-l/crc64.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive_internal.h"
#include "format.h"
#include "util.h"

struct clip_archive {
	const unsigned char *map;
	size_t size;
	uint32_t version;
	const unsigned char *strings, *inodes, *dirents, *xattrs, *layers, *checkpoints, *windows,
		*meta;
	uint64_t strings_len, windows_len;
	uint32_t ninodes, ndirents, nxattrs, nlayers, ncheckpoints;
	const char *config_json, *source_json;
	const char *profile_json;    /* NULL: none */
	const unsigned char *chunks; /* NULL in version 1 */
	uint32_t nchunks;
	uint64_t chunk_bytes;
	const unsigned char *pieces; /* NULL before version 3 */
	uint32_t npieces;
	uint64_t piece_bytes;
	size_t layer_size; /* LAYERS record size of this version */
	char *path;	   /* as opened, for messages about records read later */
};

static const unsigned char *layer_rec(const struct clip_archive *a, uint32_t i)
{
	return a->layers + (size_t)i * a->layer_size;
}

static const unsigned char *inode_rec(const struct clip_archive *a, uint32_t ino)
{
	return a->inodes + (size_t)ino * INO_SIZEOF;
}

static const unsigned char *dirent_rec(const struct clip_archive *a, uint32_t i)
{
	return a->dirents + (size_t)i * DIRENT_SIZEOF;
}

/* Whether [off, off+len] (including a terminating NUL) lies in the strings. */
static bool string_ok(const struct clip_archive *a, uint64_t off, uint64_t len)
{
	return off < a->strings_len && len < a->strings_len - off && a->strings[off + len] == '\0';
}

static bool string_nul_free(const struct clip_archive *a, uint64_t off, uint64_t len)
{
	return memchr(a->strings + off, '\0', len) == NULL;
}

static int name_cmp(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
	size_t n = alen < blen ? alen : blen;
	int c = memcmp(a, b, n);
	if (c)
		return c;
	return (alen > blen) - (alen < blen);
}

#define BAD(...) clip_err_set(err, EBADMSG, __VA_ARGS__)

static int load_sections(struct clip_archive *a, const char *path, struct clip_err *err)
{
	const unsigned char *h = a->map;
	uint32_t nsec = clip_get_le32(h + HDR_SECTION_COUNT);
	uint64_t table = clip_get_le64(h + HDR_SECTION_TABLE);
	if (nsec > 1024 || table < HDR_SIZE || table > a->size ||
	    (uint64_t)nsec * SEC_ENTRY_SIZE > a->size - table)
		return BAD("%s: section table out of bounds", path);
	bool seen[SECTION_MAX + 1] = { 0 };
	for (uint32_t i = 0; i < nsec; i++) {
		const unsigned char *e = a->map + table + (size_t)i * SEC_ENTRY_SIZE;
		uint32_t id = clip_get_le32(e + SEC_ID);
		uint32_t flags = clip_get_le32(e + SEC_FLAGS);
		uint64_t off = clip_get_le64(e + SEC_OFFSET);
		uint64_t size = clip_get_le64(e + SEC_SIZE);
		uint32_t count = clip_get_le32(e + SEC_COUNT);
		uint32_t rsize = clip_get_le32(e + SEC_RECORD_SIZE);
		if (id == 0 || id > SECTION_MAX) {
			if (flags & SEC_FLAG_REQUIRED)
				return clip_err_set(err, ENOTSUP,
						    "%s: requires unknown section %u (written by a "
						    "newer clip)",
						    path, id);
			continue;
		}
		if (seen[id])
			return BAD("%s: section %u appears twice", path, id);
		seen[id] = true;
		if (off > a->size || size > a->size - off)
			return BAD("%s: section %u out of bounds", path, id);
		uint32_t want = clip_section_record_size(id);
		if (a->version < 3 && id == SECTION_META)
			want = META_SIZE_V2;
		if (a->version < 3 && id == SECTION_LAYERS)
			want = LAYER_SIZEOF_V2;
		if (rsize != want || (uint64_t)count * rsize != size)
			return BAD("%s: section %u has a wrong size", path, id);
		if ((id == SECTION_CHUNKS && a->version < 2) ||
		    (id == SECTION_PIECES && a->version < 3))
			return BAD("%s: section %u in a version %u archive", path, id, a->version);
		const unsigned char *p = a->map + off;
		switch ((enum clip_section_id)id) {
		case SECTION_META:
			if (count != 1)
				return BAD("%s: bad meta section", path);
			a->meta = p;
			break;
		case SECTION_STRINGS:
			a->strings = p;
			a->strings_len = size;
			break;
		case SECTION_INODES:
			a->inodes = p;
			a->ninodes = count;
			break;
		case SECTION_DIRENTS:
			a->dirents = p;
			a->ndirents = count;
			break;
		case SECTION_XATTRS:
			a->xattrs = p;
			a->nxattrs = count;
			break;
		case SECTION_LAYERS:
			a->layers = p;
			a->nlayers = count;
			a->layer_size = rsize;
			break;
		case SECTION_CHECKPOINTS:
			a->checkpoints = p;
			a->ncheckpoints = count;
			break;
		case SECTION_WINDOWS:
			a->windows = p;
			a->windows_len = size;
			break;
		case SECTION_CHUNKS:
			a->chunks = p;
			a->nchunks = count;
			break;
		case SECTION_PIECES:
			a->pieces = p;
			a->npieces = count;
			break;
		case SECTION_CONFIG:
		case SECTION_SOURCE:
		case SECTION_PROFILE:
			if (size == 0 || p[size - 1] != '\0')
				return BAD("%s: section %u is not a string", path, id);
			if (id == SECTION_CONFIG)
				a->config_json = (const char *)p;
			else if (id == SECTION_SOURCE)
				a->source_json = (const char *)p;
			else
				a->profile_json = (const char *)p;
			break;
		}
	}
	for (int id = 1; id <= SECTION_COUNT; id++)
		if (!seen[id] && !(id == SECTION_CHUNKS && a->version < 2) &&
		    !(id == SECTION_PIECES && a->version < 3))
			return BAD("%s: section %d missing", path, id);
	if (a->ninodes == 0)
		return BAD("%s: no root inode", path);
	return 0;
}

static int validate_layers(const struct clip_archive *a, const char *path, struct clip_err *err)
{
	for (uint32_t i = 0; i < a->nlayers; i++) {
		const unsigned char *r = layer_rec(a, i);
		uint32_t offs[3] = { clip_get_le32(r + LAYER_DIGEST),
				     clip_get_le32(r + LAYER_DIFF_ID),
				     clip_get_le32(r + LAYER_MEDIA_TYPE) };
		for (int k = 0; k < 3; k++) {
			if (offs[k] >= a->strings_len ||
			    memchr(a->strings + offs[k], '\0', a->strings_len - offs[k]) == NULL)
				return BAD("%s: layer %u: bad string reference", path, i);
		}
		uint32_t comp = clip_get_le32(r + LAYER_COMPRESSION);
		if (comp > CLIP_COMPRESSION_ZSTD)
			return BAD("%s: layer %u: unknown compression %u", path, i, comp);
		uint64_t csize = clip_get_le64(r + LAYER_CSIZE);
		uint64_t usize = clip_get_le64(r + LAYER_USIZE);
		uint32_t first = clip_get_le32(r + LAYER_CP_FIRST);
		uint32_t count = clip_get_le32(r + LAYER_CP_COUNT);
		if (first > a->ncheckpoints || count > a->ncheckpoints - first)
			return BAD("%s: layer %u: checkpoints out of range", path, i);
		if (count && comp != CLIP_COMPRESSION_GZIP)
			return BAD("%s: layer %u: checkpoints on a layer that is not gzip", path,
				   i);
		uint32_t chunk_first = clip_get_le32(r + LAYER_CHUNK_FIRST);
		uint32_t chunk_count = clip_get_le32(r + LAYER_CHUNK_COUNT);
		if (a->version < 2) {
			if (chunk_first || chunk_count)
				return BAD("%s: layer %u: reserved field set", path, i);
		} else if (chunk_first > a->nchunks || chunk_count > a->nchunks - chunk_first ||
			   (chunk_count &&
			    (a->chunk_bytes == 0 ||
			     chunk_count != (usize + a->chunk_bytes - 1) / a->chunk_bytes))) {
			return BAD("%s: layer %u: chunk hashes out of range", path, i);
		}
		if (a->version >= 3) {
			/* Checkpoints are only usable with the digests of their
			 * compressed bytes. */
			uint32_t piece_first = clip_get_le32(r + LAYER_PIECE_FIRST);
			uint32_t piece_count = clip_get_le32(r + LAYER_PIECE_COUNT);
			uint64_t want =
				a->piece_bytes ? (csize + a->piece_bytes - 1) / a->piece_bytes : 0;
			if (piece_first > a->npieces || piece_count > a->npieces - piece_first ||
			    (piece_count && piece_count != want) ||
			    (count && (a->piece_bytes == 0 || piece_count != want)))
				return BAD("%s: layer %u: piece digests out of range", path, i);
		}
		uint64_t prev_in = 0, prev_out = 0;
		for (uint32_t c = first; c < first + count; c++) {
			const unsigned char *p = a->checkpoints + (size_t)c * CP_SIZEOF;
			uint64_t in = clip_get_le64(p + CP_IN), out = clip_get_le64(p + CP_OUT);
			uint8_t bits = p[CP_BITS], codec = p[CP_CODEC];
			uint32_t wlen = clip_get_le32(p + CP_WINDOW_LEN);
			uint32_t wzlen = clip_get_le32(p + CP_WINDOW_ZLEN);
			uint64_t woff = clip_get_le64(p + CP_WINDOW_OFF);
			if (in > csize || out > usize || in < prev_in || out < prev_out ||
			    bits > 7 || (bits && in == 0) || codec > CLIP_GZ_WINDOW_ZSTD ||
			    wlen > CLIP_GZ_WINDOW || woff > a->windows_len ||
			    wzlen > a->windows_len - woff ||
			    (codec == CLIP_GZ_WINDOW_RAW && wzlen != wlen))
				return BAD("%s: layer %u: invalid checkpoint %u", path, i,
					   c - first);
			prev_in = in;
			prev_out = out;
		}
	}
	return 0;
}

/* ---- records, checked as they are used ---------------------------------- *
 *
 * Opening an archive checks it whole where that is cheap (the checksum, the
 * section table, layers and checkpoints) but not each inode, entry and xattr:
 * that pass grows with the number of files and was a large part of a cold
 * read in a fresh process, which opens the archive first (bench/open-stat.sh
 * measures opening). Instead every accessor checks, in constant time (a name:
 * in its length), the records it reads, and fails with -EBADMSG on one that
 * is wrong. What the checks keep is what readers rely on: nothing is read out
 * of bounds, names are proper file names, and walks end, because a directory
 * entry naming a directory must be that directory's one parent link and
 * point to a higher inode number (the writer numbers breadth-first), so no
 * chain of entries can come back. What they give up is finding a
 * consistent-but-odd archive (unsorted names, a directory named twice)
 * before it is used; such an archive only misleads its own lookups, and the
 * checksum still refuses a damaged file at open. */

/* 0 if inode `ino` (in range) is sound, else -EBADMSG. */
static int check_inode(const struct clip_archive *a, uint32_t ino)
{
	const unsigned char *r = inode_rec(a, ino);
	uint32_t mode = clip_get_le32(r + INO_MODE);
	uint64_t data = clip_get_le64(r + INO_DATA);
	uint32_t aux = clip_get_le32(r + INO_AUX);
	uint32_t xfirst = clip_get_le32(r + INO_XATTR_FIRST);
	uint32_t xcount = clip_get_le32(r + INO_XATTR_COUNT);
	if (clip_get_le32(r + INO_MTIME_NSEC) >= 1000000000u || xfirst > a->nxattrs ||
	    xcount > a->nxattrs - xfirst)
		return -EBADMSG;
	switch (mode & S_IFMT) {
	case S_IFREG: {
		uint32_t layer = clip_get_le32(r + INO_LAYER);
		uint64_t size = clip_get_le64(r + INO_SIZE);
		if (layer >= a->nlayers)
			return -EBADMSG;
		uint64_t usize = clip_get_le64(layer_rec(a, layer) + LAYER_USIZE);
		return data > usize || size > usize - data ? -EBADMSG : 0;
	}
	case S_IFLNK:
		/* Readers take the target's length from the size field. */
		return string_ok(a, data, aux) && string_nul_free(a, data, aux) &&
				       clip_get_le64(r + INO_SIZE) == aux
			       ? 0
			       : -EBADMSG;
	case S_IFDIR: {
		uint32_t parent = clip_get_le32(r + INO_PARENT);
		if (data > a->ndirents || aux > a->ndirents - data)
			return -EBADMSG;
		/* The root is its own parent; every other directory's parent
		 * comes before it. */
		return ino == CLIP_ARCHIVE_ROOT ? (parent == ino ? 0 : -EBADMSG)
						: (parent < ino ? 0 : -EBADMSG);
	}
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
	case S_IFSOCK: return 0;
	default: return -EBADMSG;
	}
}

/* 0 if directory entry `e` of directory `dir` (itself checked) is sound:
 * a proper name, an inode in range other than the root, and for a
 * directory, `dir` as its parent and a higher number. Else -EBADMSG. */
static int check_entry(const struct clip_archive *a, uint32_t dir, const unsigned char *e)
{
	uint32_t no = clip_get_le32(e + DIRENT_NAME_OFF);
	uint32_t nl = clip_get_le32(e + DIRENT_NAME_LEN);
	uint32_t child = clip_get_le32(e + DIRENT_INO);
	if (nl == 0 || !string_ok(a, no, nl) || !string_nul_free(a, no, nl))
		return -EBADMSG;
	const unsigned char *name = a->strings + no;
	if (memchr(name, '/', nl) || (nl == 1 && name[0] == '.') ||
	    (nl == 2 && name[0] == '.' && name[1] == '.'))
		return -EBADMSG;
	if (child == CLIP_ARCHIVE_ROOT || child >= a->ninodes)
		return -EBADMSG;
	const unsigned char *cr = inode_rec(a, child);
	if (S_ISDIR(clip_get_le32(cr + INO_MODE)) &&
	    (child <= dir || clip_get_le32(cr + INO_PARENT) != dir))
		return -EBADMSG;
	return 0;
}

/* 0 if xattr record `x` is sound: a non-empty NUL-free name and a value,
 * both in the strings. Else -EBADMSG. */
static int check_xattr(const struct clip_archive *a, const unsigned char *x)
{
	uint32_t no = clip_get_le32(x + XATTR_NAME_OFF);
	uint32_t nl = clip_get_le32(x + XATTR_NAME_LEN);
	return nl && string_ok(a, no, nl) && string_nul_free(a, no, nl) &&
			       string_ok(a, clip_get_le32(x + XATTR_VALUE_OFF),
					 clip_get_le32(x + XATTR_VALUE_LEN))
		       ? 0
		       : -EBADMSG;
}

int clip_archive_open(const char *path, struct clip_archive **out, struct clip_err *err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return clip_err_errno(err, errno, "%s", path);
	struct stat st;
	if (fstat(fd, &st) < 0)
		return clip_err_errno(err, errno, "%s", path);
	if (!S_ISREG(st.st_mode))
		return clip_err_set(err, EINVAL, "%s: not a regular file", path);
	if ((uint64_t)st.st_size < HDR_SIZE)
		return BAD("%s: not a clip archive (%lld bytes, too short)", path,
			   (long long)st.st_size);
	void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED)
		return clip_err_errno(err, errno, "%s: mmap", path);
	struct clip_archive *a = calloc(1, sizeof(*a));
	if (a == NULL) {
		munmap(map, (size_t)st.st_size);
		return clip_err_nomem(err);
	}
	a->map = map;
	a->size = (size_t)st.st_size;
	a->path = strdup(path);
	if (a->path == NULL) {
		munmap(map, (size_t)st.st_size);
		free(a);
		return clip_err_nomem(err);
	}
	int rc;
	const unsigned char *h = a->map;
	if (memcmp(h + HDR_MAGIC, CLIP_FORMAT_MAGIC, CLIP_FORMAT_MAGIC_LEN) != 0) {
		rc = BAD("%s: not a clip archive (bad magic)", path);
		goto fail;
	}
	a->version = clip_get_le32(h + HDR_VERSION);
	if (a->version == 0 || a->version > CLIP_FORMAT_VERSION) {
		rc = clip_err_set(err, ENOTSUP,
				  "%s: archive format version %u is not supported (this clip reads "
				  "1 to %u)",
				  path, a->version, CLIP_FORMAT_VERSION);
		goto fail;
	}
	if (clip_get_le32(h + HDR_HEADER_SIZE) != HDR_SIZE) {
		rc = BAD("%s: header size %u, expected %u", path,
			 clip_get_le32(h + HDR_HEADER_SIZE), HDR_SIZE);
		goto fail;
	}
	uint64_t file_size = clip_get_le64(h + HDR_FILE_SIZE);
	if (file_size != a->size) {
		rc = BAD("%s: truncated or extended archive (header says %llu bytes, file has %zu)",
			 path, (unsigned long long)file_size, a->size);
		goto fail;
	}
	/* The checksum field counts as zero: checksum the parts around it. */
	static const unsigned char zero8[8];
	uint64_t crc = crc64_ecma_refl(0, a->map, HDR_CHECKSUM);
	crc = crc64_ecma_refl(crc, zero8, 8);
	crc = crc64_ecma_refl(crc, a->map + HDR_CHECKSUM + 8, a->size - HDR_CHECKSUM - 8);
	if (crc != clip_get_le64(h + HDR_CHECKSUM)) {
		rc = BAD("%s: checksum mismatch (corrupted archive)", path);
		goto fail;
	}
	rc = load_sections(a, path, err);
	if (rc == 0 && a->version >= 2) {
		/* Chunks are what caches store and hash: between 4 KiB and 1 GiB. */
		a->chunk_bytes = clip_get_le64(a->meta + META_CHUNK_BYTES);
		if (a->chunk_bytes && (a->chunk_bytes < 4096 || a->chunk_bytes > (1u << 30)))
			rc = BAD("%s: invalid chunk size %llu", path,
				 (unsigned long long)a->chunk_bytes);
	}
	if (rc == 0 && a->version >= 3) {
		a->piece_bytes = clip_get_le64(a->meta + META_PIECE_BYTES);
		if (a->piece_bytes && (a->piece_bytes < CLIP_GZ_MIN_PIECE_BYTES ||
				       a->piece_bytes > CLIP_GZ_MAX_PIECE_BYTES))
			rc = BAD("%s: invalid piece size %llu", path,
				 (unsigned long long)a->piece_bytes);
	}
	if (rc == 0)
		rc = validate_layers(a, path, err);
	if (rc == 0 && (!S_ISDIR(clip_get_le32(inode_rec(a, CLIP_ARCHIVE_ROOT) + INO_MODE)) ||
			check_inode(a, CLIP_ARCHIVE_ROOT) < 0))
		rc = BAD("%s: the root is not a sound directory", path);
	if (rc < 0)
		goto fail;
	*out = a;
	return 0;
fail:
	clip_archive_close(a);
	return rc;
}

void clip_archive_close(struct clip_archive *archive)
{
	if (archive == NULL)
		return;
	munmap((void *)archive->map, archive->size);
	free(archive->path);
	free(archive);
}

void clip_archive_stats(const struct clip_archive *a, struct clip_archive_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->file_size = a->size;
	out->version = a->version;
	out->inodes = a->ninodes;
	out->entries = a->ndirents;
	out->layers = a->nlayers;
	out->checkpoints = a->ncheckpoints;
	out->window_bytes = a->windows_len;
	out->span_bytes = clip_get_le64(a->meta + META_SPAN_BYTES);
	out->large_file_threshold = clip_get_le64(a->meta + META_LARGE_FILE);
	out->regular_bytes = clip_get_le64(a->meta + META_REGULAR_BYTES);
	out->chunk_bytes = a->chunk_bytes;
	out->piece_bytes = a->piece_bytes;
	out->pieces = a->npieces;
}

int clip_archive_inode(const struct clip_archive *a, uint32_t ino, struct clip_archive_inode *out)
{
	if (ino >= a->ninodes)
		return -ENOENT;
	if (check_inode(a, ino) < 0)
		return -EBADMSG;
	const unsigned char *r = inode_rec(a, ino);
	memset(out, 0, sizeof(*out));
	out->ino = ino;
	out->mode = clip_get_le32(r + INO_MODE);
	out->uid = clip_get_le32(r + INO_UID);
	out->gid = clip_get_le32(r + INO_GID);
	out->nlink = clip_get_le32(r + INO_NLINK);
	out->size = clip_get_le64(r + INO_SIZE);
	out->mtime_sec = (int64_t)clip_get_le64(r + INO_MTIME_SEC);
	out->mtime_nsec = clip_get_le32(r + INO_MTIME_NSEC);
	out->rdev_major = clip_get_le32(r + INO_RDEV_MAJOR);
	out->rdev_minor = clip_get_le32(r + INO_RDEV_MINOR);
	out->nxattrs = clip_get_le32(r + INO_XATTR_COUNT);
	switch (out->mode & S_IFMT) {
	case S_IFREG:
		out->layer = clip_get_le32(r + INO_LAYER);
		out->data_offset = clip_get_le64(r + INO_DATA);
		break;
	case S_IFLNK: out->symlink = (const char *)a->strings + clip_get_le64(r + INO_DATA); break;
	case S_IFDIR:
		out->nentries = clip_get_le32(r + INO_AUX);
		out->parent = clip_get_le32(r + INO_PARENT);
		break;
	}
	return 0;
}

int clip_archive_lookup(const struct clip_archive *a, uint32_t dir, const char *name, size_t len,
			uint32_t *ino)
{
	if (dir >= a->ninodes)
		return -ENOENT;
	const unsigned char *r = inode_rec(a, dir);
	if (!S_ISDIR(clip_get_le32(r + INO_MODE)))
		return -ENOTDIR;
	if (check_inode(a, dir) < 0)
		return -EBADMSG;
	uint32_t lo = (uint32_t)clip_get_le64(r + INO_DATA);
	uint32_t hi = lo + clip_get_le32(r + INO_AUX);
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const unsigned char *e = dirent_rec(a, mid);
		uint32_t no = clip_get_le32(e + DIRENT_NAME_OFF);
		uint32_t nl = clip_get_le32(e + DIRENT_NAME_LEN);
		if (!string_ok(a, no, nl))
			return -EBADMSG;
		int c = name_cmp(a->strings + no, nl, (const unsigned char *)name, len);
		if (c == 0) {
			if (check_entry(a, dir, e) < 0)
				return -EBADMSG;
			*ino = clip_get_le32(e + DIRENT_INO);
			return 0;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -ENOENT;
}

int clip_archive_resolve(const struct clip_archive *a, const char *path, uint32_t *ino,
			 struct clip_err *err)
{
	uint32_t cur = CLIP_ARCHIVE_ROOT;
	const char *p = path;
	while (*p) {
		while (*p == '/')
			p++;
		if (*p == '\0')
			break;
		const char *end = strchr(p, '/');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		uint32_t next = cur;
		/* "." and ".." only mean something in a directory: after a
		 * file they must fail as a lookup would, not read a parent
		 * field that files do not have. */
		if (check_inode(a, cur) < 0)
			return clip_err_set(err, EBADMSG, "%s: %s: inode %u is invalid", a->path,
					    path, cur);
		if (((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.')) &&
		    !S_ISDIR(clip_get_le32(inode_rec(a, cur) + INO_MODE))) {
			return clip_err_errno(err, ENOTDIR, "%s", path);
		} else if (len == 1 && p[0] == '.') {
			/* stay */
		} else if (len == 2 && p[0] == '.' && p[1] == '.') {
			next = clip_get_le32(inode_rec(a, cur) + INO_PARENT);
		} else {
			int rc = clip_archive_lookup(a, cur, p, len, &next);
			if (rc == -EBADMSG)
				return clip_err_set(err, rc,
						    "%s: %s: directory inode %u is invalid",
						    a->path, path, cur);
			if (rc < 0)
				return clip_err_errno(err, rc, "%s", path);
		}
		cur = next;
		p += len;
	}
	*ino = cur;
	return 0;
}

int clip_archive_dirent(const struct clip_archive *a, uint32_t dir, uint32_t index,
			const char **name, size_t *name_len, uint32_t *ino)
{
	if (dir >= a->ninodes)
		return -ENOENT;
	const unsigned char *r = inode_rec(a, dir);
	if (!S_ISDIR(clip_get_le32(r + INO_MODE)))
		return -ENOTDIR;
	if (check_inode(a, dir) < 0)
		return -EBADMSG;
	if (index >= clip_get_le32(r + INO_AUX))
		return -ENOENT;
	const unsigned char *e = dirent_rec(a, (uint32_t)clip_get_le64(r + INO_DATA) + index);
	if (check_entry(a, dir, e) < 0)
		return -EBADMSG;
	*name = (const char *)a->strings + clip_get_le32(e + DIRENT_NAME_OFF);
	*name_len = clip_get_le32(e + DIRENT_NAME_LEN);
	*ino = clip_get_le32(e + DIRENT_INO);
	return 0;
}

int clip_archive_xattr(const struct clip_archive *a, uint32_t ino, uint32_t index,
		       const char **name, const unsigned char **value, size_t *len)
{
	if (ino >= a->ninodes)
		return -ENOENT;
	if (check_inode(a, ino) < 0)
		return -EBADMSG;
	const unsigned char *r = inode_rec(a, ino);
	if (index >= clip_get_le32(r + INO_XATTR_COUNT))
		return -ENOENT;
	const unsigned char *x =
		a->xattrs + ((size_t)clip_get_le32(r + INO_XATTR_FIRST) + index) * XATTR_SIZEOF;
	if (check_xattr(a, x) < 0)
		return -EBADMSG;
	*name = (const char *)a->strings + clip_get_le32(x + XATTR_NAME_OFF);
	*value = a->strings + clip_get_le32(x + XATTR_VALUE_OFF);
	*len = clip_get_le32(x + XATTR_VALUE_LEN);
	return 0;
}

int clip_archive_layer(const struct clip_archive *a, uint32_t index, struct clip_archive_layer *out)
{
	if (index >= a->nlayers)
		return -ENOENT;
	const unsigned char *r = layer_rec(a, index);
	out->digest = (const char *)a->strings + clip_get_le32(r + LAYER_DIGEST);
	out->diff_id = (const char *)a->strings + clip_get_le32(r + LAYER_DIFF_ID);
	out->media_type = (const char *)a->strings + clip_get_le32(r + LAYER_MEDIA_TYPE);
	out->compression = (enum clip_compression)clip_get_le32(r + LAYER_COMPRESSION);
	out->compressed_size = clip_get_le64(r + LAYER_CSIZE);
	out->uncompressed_size = clip_get_le64(r + LAYER_USIZE);
	out->ncheckpoints = clip_get_le32(r + LAYER_CP_COUNT);
	out->nchunks = clip_get_le32(r + LAYER_CHUNK_COUNT);
	out->npieces = a->version >= 3 ? clip_get_le32(r + LAYER_PIECE_COUNT) : 0;
	return 0;
}

const unsigned char *clip_archive_chunk_hash(const struct clip_archive *a, uint32_t layer,
					     uint64_t chunk)
{
	if (layer >= a->nlayers || a->chunks == NULL)
		return NULL;
	const unsigned char *r = layer_rec(a, layer);
	if (chunk >= clip_get_le32(r + LAYER_CHUNK_COUNT))
		return NULL;
	return a->chunks + ((size_t)clip_get_le32(r + LAYER_CHUNK_FIRST) + chunk) * CHUNK_SIZEOF;
}

int clip_archive_layer_gzindex(const struct clip_archive *a, uint32_t index,
			       struct clip_gz_index **outp, struct clip_err *err)
{
	if (index >= a->nlayers)
		return clip_err_set(err, ENOENT, "layer %u out of range", index);
	struct clip_gz_index *out = calloc(1, sizeof(*out));
	if (out == NULL)
		return clip_err_nomem(err);
	*outp = out;
	const unsigned char *r = layer_rec(a, index);
	uint32_t first = clip_get_le32(r + LAYER_CP_FIRST);
	uint32_t count = clip_get_le32(r + LAYER_CP_COUNT);
	out->csize = clip_get_le64(r + LAYER_CSIZE);
	out->usize = clip_get_le64(r + LAYER_USIZE);
	bool pieces = a->version >= 3 && clip_get_le32(r + LAYER_PIECE_COUNT) > 0;
	if (pieces) {
		out->piece_bytes = (uint32_t)a->piece_bytes;
		out->npieces = clip_get_le32(r + LAYER_PIECE_COUNT);
		out->piece_sha256 =
			a->pieces + (size_t)clip_get_le32(r + LAYER_PIECE_FIRST) * PIECE_SIZEOF;
	}
	if (count == 0)
		return 0;
	out->points = calloc(count, sizeof(*out->points));
	if (out->points == NULL) {
		free(out);
		*outp = NULL;
		return clip_err_nomem(err);
	}
	out->owns_points = true;
	out->count = count;
	for (uint32_t i = 0; i < count; i++) {
		const unsigned char *p = a->checkpoints + ((size_t)first + i) * CP_SIZEOF;
		struct clip_gz_point *pt = &out->points[i];
		pt->in = clip_get_le64(p + CP_IN);
		pt->out = clip_get_le64(p + CP_OUT);
		pt->bits = p[CP_BITS];
		pt->window_codec = p[CP_CODEC];
		pt->window_len = clip_get_le32(p + CP_WINDOW_LEN);
		pt->window_zlen = clip_get_le32(p + CP_WINDOW_ZLEN);
		pt->window_z = a->windows + clip_get_le64(p + CP_WINDOW_OFF);
		memcpy(pieces ? pt->window_sha256 : pt->span_sha256, p + CP_SHA256, 32);
	}
	return 0;
}

const char *clip_archive_path(const struct clip_archive *a)
{
	return a->path;
}

const char *clip_archive_config_json(const struct clip_archive *a)
{
	return a->config_json;
}

const char *clip_archive_source_json(const struct clip_archive *a)
{
	return a->source_json;
}

const char *clip_archive_profile_json(const struct clip_archive *a)
{
	return a->profile_json;
}

int clip_archive_section(const struct clip_archive *a, uint32_t id, struct clip_archive_raw *out)
{
	const unsigned char *h = a->map;
	uint32_t nsec = clip_get_le32(h + HDR_SECTION_COUNT);
	uint64_t table = clip_get_le64(h + HDR_SECTION_TABLE);
	for (uint32_t i = 0; i < nsec; i++) {
		const unsigned char *e = a->map + table + (size_t)i * SEC_ENTRY_SIZE;
		if (clip_get_le32(e + SEC_ID) != id)
			continue;
		/* load_sections() checked the bounds at open. */
		*out = (struct clip_archive_raw){
			.data = a->map + clip_get_le64(e + SEC_OFFSET),
			.size = clip_get_le64(e + SEC_SIZE),
			.count = clip_get_le32(e + SEC_COUNT),
			.record_size = clip_get_le32(e + SEC_RECORD_SIZE),
			.version = a->version,
		};
		return 0;
	}
	return -ENOENT;
}
