/* .clip archives: writing one from a finished tree.
 *
 * The writer lays every section out in memory (an archive is metadata only:
 * a few MB for a large image), checksums the whole, and writes it with one
 * temporary file + rename so that a reader never sees half an archive.
 * The byte layout is in format.h; archive.c reads it.
 */
#include "clip/archive.h"

#include <errno.h>
#include <isa-l/crc64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive_internal.h"
#include "format.h"
#include "util.h"

/* ---- growable buffers and the string table ----------------------------- */

struct buf {
	unsigned char *data;
	size_t len, cap;
};

static int buf_reserve(struct buf *b, size_t extra)
{
	if (b->len + extra <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + extra)
		cap *= 2;
	unsigned char *d = realloc(b->data, cap);
	if (d == NULL)
		return -ENOMEM;
	b->data = d;
	b->cap = cap;
	return 0;
}

/* Append `len` zero bytes and return a pointer to them (NULL when out of memory). */
static unsigned char *buf_grow(struct buf *b, size_t len)
{
	if (buf_reserve(b, len) < 0)
		return NULL;
	unsigned char *p = b->data + b->len;
	memset(p, 0, len);
	b->len += len;
	return p;
}

static int buf_append(struct buf *b, const void *data, size_t len)
{
	if (len == 0)
		return 0;
	unsigned char *p = buf_grow(b, len);
	if (p == NULL)
		return -ENOMEM;
	if (len)
		memcpy(p, data, len);
	return 0;
}

/* Strings are deduplicated: file names repeat a lot across a Debian tree
 * (e.g. every "__init__.py"), and so do xattr names. */
struct strtab {
	struct buf data;
	uint32_t *slots; /* offset + 1, 0 = empty */
	size_t nslots, used;
};

static uint64_t str_hash(const void *s, size_t len)
{
	return clip_fnv1a(CLIP_FNV1A_SEED, s, len);
}

/* Find the slot of a string with these bytes, or the empty slot for it. */
static size_t strtab_slot(const struct strtab *t, const void *s, size_t len, uint64_t h)
{
	size_t i = h & (t->nslots - 1);
	for (;;) {
		uint32_t v = t->slots[i];
		if (v == 0)
			return i;
		const unsigned char *cand = t->data.data + v - 1;
		/* Stored strings are NUL-terminated, so a candidate with the same
		 * first len bytes and a NUL after them has exactly this length. */
		if ((size_t)(v - 1) + len < t->data.len && memcmp(cand, s, len) == 0 &&
		    cand[len] == '\0')
			return i;
		i = (i + 1) & (t->nslots - 1);
	}
}

/* Intern len bytes (NUL added) and return the offset in *off. Values with
 * embedded NULs (xattr values) are not deduplicated. */
static int strtab_add(struct strtab *t, const void *s, size_t len, uint32_t *off)
{
	bool has_nul = memchr(s, '\0', len) != NULL;
	if (!has_nul) {
		if (t->used * 2 >= t->nslots) {
			size_t n = t->nslots ? t->nslots * 2 : 4096;
			uint32_t *slots = calloc(n, sizeof(*slots));
			if (slots == NULL)
				return -ENOMEM;
			uint32_t *old = t->slots;
			size_t nold = t->nslots;
			t->slots = slots;
			t->nslots = n;
			for (size_t i = 0; i < nold; i++) {
				if (old[i] == 0)
					continue;
				const char *str = (const char *)t->data.data + old[i] - 1;
				size_t l = strlen(str);
				t->slots[strtab_slot(t, str, l, str_hash(str, l))] = old[i];
			}
			free(old);
		}
		uint64_t h = str_hash(s, len);
		size_t slot = strtab_slot(t, s, len, h);
		if (t->slots[slot]) {
			*off = t->slots[slot] - 1;
			return 0;
		}
		if (t->data.len + len + 1 >= UINT32_MAX)
			return -EFBIG;
		*off = (uint32_t)t->data.len;
		if (buf_append(&t->data, s, len) < 0 || buf_append(&t->data, "", 1) < 0)
			return -ENOMEM;
		t->slots[slot] = *off + 1;
		t->used++;
		return 0;
	}
	if (t->data.len + len + 1 >= UINT32_MAX)
		return -EFBIG;
	*off = (uint32_t)t->data.len;
	if (buf_append(&t->data, s, len) < 0 || buf_append(&t->data, "", 1) < 0)
		return -ENOMEM;
	return 0;
}

