/* clip: one streaming decoder for a layer's compression (none, gzip, zstd).
 *
 * Every path that turns a layer blob into its tar from the start goes
 * through here: the indexer's producer, the whole-layer fetch of the read
 * tiers and reads that have no checkpoint to start from. A gzip decoder is
 * the checkpoint scanner (clip/gzindex.h) and can report deflate block
 * boundaries; the others report none.
 *
 * Use: feed the stream in order. For each block of input, call
 * clip_decoder_run() until the block is used up and a call produces nothing
 * (a decoder may hold output for input it already consumed); at the end of
 * the stream call clip_decoder_finish(). One decoder belongs to one thread.
 */
#ifndef CLIP_DECODER_H
#define CLIP_DECODER_H

#include <stddef.h>

#include "clip/err.h"
#include "clip/gzindex.h"
#include "clip/image.h"

struct clip_decoder;

/* A decoder for `compression`. *out is owned by the caller. */
int clip_decoder_new(enum clip_compression compression, struct clip_decoder **out,
		     struct clip_err *err);

/* Decode from `in` into `out` and report what was used and made in
 * *in_used, *out_len and (gzip only; NULL elsewhere or when not wanted)
 * *nbounds boundaries in `bounds`. Returns when the input is used up, `out`
 * is full or `bounds` is full, whichever comes first. 0, or a negative
 * errno with `err` naming the offset and the reason (-EBADMSG for data that
 * does not decode); after an error the decoder stays failed. A call with
 * input left and room in `out` that makes no progress is an error, so a
 * caller's loop always ends. */
int clip_decoder_run(struct clip_decoder *decoder, const void *in, size_t in_len, size_t *in_used,
		     void *out, size_t out_cap, size_t *out_len, struct clip_gz_boundary *bounds,
		     size_t bounds_cap, size_t *nbounds, struct clip_err *err);

/* The end of the stream: 0 when it ended whole (a complete gzip member or
 * zstd frame last), -EBADMSG ("truncated gzip stream", "truncated zstd
 * stream") otherwise, including an empty compressed stream. */
int clip_decoder_finish(struct clip_decoder *decoder, struct clip_err *err);

void clip_decoder_free(struct clip_decoder *decoder);

#endif
