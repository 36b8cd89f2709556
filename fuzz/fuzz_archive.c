/* libFuzzer harness for the .clip archive loader and its accessors
 * (src/lib/archive.c).
 *
 * The input is an archive. Its file-size field and CRC-64 are recomputed
 * here before it is opened (from a memfd, through /proc/self/fd), so that the
 * fuzzer reaches the section and reference validation behind the checksum
 * instead of failing it every time; tests/bad-inputs flips bytes without the
 * fix-up to test the checksum itself.
 *
 * An archive that opens must then be safe to use in every way the contract
 * of include/clip/archive.h allows, and consistent: every inode's fields are
 * read; every directory is listed, each name NUL-terminated at its length,
 * free of '/', found again by lookup at the same inode, and each directory is
 * reached once only from the root (no loops); every xattr and layer is read,
 * every chunk hash and checkpoint list fetched, a few reads are tried through
 * each layer's checkpoints against a blob of the archive's own bytes (the
 * span digests cannot match, so only -EBADMSG/-EIO may come back or the
 * right length); paths are resolved with "." and ".." too, and a resolved
 * inode is always a valid one.
 *
 * Build: fuzz/build. Seeds: fuzz/corpus/archive/.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <isa-l/crc64.h>

#include "clip/archive.h"
#include "format.h"
#include "util.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_WALK 200000 /* bounds the work per input, not a correctness limit */

struct walk {
	const struct clip_archive *a;
	struct clip_archive_stats st;
	uint8_t *seen_dir;
	size_t steps;
	char path[8192];
};

static ssize_t blob_pread(void *opaque, void *buf, size_t len, uint64_t off, struct clip_err *err)
{
	const struct clip_archive_stats *st = opaque;
	/* A blob of pseudo-random bytes as long as the layer says. */
	(void)err;
	for (size_t i = 0; i < len; i++)
		((unsigned char *)buf)[i] = (unsigned char)((off + i) * 2654435761u >> 13);
	(void)st;
	return (ssize_t)len;
}

/* Records are checked as they are read: every accessor either succeeds,
 * and then what it returns keeps the archive.h contract, or says -EBADMSG. */
static void check_inode(struct walk *w, uint32_t ino)
{
	struct clip_archive_inode in;
	int rc = clip_archive_inode(w->a, ino, &in);
	CHECK(rc == 0 || rc == -EBADMSG);
	if (rc < 0)
		return;
	CHECK(in.ino == ino);
	if (S_ISLNK(in.mode)) {
		/* The CLI and FUSE print or return in.size bytes of it. */
		CHECK(in.symlink != NULL && strlen(in.symlink) == in.size);
	}
	if (S_ISREG(in.mode)) {
		struct clip_archive_layer l;
		CHECK(clip_archive_layer(w->a, in.layer, &l) == 0);
		CHECK(in.data_offset <= l.uncompressed_size &&
		      in.size <= l.uncompressed_size - in.data_offset);
	}
	for (uint32_t x = 0; x < in.nxattrs; x++) {
		const char *name;
		const unsigned char *value;
		size_t len;
		int xrc = clip_archive_xattr(w->a, ino, x, &name, &value, &len);
		CHECK(xrc == 0 || xrc == -EBADMSG);
		if (xrc < 0)
			continue;
		CHECK(name[0] != '\0');
		(void)strlen(name);
		if (len > 0)
			CHECK(value[len - 1] == value[len - 1]); /* readable, for ASan */
	}
	const char *name;
	const unsigned char *value;
	size_t len;
	CHECK(clip_archive_xattr(w->a, ino, in.nxattrs, &name, &value, &len) == -ENOENT);
}

/* Walks end: a directory entry to a directory must point further on (a
 * higher number), so no directory is reached from itself. One may be named
 * twice in its parent (an archive clip does not write); it is walked once. */