static void strtab_free(struct strtab *t)
{
	free(t->data.data);
	free(t->slots);
}

/* ---- writing ------------------------------------------------------------ */

struct section {
	uint32_t id;
	struct buf data;
	uint32_t count, record_size;
	bool present; /* optional sections (id > SECTION_COUNT): written */
};

struct writer {
	struct strtab strings;
	struct section sec[SECTION_MAX]; /* indexed by id - 1 */
};

static void writer_init(struct writer *w)
{
	*w = (struct writer){ 0 };
	for (int i = 0; i < SECTION_MAX; i++) {
		w->sec[i].id = (uint32_t)i + 1;
		w->sec[i].record_size = clip_section_record_size((uint32_t)i + 1);
	}
}

static void writer_free(struct writer *w)
{
	strtab_free(&w->strings);
	for (int i = 0; i < SECTION_MAX; i++)
		free(w->sec[i].data.data);
}

static struct section *sec(struct writer *w, enum clip_section_id id)
{
	return &w->sec[id - 1];
}

static unsigned char *add_record(struct writer *w, enum clip_section_id id)
{
	struct section *s = sec(w, id);
	unsigned char *p = buf_grow(&s->data, s->record_size);
	if (p)
		s->count++;
	return p;
}

static int intern(struct writer *w, const char *s, uint32_t *off)
{
	return strtab_add(&w->strings, s ? s : "", s ? strlen(s) : 0, off);
}

