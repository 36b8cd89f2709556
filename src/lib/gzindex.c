/* clip: gzip checkpoints — the index, and inflate resumed at a checkpoint.
 *
 * The shape follows zlib's examples/zran.c: an access point is a deflate
 * block boundary plus the bits still unused in the byte before it plus the
 * 32 KiB of output before it. What is added here is that the work is split
 * between two threads (scanner: inflate only, gzindex_scan.c; builder:
 * windows and digests, gzindex_build.c), that the builder never holds the
 * compressed stream, that a window keeps only the bytes its span reaches (the
 * rest zero, so it compresses to little), and that every span is verified
 * against a digest before a byte of it is inflated (gzindex_read.c).
 *
 * This file holds what the builder and the reader both use: the index's
 * lookups and the resumed inflater (the reader's, and the builder's
 * sparse-window trials). What they share is declared in gzindex_internal.h.
 */
#include "clip/gzindex.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l.h>
#include <zlib.h>

#include "gzindex_internal.h"

/* ======================================================================== */
/* The index                                                                */
/* ======================================================================== */

uint64_t clip_gz_span_start(const struct clip_gz_index *index, size_t i)
{
	const struct clip_gz_point *p = &index->points[i];
	return p->in - (p->bits ? 1 : 0);
}

uint64_t clip_gz_span_end(const struct clip_gz_index *index, size_t i)
{
	return i + 1 < index->count ? index->points[i + 1].in : index->csize;
}

ssize_t clip_gz_index_find(const struct clip_gz_index *index, uint64_t offset)
{
	if (index == NULL || index->points == NULL)
		return -1;
	size_t lo = 0, hi = index->count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (index->points[mid].out <= offset)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (ssize_t)lo - 1;
}

void clip_gz_index_free(struct clip_gz_index *index)
{
	if (index == NULL)
		return;
	if (index->owns_points)
		free(index->points);
	free(index->owned_storage);
	free(index->owned_pieces);
	free(index);
}

/* ======================================================================== */
/* Resuming inflate at a checkpoint                                         */
/* ======================================================================== */

int clip_gz_resume_start(struct clip_gz_resume *r, unsigned bits, unsigned char partial,
			 const unsigned char *in, size_t in_len, const unsigned char *window,
			 size_t window_len)
{
	unsigned primed = bits ? (unsigned)partial >> (8 - bits) : 0;

	r->in = in;
	r->in_left = in_len;
	r->produced = 0;
	if (r->kind == CLIP_GZ_INFLATER_ZLIB) {
		if (!r->z_ready) {
			memset(&r->z, 0, sizeof(r->z));
			if (inflateInit2(&r->z, -15) != Z_OK)
				return -ENOMEM;
			r->z_ready = true;
		} else if (inflateReset(&r->z) != Z_OK) {
			return -EINVAL;
		}
		if (bits && inflatePrime(&r->z, (int)bits, (int)primed) != Z_OK)
			return -EINVAL;
		if (window_len && inflateSetDictionary(&r->z, window, (uInt)window_len) != Z_OK)
			return -EINVAL;
		r->z.avail_in = 0; /* inflateReset() keeps the last span's leftovers */
		return 0;
	}
	if (r->isal == NULL) {
		r->isal = malloc(sizeof(*r->isal));
		if (r->isal == NULL)
			return -ENOMEM;
	}
	isal_inflate_init(r->isal);
	r->isal->crc_flag = ISAL_DEFLATE;
	if (window_len &&
	    isal_inflate_set_dict(r->isal, (uint8_t *)window, (uint32_t)window_len) != COMP_OK)
		return -EINVAL;
	r->isal->read_in = primed;
	r->isal->read_in_length = (int32_t)bits;
	r->isal->avail_in = 0;
	return 0;
}

