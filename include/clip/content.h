/* clip: reading file contents out of the layers an archive points at.
 *
 * This is where a byte read through `clip cat` (and later FUSE) goes. A read
 * of inode `ino` at `offset` becomes a read of its layer's uncompressed tar at
 * data_offset + offset, which is served by the layer's reader:
 *   - plain tar: a pread of the blob;
 *   - gzip with checkpoints: inflate just the spans covering the range,
 *     after verifying them against their digests (clip_gz_index_read);
 *   - gzip without checkpoints (or --no-checkpoints), zstd: inflate from the
 *     start of the layer.
 * Blobs come from the source recorded in the archive (a local OCI layout),
 * or from the layout given in options->source_dir.
 */
#ifndef CLIP_CONTENT_H
#define CLIP_CONTENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "clip/archive.h"
#include "clip/err.h"
#include "clip/gzindex.h"

struct clip_content_options {
	const char *source_dir; /* NULL: the layout recorded in the archive */
	bool no_checkpoints;	/* read gzip layers from their start */
};

struct clip_content;

/* Prepare reads for `archive` (borrowed: it must outlive the content). Layer
 * blobs are opened lazily on first use. *out is owned by the caller. */
int clip_content_open(const struct clip_archive *archive,
		      const struct clip_content_options *options, struct clip_content **out,
		      struct clip_err *err);

/* Read [offset, offset+len) of regular file `ino` into buf, like pread:
 * returns the bytes read (short or 0 at end of file) or a negative errno with
 * `err` naming the layer and reason (-EISDIR/-EINVAL for non-regular inodes,
 * -EBADMSG for data that fails verification, -EIO for an unreadable blob). */
ssize_t clip_content_read(struct clip_content *content, uint32_t ino, void *buf, size_t len,
			  uint64_t offset, struct clip_err *err);

/* Totals of what reads cost so far. */
void clip_content_stats(const struct clip_content *content, struct clip_gz_read_stats *out);

void clip_content_close(struct clip_content *content);

#endif
