/* clip: the .clip archive — the metadata of an image, used in place.
 *
 * Written once by the indexer (clip_archive_write, src/lib/archive_write.c),
 * then opened read-only with mmap (clip_archive_open, src/lib/archive.c) and
 * used without copying: path lookups binary search each directory's sorted
 * entries, so a lookup costs O(depth * log n). The byte layout is in
 * docs/FORMAT.md and src/lib/format.h.
 *
 * Opening checks the checksum, the section table, the layers and their
 * checkpoints, so a damaged file is refused at open with an error naming the
 * file and the reason. Inodes, directory entries and xattrs are checked as
 * they are read instead (string ranges, inode numbers, directory ranges,
 * parent links that rule out cycles): an accessor fails with -EBADMSG on a
 * record that is wrong, which only an archive written with a valid checksum
 * by something other than clip can hold, and never reads out of bounds.
 *
 * Thread safety: an open archive is read-only; every accessor may be called
 * from any number of threads at once. clip_archive_close must come after all
 * of them. clip_archive_write shares nothing between calls.
 */
#ifndef CLIP_ARCHIVE_H
#define CLIP_ARCHIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clip/err.h"
#include "clip/gzindex.h"
#include "clip/image.h"
#include "clip/tree.h"

/* The newest archive format this build reads (and the one it writes); it
 * reads every one from 1. */
#define CLIP_ARCHIVE_FORMAT 3u

/* ---- writing ------------------------------------------------------------ */

/* What the writer needs to know about each layer. */
struct clip_archive_layer_info {
	const char *digest;  /* "sha256:..." of the blob */
	const char *diff_id; /* "sha256:..." of the uncompressed tar */
	const char *media_type;
	enum clip_compression compression;
	uint64_t compressed_size;
	uint64_t uncompressed_size;
	const struct clip_gz_index *gz; /* checkpoints, NULL when none */
	/* SHA-256 of each chunk_bytes chunk of the uncompressed tar (the last
	 * one shorter): ceil(uncompressed_size / chunk_bytes) of them. */
	const unsigned char (*chunk_hashes)[32];
	size_t nchunks;
};

struct clip_archive_write_options {
	const struct clip_tree *tree; /* finished */
	const struct clip_archive_layer_info *layers;
	size_t nlayers;
	const char *config_json; /* image config subset, JSON text (see FORMAT.md) */
	const char *source_json; /* where the image came from, JSON text */
	uint64_t span_bytes;	 /* the checkpoint settings used, recorded for `info` */
	uint64_t large_file_threshold;
	uint64_t chunk_bytes; /* chunk size of the layers' chunk_hashes; 0: none */
};

/* Write the archive to `path` atomically: a temporary file in the same
 * directory, fsync, rename. On failure nothing is left at `path` (an older
 * file there stays untouched), and `err` names the path: -EINVAL when the
 * layers' piece digests disagree in size or a layer has checkpoints without
 * them, -EFBIG when the strings outgrow the format's 32-bit offsets,
 * -ENOMEM, or the errno of creating, writing or renaming the file. */
int clip_archive_write(const char *path, const struct clip_archive_write_options *options,
		       struct clip_err *err);

struct clip_archive;

/* What clip_archive_rewrite changes. */
struct clip_archive_rewrite_options {
	/* Per layer (the archive's count): its checkpoints anew (their piece
	 * digests must be the layer's own), or NULL to keep them. NULL: keep
	 * every layer's. */
	const struct clip_gz_index *const *gz;
	/* The PROFILE section's text (clip optimize, NUL-terminated), or NULL
	 * for none. */
	const char *profile_json;
};

/* Write `src` to `path` (atomically, as clip_archive_write) with the changes
 * in `options`; everything else is copied byte for byte. Only archives of
 * the current format can be rewritten (-ENOTSUP). */
int clip_archive_rewrite(const char *path, const struct clip_archive *src,
			 const struct clip_archive_rewrite_options *options, struct clip_err *err);

/* ---- reading ------------------------------------------------------------ */

struct clip_archive;

/* Open and validate `path`. *out is owned by the caller (clip_archive_close).
 * Errors: -ENOENT/-EACCES from open, -EBADMSG for a wrong magic, a checksum
 * mismatch, a truncated file or an invalid section, layer or checkpoint,
 * -ENOTSUP for an unknown format version; each message names the file.
 * Inodes, directory entries and xattrs are checked as they are read: the
 * accessors below fail with -EBADMSG on one that is invalid (which only an
 * archive written with a valid checksum by something other than clip can
 * hold), and never read out of bounds. */
int clip_archive_open(const char *path, struct clip_archive **out, struct clip_err *err);
/* Unmap and free `archive`; everything borrowed from it becomes invalid
 * (names, symlink targets, xattr values, checkpoint windows). NULL is a
 * no-op. */
void clip_archive_close(struct clip_archive *archive);