static int write_inodes(struct writer *w, const struct clip_tree *tree, uint64_t *regular_bytes)
{
	size_t n = clip_tree_inode_count(tree);
	uint32_t next_dirent = 0, next_xattr = 0;
	*regular_bytes = 0;
	for (uint32_t i = 0; i < n; i++) {
		const struct clip_tree_node *node = clip_tree_inode_node(tree, i);
		const struct clip_tree_inode *ino = node->inode;
		unsigned char *r = add_record(w, SECTION_INODES);
		if (r == NULL)
			return -ENOMEM;
		clip_put_le32(r + INO_MODE, ino->mode);
		clip_put_le32(r + INO_UID, ino->uid);
		clip_put_le32(r + INO_GID, ino->gid);
		clip_put_le32(r + INO_NLINK, ino->nlink);
		clip_put_le64(r + INO_SIZE, ino->size);
		clip_put_le64(r + INO_MTIME_SEC, (uint64_t)ino->mtime_sec);
		clip_put_le32(r + INO_MTIME_NSEC, ino->mtime_nsec);
		clip_put_le32(r + INO_RDEV_MAJOR, ino->rdev_major);
		clip_put_le32(r + INO_RDEV_MINOR, ino->rdev_minor);
		if (S_ISREG(ino->mode)) {
			clip_put_le32(r + INO_LAYER, ino->layer);
			clip_put_le64(r + INO_DATA, ino->data_offset);
			*regular_bytes += ino->size;
		} else if (S_ISLNK(ino->mode)) {
			uint32_t off;
			int rc = strtab_add(&w->strings, ino->symlink, strlen(ino->symlink), &off);
			if (rc < 0)
				return rc;
			clip_put_le64(r + INO_DATA, off);
			clip_put_le32(r + INO_AUX, (uint32_t)strlen(ino->symlink));
		} else if (S_ISDIR(ino->mode)) {
			clip_put_le64(r + INO_DATA, next_dirent);
			clip_put_le32(r + INO_AUX, (uint32_t)node->nchildren);
			clip_put_le32(r + INO_PARENT, node->parent ? node->parent->inode->ino : 0);
			next_dirent += (uint32_t)node->nchildren;
		}
		clip_put_le32(r + INO_XATTR_FIRST, next_xattr);
		clip_put_le32(r + INO_XATTR_COUNT, (uint32_t)ino->nxattrs);
		next_xattr += (uint32_t)ino->nxattrs;
	}
	/* Second pass: directory entries and xattrs in inode order, matching the
	 * first/count fields written above. */
	for (uint32_t i = 0; i < n; i++) {
		const struct clip_tree_node *node = clip_tree_inode_node(tree, i);
		const struct clip_tree_inode *ino = node->inode;
		if (S_ISDIR(ino->mode)) {
			for (size_t c = 0; c < node->nchildren; c++) {
				const struct clip_tree_node *child = node->children[c];
				uint32_t off;
				int rc =
					strtab_add(&w->strings, child->name, child->name_len, &off);
				if (rc < 0)
					return rc;
				unsigned char *r = add_record(w, SECTION_DIRENTS);
				if (r == NULL)
					return -ENOMEM;
				clip_put_le32(r + DIRENT_NAME_OFF, off);
				clip_put_le32(r + DIRENT_NAME_LEN, (uint32_t)child->name_len);
				clip_put_le32(r + DIRENT_INO, child->inode->ino);
			}
		}
		for (size_t x = 0; x < ino->nxattrs; x++) {
			uint32_t noff, voff;
			int rc = intern(w, ino->xattrs[x].name, &noff);
			if (rc == 0)
				rc = strtab_add(&w->strings, ino->xattrs[x].value,
						ino->xattrs[x].len, &voff);
			if (rc < 0)
				return rc;
			unsigned char *r = add_record(w, SECTION_XATTRS);
			if (r == NULL)
				return -ENOMEM;
			clip_put_le32(r + XATTR_NAME_OFF, noff);
			clip_put_le32(r + XATTR_NAME_LEN, (uint32_t)strlen(ino->xattrs[x].name));
			clip_put_le32(r + XATTR_VALUE_OFF, voff);
			clip_put_le32(r + XATTR_VALUE_LEN, (uint32_t)ino->xattrs[x].len);
		}
	}
	return 0;
}

/* The piece size the layers' digests share (0: none has any), or -EINVAL when
 * two differ: META records one. */
static int64_t piece_bytes_of(const struct clip_archive_write_options *o)
{
	uint32_t piece = 0;
	for (size_t i = 0; i < o->nlayers; i++) {
		const struct clip_gz_index *gz = o->layers[i].gz;
		if (gz == NULL || gz->piece_bytes == 0)
			continue;
		if (piece && gz->piece_bytes != piece)
			return -EINVAL;
		piece = gz->piece_bytes;
	}
	return piece;
}

/* The checkpoints of one layer, and their windows. */
static int write_points(struct writer *w, const struct clip_gz_index *gz)
{
	for (size_t c = 0; c < gz->count; c++) {
		const struct clip_gz_point *p = &gz->points[c];
		struct section *win = sec(w, SECTION_WINDOWS);
		uint64_t woff = win->data.len;
		if (buf_append(&win->data, p->window_z, p->window_zlen) < 0)
			return -ENOMEM;
		win->count += p->window_zlen;
		unsigned char *cp = add_record(w, SECTION_CHECKPOINTS);
		if (cp == NULL)
			return -ENOMEM;
		clip_put_le64(cp + CP_IN, p->in);
		clip_put_le64(cp + CP_OUT, p->out);
		cp[CP_BITS] = p->bits;
		cp[CP_CODEC] = p->window_codec;
		clip_put_le32(cp + CP_WINDOW_LEN, p->window_len);
		clip_put_le32(cp + CP_WINDOW_ZLEN, p->window_zlen);
		clip_put_le64(cp + CP_WINDOW_OFF, woff);
		memcpy(cp + CP_SHA256, gz->piece_bytes ? p->window_sha256 : p->span_sha256, 32);
	}
	return 0;
}