static void walk_dir(struct walk *w, uint32_t dir, size_t plen)
{
	if (w->seen_dir[dir])
		return;
	w->seen_dir[dir] = 1;
	struct clip_archive_inode in;
	int rc = clip_archive_inode(w->a, dir, &in);
	CHECK(rc == 0 || rc == -EBADMSG);
	if (rc < 0)
		return;
	CHECK(S_ISDIR(in.mode));
	for (uint32_t i = 0; i < in.nentries && w->steps < MAX_WALK; i++, w->steps++) {
		const char *name;
		size_t nlen;
		uint32_t ino, again;
		rc = clip_archive_dirent(w->a, dir, i, &name, &nlen, &ino);
		CHECK(rc == 0 || rc == -EBADMSG);
		if (rc < 0)
			continue;
		CHECK(nlen > 0 && strlen(name) == nlen && memchr(name, '/', nlen) == NULL);
		CHECK(strcmp(name, ".") != 0 && strcmp(name, "..") != 0);
		CHECK(ino != CLIP_ARCHIVE_ROOT && ino < w->st.inodes);
		/* Names out of order can make a lookup miss, or find a twin. */
		rc = clip_archive_lookup(w->a, dir, name, nlen, &again);
		CHECK(rc == -ENOENT || rc == -EBADMSG ||
		      (rc == 0 && again != CLIP_ARCHIVE_ROOT && again < w->st.inodes));
		check_inode(w, ino);
		struct clip_archive_inode child;
		if (clip_archive_inode(w->a, ino, &child) < 0)
			continue;
		if (plen + 1 + nlen + 1 < sizeof(w->path)) {
			w->path[plen] = '/';
			memcpy(w->path + plen + 1, name, nlen + 1);
			struct clip_err err = { 0 };
			uint32_t r;
			rc = clip_archive_resolve(w->a, w->path, &r, &err);
			CHECK(rc == -ENOENT || rc == -EBADMSG || rc == -ENOTDIR ||
			      (rc == 0 && r < w->st.inodes));
			if (S_ISDIR(child.mode)) {
				CHECK(child.parent == dir && ino > dir);
				walk_dir(w, ino, plen + 1 + nlen);
			} else {
				/* Through a non-directory: must fail, never land
				 * on an inode that does not exist. */
				static const char *const tails[] = { "/..", "/.", "/x", "/../.." };
				size_t n = plen + 1 + nlen;
				for (size_t t = 0; t < CLIP_ARRAY_SIZE(tails); t++) {
					if (n + strlen(tails[t]) + 1 > sizeof(w->path))
						continue;
					strcpy(w->path + n, tails[t]);
					rc = clip_archive_resolve(w->a, w->path, &r, &err);
					CHECK(rc == -ENOTDIR || rc == -ENOENT || rc == -EBADMSG ||
					      (rc == 0 && r < w->st.inodes));
				}
			}
			w->path[plen] = '\0';
		}
	}
	const char *name;
	size_t nlen;
	uint32_t ino;
	CHECK(clip_archive_dirent(w->a, dir, in.nentries, &name, &nlen, &ino) == -ENOENT);
	rc = clip_archive_lookup(w->a, dir, "\xff\xff", 2, &ino);
	CHECK(rc == -ENOENT || rc == -EBADMSG || (rc == 0 && ino > 0 && ino < w->st.inodes));
}