int clip_gz_resume_run(struct clip_gz_resume *r, unsigned char *dst, size_t len, size_t *got,
		       enum clip_gz_resume_stop *stop, const char **why)
{
	*got = 0;
	*stop = CLIP_GZ_RESUME_FULL;
	while (len > 0) {
		size_t chunk_out = clip_gz_min_size(len, CLIP_GZ_FEED_MAX);
		size_t n, in_before;
		bool ended = false, stuck;
		if (r->kind == CLIP_GZ_INFLATER_ZLIB) {
			if (r->z.avail_in == 0) {
				r->z.next_in = (unsigned char *)r->in;
				r->z.avail_in =
					(uInt)clip_gz_min_size(r->in_left, CLIP_GZ_FEED_MAX);
				r->in += r->z.avail_in;
				r->in_left -= r->z.avail_in;
			}
			r->z.next_out = dst;
			r->z.avail_out = (uInt)chunk_out;
			in_before = r->z.avail_in;
			int ret = inflate(&r->z, Z_NO_FLUSH);
			n = chunk_out - r->z.avail_out;
			if (ret == Z_DATA_ERROR || ret == Z_NEED_DICT || ret == Z_STREAM_ERROR) {
				*why = r->z.msg ? r->z.msg : "invalid deflate data";
				return -EBADMSG;
			}
			if (ret == Z_MEM_ERROR) {
				*why = "out of memory";
				return -ENOMEM;
			}
			ended = ret == Z_STREAM_END;
			stuck = n == 0 && r->z.avail_in == in_before &&
				(r->z.avail_in > 0 || r->in_left == 0);
		} else {
			struct inflate_state *s = r->isal;
			if (s->avail_in == 0) {
				s->next_in = (uint8_t *)r->in;
				s->avail_in =
					(uint32_t)clip_gz_min_size(r->in_left, CLIP_GZ_FEED_MAX);
				r->in += s->avail_in;
				r->in_left -= s->avail_in;
			}
			s->next_out = dst;
			s->avail_out = (uint32_t)chunk_out;
			in_before = s->avail_in;
			int ret = isal_inflate(s);
			n = chunk_out - s->avail_out;
			if (ret < 0) {
				*why = ret == ISAL_INVALID_LOOKBACK
					       ? "invalid distance too far back"
				       : ret == ISAL_INVALID_SYMBOL ? "invalid symbol"
								    : "invalid block";
				return -EBADMSG;
			}
			/* FINISH, not INPUT_DONE: all output has been flushed. */
			ended = s->block_state == ISAL_BLOCK_FINISH;
			stuck = n == 0 && s->avail_in == in_before &&
				(s->avail_in > 0 || r->in_left == 0);
		}
		r->produced += n;
		*got += n;
		dst += n;
		len -= n;
		if (len == 0)
			break;
		if (ended) {
			*stop = CLIP_GZ_RESUME_END;
			break;
		}
		if (stuck) {
			*stop = CLIP_GZ_RESUME_STARVED;
			break;
		}
	}
	return 0;
}

void clip_gz_resume_end(struct clip_gz_resume *r)
{
	if (r->z_ready)
		inflateEnd(&r->z);
	free(r->isal);
}

/* ======================================================================== */
/* Sparse windows                                                           */
/* ======================================================================== */

#define W CLIP_GZ_WINDOW

enum { SPARSE_DICT_LO, SPARSE_DICT_MIX, SPARSE_OUT_LO, SPARSE_OUT_MIX, SPARSE_WINDOW };

int clip_gz_sparse_init(struct clip_gz_sparse *s)
{
	*s = (struct clip_gz_sparse){ 0 };
	s->scratch = malloc(5 * (size_t)W);
	if (s->scratch == NULL)
		return -ENOMEM;
	s->window = s->scratch + SPARSE_WINDOW * (size_t)W;
	s->trial.kind = CLIP_GZ_INFLATER_DEFAULT;
	/* Window position w holds w & 0xff in one dictionary and that XOR
	 * 1 + (w >> 8) (never 0) in the other: see clip_gz_sparse_run(). */
	unsigned char *lo = s->scratch + SPARSE_DICT_LO * (size_t)W;
	unsigned char *mix = s->scratch + SPARSE_DICT_MIX * (size_t)W;
	for (size_t w = 0; w < W; w++) {
		lo[w] = (unsigned char)w;
		mix[w] = (unsigned char)(w ^ (1 + (w >> 8)));
	}
	return 0;
}

void clip_gz_sparse_end(struct clip_gz_sparse *s)
{
	free(s->scratch);
	clip_gz_resume_end(&s->trial);
	*s = (struct clip_gz_sparse){ 0 };
}

/* The first 32 KiB of output after the checkpoint are inflated twice, from
 * the two synthetic dictionaries. Which output bytes are literals and which
 * are copies, from how far back, is fixed by the compressed bits and not by
 * the window, so every byte that is not a copy of the window, directly or
 * through earlier output, comes out the same in both runs, and every one that
 * is differs and spells its source w. */
int clip_gz_sparse_run(struct clip_gz_sparse *s, const unsigned char *window, size_t len,
		       unsigned bits, unsigned char partial, const unsigned char *in, size_t in_len,
		       size_t *first)
{
	unsigned char *out[2] = { s->scratch + SPARSE_OUT_LO * (size_t)W,
				  s->scratch + SPARSE_OUT_MIX * (size_t)W };
	const unsigned char *dict[2] = { s->scratch + SPARSE_DICT_LO * (size_t)W,
					 s->scratch + SPARSE_DICT_MIX * (size_t)W };
	size_t got[2];
	if (len > W)
		return 0;
	for (int k = 0; k < 2; k++) {
		enum clip_gz_resume_stop stop;
		const char *why;
		int r = clip_gz_resume_start(&s->trial, bits, partial, in, in_len, dict[k], len);
		if (r == 0)
			r = clip_gz_resume_run(&s->trial, out[k], W, &got[k], &stop, &why);
		if (r == -ENOMEM)
			return r;
		if (r < 0 || stop == CLIP_GZ_RESUME_STARVED)
			return 0;
	}
	if (got[0] != got[1])
		return 0; /* cannot be: the same bits give the same structure */

	size_t lo = len;
	memset(s->window, 0, len);
	for (size_t i = 0; i < got[0]; i++) {
		unsigned d = out[0][i] ^ out[1][i];
		if (d == 0)
			continue;
		size_t w = out[0][i] | (size_t)(d - 1) << 8;
		if (w >= len)
			return 0; /* cannot be either: no dictionary byte says so */
		s->window[w] = window[w];
		if (w < lo)
			lo = w;
	}
	*first = lo;
	return 1;
}