static int write_layers(struct writer *w, const struct clip_archive_write_options *o)
{
	uint32_t next_cp = 0;
	for (size_t i = 0; i < o->nlayers; i++) {
		const struct clip_archive_layer_info *l = &o->layers[i];
		uint32_t doff, ioff, moff;
		int rc = intern(w, l->digest, &doff);
		if (rc == 0)
			rc = intern(w, l->diff_id, &ioff);
		if (rc == 0)
			rc = intern(w, l->media_type, &moff);
		if (rc < 0)
			return rc;
		size_t ncp = l->gz ? l->gz->count : 0;
		/* Readers verify what they fetch for a checkpoint piece by piece. */
		if (ncp && (l->gz->piece_bytes == 0 ||
			    l->gz->npieces != (l->compressed_size + l->gz->piece_bytes - 1) /
						      l->gz->piece_bytes))
			return -EINVAL;
		unsigned char *r = add_record(w, SECTION_LAYERS);
		if (r == NULL)
			return -ENOMEM;
		clip_put_le32(r + LAYER_DIGEST, doff);
		clip_put_le32(r + LAYER_DIFF_ID, ioff);
		clip_put_le32(r + LAYER_MEDIA_TYPE, moff);
		clip_put_le32(r + LAYER_COMPRESSION, (uint32_t)l->compression);
		clip_put_le64(r + LAYER_CSIZE, l->compressed_size);
		clip_put_le64(r + LAYER_USIZE, l->uncompressed_size);
		clip_put_le32(r + LAYER_CP_FIRST, next_cp);
		clip_put_le32(r + LAYER_CP_COUNT, (uint32_t)ncp);
		next_cp += (uint32_t)ncp;
		struct section *chunks = sec(w, SECTION_CHUNKS);
		if (l->nchunks > UINT32_MAX - chunks->count)
			return -EFBIG;
		clip_put_le32(r + LAYER_CHUNK_FIRST, chunks->count);
		clip_put_le32(r + LAYER_CHUNK_COUNT, (uint32_t)l->nchunks);
		if (l->nchunks &&
		    buf_append(&chunks->data, l->chunk_hashes, l->nchunks * CHUNK_SIZEOF) < 0)
			return -ENOMEM;
		chunks->count += (uint32_t)l->nchunks;
		struct section *pieces = sec(w, SECTION_PIECES);
		size_t npieces = l->gz && l->gz->piece_bytes ? l->gz->npieces : 0;
		if (npieces > UINT32_MAX - pieces->count)
			return -EFBIG;
		clip_put_le32(r + LAYER_PIECE_FIRST, pieces->count);
		clip_put_le32(r + LAYER_PIECE_COUNT, (uint32_t)npieces);
		if (npieces &&
		    buf_append(&pieces->data, l->gz->piece_sha256, npieces * PIECE_SIZEOF) < 0)
			return -ENOMEM;
		pieces->count += (uint32_t)npieces;
		if (ncp && write_points(w, l->gz) < 0)
			return -ENOMEM;
	}
	return 0;
}

static int write_text(struct writer *w, enum clip_section_id id, const char *text)
{
	struct section *s = sec(w, id);
	size_t len = strlen(text ? text : "") + 1;
	if (buf_append(&s->data, text ? text : "", len) < 0)
		return -ENOMEM;
	s->count = (uint32_t)len;
	return 0;
}