/* The path the archive was opened from (borrowed), for messages. */
const char *clip_archive_path(const struct clip_archive *archive);

#define CLIP_ARCHIVE_ROOT 0u

struct clip_archive_inode {
	uint32_t ino;
	uint32_t mode; /* S_IFxxx | permissions */
	uint32_t uid, gid, nlink;
	uint64_t size;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint32_t rdev_major, rdev_minor;
	uint32_t layer;	      /* regular files */
	uint64_t data_offset; /* regular files: offset in the layer's tar */
	const char *symlink;  /* borrowed from the mapping; NUL-terminated */
	uint32_t parent;      /* directories: the parent directory (root: itself) */
	uint32_t nentries;    /* directories: number of entries */
	uint32_t nxattrs;
};

struct clip_archive_stats {
	uint64_t file_size;
	uint32_t version;
	uint32_t inodes;
	uint32_t entries;
	uint32_t layers;
	uint32_t checkpoints;
	uint64_t window_bytes;	/* stored (compressed) window bytes */
	uint64_t regular_bytes; /* sum of regular files' sizes (each inode once) */
	uint64_t span_bytes, large_file_threshold;
	uint64_t chunk_bytes; /* chunk size of the chunk hashes; 0: none (version 1) */
	uint64_t piece_bytes; /* piece size of the compressed digests; 0: none (< 3) */
	uint32_t pieces;      /* piece digests, all layers */
};

/* Fill *out with the archive's header-level figures (for `clip info`). */
void clip_archive_stats(const struct clip_archive *archive, struct clip_archive_stats *out);

/* Fill *out for inode `ino`; -ENOENT if out of range, -EBADMSG if invalid. */
int clip_archive_inode(const struct clip_archive *archive, uint32_t ino,
		       struct clip_archive_inode *out);

/* Look `name` (not NUL-terminated, `len` bytes) up in directory `dir`.
 * -ENOTDIR if `dir` is not a directory, -ENOENT if absent, -EBADMSG if the
 * directory or the entry found is invalid. */
int clip_archive_lookup(const struct clip_archive *archive, uint32_t dir, const char *name,
			size_t len, uint32_t *ino);

/* Resolve an absolute or relative path from the root, without following
 * symlinks ("/" and "" are the root). -ENOENT / -ENOTDIR / -EBADMSG with
 * `err` naming the path. */
int clip_archive_resolve(const struct clip_archive *archive, const char *path, uint32_t *ino,
			 struct clip_err *err);

/* Entry `index` (0..nentries) of directory `dir`, in name order. The name is
 * borrowed from the mapping and NUL-terminated. -ENOENT when out of range,
 * -EBADMSG when the directory or the entry is invalid. */
int clip_archive_dirent(const struct clip_archive *archive, uint32_t dir, uint32_t index,
			const char **name, size_t *name_len, uint32_t *ino);

/* Xattr `index` of inode `ino` (name NUL-terminated, value borrowed);
 * -ENOENT when out of range, -EBADMSG when the inode or the xattr is invalid. */
int clip_archive_xattr(const struct clip_archive *archive, uint32_t ino, uint32_t index,
		       const char **name, const unsigned char **value, size_t *len);

struct clip_archive_layer {
	const char *digest;
	const char *diff_id;
	const char *media_type;
	enum clip_compression compression;
	uint64_t compressed_size;
	uint64_t uncompressed_size;
	uint32_t ncheckpoints;
	uint32_t nchunks; /* chunk hashes recorded (0: none) */
	uint32_t npieces; /* digests of its compressed pieces (0: none; format < 3) */
};

/* Fill *out for layer `index` (image order; strings borrowed from the
 * mapping, checked at open): 0, or -ENOENT when out of range. */
int clip_archive_layer(const struct clip_archive *archive, uint32_t index,
		       struct clip_archive_layer *out);

/* The SHA-256 of chunk `chunk` of layer `layer` (borrowed, 32 bytes), or
 * NULL when the archive has none for it (version 1, or out of range). */
const unsigned char *clip_archive_chunk_hash(const struct clip_archive *archive, uint32_t layer,
					     uint64_t chunk);

/* The checkpoints of layer `index` as a new index (release with
 * clip_gz_index_free); its windows are borrowed from the mapping, so it must
 * not outlive the archive. A layer without checkpoints gives count 0.
 * -ENOENT when `index` is out of range, -ENOMEM; `err` names the reason. */
int clip_archive_layer_gzindex(const struct clip_archive *archive, uint32_t index,
			       struct clip_gz_index **out, struct clip_err *err);

/* The JSON texts recorded at index time (borrowed, NUL-terminated). */
const char *clip_archive_config_json(const struct clip_archive *archive);
const char *clip_archive_source_json(const struct clip_archive *archive);
/* The PROFILE section written by clip optimize (borrowed, NUL-terminated),
 * or NULL when the archive has none. */
const char *clip_archive_profile_json(const struct clip_archive *archive);

#endif
