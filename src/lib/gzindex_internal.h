/* Library-private parts of gzip checkpoints, shared by gzindex.c (the index
 * and the resumed inflater), gzindex_scan.c, gzindex_build.c and
 * gzindex_read.c, and used by tests, benchmarks and the fuzz harnesses (not
 * installed). */
#ifndef CLIP_GZINDEX_INTERNAL_H
#define CLIP_GZINDEX_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zlib.h>
#include <zstd.h>

#include "clip/gzindex.h"

/* The inflater that resumes a span at a checkpoint. clip_gz_index_read() uses
 * CLIP_GZ_INFLATER_DEFAULT (ISA-L, measurably faster than zlib on resumed
 * spans and on the builder's sparse-window trials, which use it too); zlib
 * stays as the reference the tests compare against. */
enum clip_gz_inflater {
	CLIP_GZ_INFLATER_ISAL = 0,
	CLIP_GZ_INFLATER_ZLIB = 1,
};
#define CLIP_GZ_INFLATER_DEFAULT CLIP_GZ_INFLATER_ISAL

/* Window codec and level the builder uses (zstd 3: within 4% of zlib -9's
 * size for much less time, and faster to decode on the read path). */
#define CLIP_GZ_WINDOW_ZSTD_LEVEL 3

/* clip_gz_index_read() with an explicit inflater; same contract. */
ssize_t clip_gz_index_read_with(const struct clip_gz_index *index,
				const struct clip_blob_source *source, void *buf, size_t len,
				uint64_t offset, enum clip_gz_inflater inflater,
				struct clip_gz_read_stats *stats, struct clip_err *err);

/* zlib and ISA-L count in 32-bit quantities; feed them at most this much. */
#define CLIP_GZ_FEED_MAX (1u << 30)

static inline size_t clip_gz_min_size(size_t a, size_t b)
{
	return a < b ? a : b;
}

/* ---- resuming inflate at a checkpoint (the reader, and the builder's
 * sparse-window trials) ---------------------------------------------------- */

struct inflate_state; /* ISA-L's */

/* One resumed raw-deflate stream: primed, dictionary set, fed a span. Set
 * `kind` and zero the rest before the first clip_gz_resume_start(); the same
 * stream can then be started again and again, and clip_gz_resume_end()
 * releases it. */
struct clip_gz_resume {
	enum clip_gz_inflater kind;
	z_stream z;
	bool z_ready;
	struct inflate_state *isal;
	const unsigned char *in; /* not yet handed to the inflater */
	size_t in_left;
	uint64_t produced; /* output since the last start */
};

/* Start inflating `in` (the bytes after the checkpoint's byte in - 1) with the
 * top `bits` bits of `partial` (that byte) primed and `window` as history.
 * `in` and `window` are borrowed until the next start. 0, or -ENOMEM or
 * -EINVAL (no message). */
int clip_gz_resume_start(struct clip_gz_resume *r, unsigned bits, unsigned char partial,
			 const unsigned char *in, size_t in_len, const unsigned char *window,
			 size_t window_len);

enum clip_gz_resume_stop {
	CLIP_GZ_RESUME_FULL,	/* all that was asked for is out */
	CLIP_GZ_RESUME_END,	/* the deflate stream ended first */
	CLIP_GZ_RESUME_STARVED, /* the input ran out first */
};

/* Inflate into `dst` until `len` bytes are out, the deflate stream ends or the
 * input runs out; *stop says which, *got how much came out. 0, or a negative
 * errno with `*why` (-EBADMSG: the data does not inflate). More input can be
 * handed over by adding to r->in_left the bytes that follow r->in. */
int clip_gz_resume_run(struct clip_gz_resume *r, unsigned char *dst, size_t len, size_t *got,
		       enum clip_gz_resume_stop *stop, const char **why);

/* Release what the stream holds (not `r` itself). */
void clip_gz_resume_end(struct clip_gz_resume *r);

/* ---- sparse windows (the builder, and clip_gz_index_refine) -------------- */

/* What it takes to find which bytes of a checkpoint's window its span
 * reaches: a resumed inflater and 5 scratch windows. */
struct clip_gz_sparse {
	struct clip_gz_resume trial;
	unsigned char *scratch; /* two synthetic dictionaries, two outputs */
	unsigned char *window;	/* the sparse window of the last run */
};

/* 0, or -ENOMEM. */
int clip_gz_sparse_init(struct clip_gz_sparse *s);
void clip_gz_sparse_end(struct clip_gz_sparse *s);

/* Set s->window to `window` (its last `len` bytes before the checkpoint)
 * with every byte that the first 32 KiB of output after the checkpoint do
 * not reach set to zero, from the compressed bytes `in` that follow it (the
 * byte holding the `bits` primed bits, `partial`, just before `in`).
 * Returns 1 with *first set (the first byte reached; `len` when none is),
 * 0 when `in` does not hold those 32 KiB or the end of the deflate stream, or
 * does not inflate (keep the window whole then), or -ENOMEM. */
int clip_gz_sparse_run(struct clip_gz_sparse *s, const unsigned char *window, size_t len,
		       unsigned bits, unsigned char partial, const unsigned char *in, size_t in_len,
		       size_t *first);

/* The window of checkpoint i of `index`, checked against its digest (with
 * piece digests) and decoded into `win` (CLIP_GZ_WINDOW bytes). *dctx is a
 * decoder made on first use; the caller frees it (ZSTD_freeDCtx). 0, or
 * -EBADMSG/-ENOMEM with `err` naming the span. */
int clip_gz_window_load(const struct clip_gz_index *index, size_t i, unsigned char *win,
			ZSTD_DCtx **dctx, struct clip_err *err);

#endif