static int assemble(struct writer *w, struct buf *out)
{
	/* Strings first live in the string table; move them into their section. */
	struct section *str = sec(w, SECTION_STRINGS);
	str->data = w->strings.data;
	str->count = (uint32_t)w->strings.data.len;
	w->strings.data = (struct buf){ 0 };

	uint32_t nsec = 0;
	for (int i = 0; i < SECTION_MAX; i++)
		nsec += w->sec[i].id <= SECTION_COUNT || w->sec[i].present;
	size_t table_off = HDR_SIZE;
	size_t off = table_off + nsec * SEC_ENTRY_SIZE;
	if (buf_grow(out, off) == NULL)
		return -ENOMEM;
	uint32_t e_i = 0;
	for (int i = 0; i < SECTION_MAX; i++) {
		struct section *s = &w->sec[i];
		bool required = s->id <= SECTION_COUNT;
		if (!required && !s->present)
			continue;
		off = (off + 7) & ~(size_t)7; /* sections 8-byte aligned for readers' sake */
		if (out->len < off && buf_grow(out, off - out->len) == NULL)
			return -ENOMEM;
		unsigned char *e = out->data + table_off + (size_t)e_i++ * SEC_ENTRY_SIZE;
		clip_put_le32(e + SEC_ID, s->id);
		clip_put_le32(e + SEC_FLAGS, required ? SEC_FLAG_REQUIRED : 0);
		clip_put_le64(e + SEC_OFFSET, off);
		clip_put_le64(e + SEC_SIZE, s->data.len);
		clip_put_le32(e + SEC_COUNT, s->count);
		clip_put_le32(e + SEC_RECORD_SIZE, s->record_size);
		if (buf_append(out, s->data.data, s->data.len) < 0)
			return -ENOMEM;
		off = out->len;
	}
	unsigned char *h = out->data;
	memcpy(h + HDR_MAGIC, CLIP_FORMAT_MAGIC, CLIP_FORMAT_MAGIC_LEN);
	clip_put_le32(h + HDR_VERSION, CLIP_FORMAT_VERSION);
	clip_put_le32(h + HDR_HEADER_SIZE, HDR_SIZE);
	clip_put_le64(h + HDR_FILE_SIZE, out->len);
	clip_put_le64(h + HDR_CHECKSUM, 0);
	clip_put_le32(h + HDR_SECTION_COUNT, nsec);
	clip_put_le64(h + HDR_SECTION_TABLE, table_off);
	clip_put_le64(h + HDR_CHECKSUM, crc64_ecma_refl(0, out->data, out->len));
	return 0;
}

int clip_archive_write(const char *path, const struct clip_archive_write_options *o,
		       struct clip_err *err)
{
	struct writer w;
	struct buf out = { 0 };
	writer_init(&w);
	uint64_t regular_bytes = 0;
	int64_t piece_bytes = piece_bytes_of(o);
	if (piece_bytes < 0) {
		writer_free(&w);
		return clip_err_set(err, EINVAL, "%s: layers hashed with different piece sizes",
				    path);
	}
	int rc = write_inodes(&w, o->tree, &regular_bytes);
	if (rc == 0)
		rc = write_layers(&w, o);
	if (rc == 0)
		rc = write_text(&w, SECTION_CONFIG, o->config_json);
	if (rc == 0)
		rc = write_text(&w, SECTION_SOURCE, o->source_json);
	if (rc == 0) {
		unsigned char *m = add_record(&w, SECTION_META);
		if (m == NULL) {
			rc = -ENOMEM;
		} else {
			clip_put_le64(m + META_SPAN_BYTES, o->span_bytes);
			clip_put_le64(m + META_LARGE_FILE, o->large_file_threshold);
			clip_put_le64(m + META_REGULAR_BYTES, regular_bytes);
			clip_put_le64(m + META_CHUNK_BYTES, o->chunk_bytes);
			clip_put_le64(m + META_PIECE_BYTES, (uint64_t)piece_bytes);
		}
	}
	if (rc == 0)
		rc = assemble(&w, &out);
	writer_free(&w);
	if (rc < 0) {
		free(out.data);
		return clip_err_set(err, rc, "%s: %s", path,
				    rc == -EFBIG    ? "too many strings for the format"
				    : rc == -EINVAL ? "a layer's checkpoints come without the "
						      "digests of its compressed pieces"
						    : "out of memory");
	}