static void check_layers(struct walk *w)
{
	for (uint32_t l = 0; l < w->st.layers; l++) {
		struct clip_archive_layer info;
		CHECK(clip_archive_layer(w->a, l, &info) == 0);
		(void)strlen(info.digest);
		(void)strlen(info.diff_id);
		(void)strlen(info.media_type);
		for (uint64_t c = 0; c < info.nchunks; c++) {
			const unsigned char *h = clip_archive_chunk_hash(w->a, l, c);
			CHECK(h != NULL && (h[0] | h[31] | 1));
		}
		CHECK(clip_archive_chunk_hash(w->a, l, info.nchunks) == NULL);
		struct clip_gz_index *gz = NULL;
		struct clip_err err = { 0 };
		CHECK(clip_archive_layer_gzindex(w->a, l, &gz, &err) == 0);
		CHECK(gz->count == info.ncheckpoints);
		for (size_t i = 0; i < gz->count; i++) {
			const struct clip_gz_point *p = &gz->points[i];
			if (p->window_zlen > 0)
				CHECK(p->window_z[0] == p->window_z[0] &&
				      p->window_z[p->window_zlen - 1] ==
					      p->window_z[p->window_zlen - 1]);
		}
		if (gz->count > 0 && gz->csize < (64u << 20)) {
			struct clip_blob_source src = { .pread = blob_pread, .opaque = &w->st };
			unsigned char buf[4096];
			uint64_t offs[] = { 0, gz->usize / 2, gz->usize ? gz->usize - 1 : 0,
					    gz->points[gz->count - 1].out };
			for (size_t k = 0; k < CLIP_ARRAY_SIZE(offs); k++) {
				clip_err_clear(&err);
				ssize_t n = clip_gz_index_read(gz, &src, buf, sizeof(buf), offs[k],
							       NULL, &err);
				CHECK(n == -EBADMSG || n == -EIO || n == -EFBIG ||
				      (n >= 0 && (size_t)n <= sizeof(buf)));
			}
		}
		clip_gz_index_free(gz);
	}
	struct clip_archive_layer info;
	CHECK(clip_archive_layer(w->a, w->st.layers, &info) == -ENOENT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static char path[64];
	if (fd < 0) {
		fd = memfd_create("fuzz-archive", MFD_CLOEXEC);
		if (fd < 0)
			abort();
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	}
	unsigned char *copy = malloc(size ? size : 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	if (size >= HDR_SIZE) {
		clip_put_le64(copy + HDR_FILE_SIZE, size);
		memset(copy + HDR_CHECKSUM, 0, 8);
		clip_put_le64(copy + HDR_CHECKSUM, crc64_ecma_refl(0, copy, size));
	}
	if (ftruncate(fd, 0) != 0 || pwrite(fd, copy, size, 0) != (ssize_t)size)
		abort();
	free(copy);

	struct clip_archive *a = NULL;
	struct clip_err err = { 0 };
	int rc = clip_archive_open(path, &a, &err);
	if (rc < 0) {
		CHECK(a == NULL);
		CHECK(rc == -EBADMSG || rc == -ENOTSUP || rc == -ENOMEM);
		CHECK(err.code == rc && strstr(err.msg, path) != NULL);
		return 0;
	}
	struct walk w = { .a = a };
	clip_archive_stats(a, &w.st);
	CHECK(w.st.inodes > 0 && w.st.file_size == size);
	CHECK(clip_archive_config_json(a) != NULL && clip_archive_source_json(a) != NULL);
	(void)strlen(clip_archive_config_json(a));
	(void)strlen(clip_archive_source_json(a));
	w.seen_dir = calloc(w.st.inodes, 1);
	if (w.seen_dir == NULL)
		abort();
	for (uint32_t i = 0; i < w.st.inodes && i < MAX_WALK; i++)
		check_inode(&w, i);
	struct clip_archive_inode in;
	CHECK(clip_archive_inode(a, w.st.inodes, &in) == -ENOENT);
	w.path[0] = '\0';
	walk_dir(&w, CLIP_ARCHIVE_ROOT, 0);
	static const char *const paths[] = { "/", "", "..", "/..", "./.", "../../..", "//./" };
	for (size_t i = 0; i < CLIP_ARRAY_SIZE(paths); i++) {
		uint32_t ino;
		clip_err_clear(&err);
		int r = clip_archive_resolve(a, paths[i], &ino, &err);
		CHECK(r == 0 && ino == CLIP_ARCHIVE_ROOT);
	}
	check_layers(&w);
	free(w.seen_dir);
	clip_archive_close(a);
	return 0;
}