	rc = clip_write_file_atomic(path, out.data, out.len, err);
	free(out.data);
	return rc;
}

/* ---- rewriting ------------------------------------------------------------ */

/* Copy section `id` of `src` as stored. */
static int copy_section(struct writer *w, const struct clip_archive *src, uint32_t id)
{
	struct clip_archive_raw raw;
	if (clip_archive_section(src, id, &raw) < 0)
		return -EINVAL;
	struct buf *b = id == SECTION_STRINGS ? &w->strings.data : &sec(w, id)->data;
	if (raw.size && buf_append(b, raw.data, (size_t)raw.size) < 0)
		return -ENOMEM;
	sec(w, id)->count = raw.count;
	return 0;
}

/* LAYERS as stored, with each layer's checkpoints (new or as they were)
 * written anew and its record pointed at them. */
static int rewrite_layers(struct writer *w, const struct clip_archive *src,
			  const struct clip_archive_rewrite_options *o, struct clip_err *err)
{
	int rc = copy_section(w, src, SECTION_LAYERS);
	struct section *layers = sec(w, SECTION_LAYERS);
	uint32_t next_cp = 0;
	for (uint32_t i = 0; rc == 0 && i < layers->count; i++) {
		unsigned char *r = layers->data.data + (size_t)i * LAYER_SIZEOF;
		struct clip_gz_index *own = NULL;
		const struct clip_gz_index *gz = o->gz ? o->gz[i] : NULL;
		if (gz == NULL && clip_get_le32(r + LAYER_CP_COUNT) > 0) {
			rc = clip_archive_layer_gzindex(src, i, &own, err);
			if (rc < 0)
				return rc;
			gz = own;
		}
		size_t ncp = gz ? gz->count : 0;
		clip_put_le32(r + LAYER_CP_FIRST, next_cp);
		clip_put_le32(r + LAYER_CP_COUNT, (uint32_t)ncp);
		if (ncp > UINT32_MAX - next_cp)
			rc = -EFBIG;
		next_cp += (uint32_t)ncp;
		if (rc == 0 && ncp)
			rc = write_points(w, gz);
		clip_gz_index_free(own);
	}
	return rc;
}

int clip_archive_rewrite(const char *path, const struct clip_archive *src,
			 const struct clip_archive_rewrite_options *o, struct clip_err *err)
{
	struct clip_archive_raw raw;
	if (clip_archive_section(src, SECTION_META, &raw) < 0 || raw.version != CLIP_FORMAT_VERSION)
		return clip_err_set(err, ENOTSUP,
				    "%s: an archive of format %u cannot be rewritten: index the "
				    "image again",
				    clip_archive_path(src), raw.version);
	struct writer w;
	struct buf out = { 0 };
	writer_init(&w);
	int rc = 0;
	for (uint32_t id = 1; rc == 0 && id <= SECTION_COUNT; id++)
		if (id != SECTION_LAYERS && id != SECTION_CHECKPOINTS && id != SECTION_WINDOWS)
			rc = copy_section(&w, src, id);
	if (rc == 0)
		rc = rewrite_layers(&w, src, o, err);
	if (rc == 0 && o->profile_json) {
		rc = write_text(&w, SECTION_PROFILE, o->profile_json);
		sec(&w, SECTION_PROFILE)->present = true;
	}
	if (rc == 0)
		rc = assemble(&w, &out);
	writer_free(&w);
	if (rc < 0) {
		free(out.data);
		if (err->code)
			return rc;
		return clip_err_set(err, rc, "%s: %s", path,
				    rc == -EFBIG ? "too many checkpoints for the format"
						 : "out of memory");
	}
	rc = clip_write_file_atomic(path, out.data, out.len, err);
	free(out.data);
	return rc;
}
