/* clip: gzip checkpoints — new ones inside an existing span (clip optimize).
 *
 * The indexer can only place a checkpoint at a boundary it is passing, and
 * it does not know then which bytes programs will read. Once a startup
 * profile says so, a span is inflated again from its checkpoint, every block
 * boundary in it is noted, and the ones asked for become checkpoints of their
 * own, with windows made sparse exactly as the builder makes them. The
 * compressed bytes are checked against the piece digests before the inflater
 * sees any of them, and the span must inflate to exactly the bytes the index
 * says, so a new checkpoint is as trustworthy as the span it came from.
 */
#include "clip/gzindex.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>
#include <zstd.h>

#include "gzindex_internal.h"
#include "sha256.h"
#include "util.h"

#define W CLIP_GZ_WINDOW

/* A span larger than this is not refined (an archive indexed with a huge
 * --span-size): holding its output would cost more than it can save. */
#define REFINE_MAX_SPAN (256ull << 20)

/* Compressed bytes [lo, hi) of the blob into buf; -EIO when it ends early. */
static int fetch_all(const struct clip_blob_source *src, unsigned char *buf, uint64_t lo,
		     uint64_t hi, struct clip_err *err)
{
	size_t len = (size_t)(hi - lo), got = 0;
	while (got < len) {
		ssize_t n = src->pread(src->opaque, buf + got, len - got, lo + got, err);
		if (n < 0) {
			if (err->code == 0)
				clip_err_set(err, (int)-n, "read failed at %llu",
					     (unsigned long long)(lo + got));
			return clip_err_prefix(err, "compressed blob");
		}
		if (n == 0)
			return clip_err_set(err, EIO, "compressed blob ends at %llu, expected %llu",
					    (unsigned long long)(lo + got), (unsigned long long)hi);
		got += (size_t)n;
	}
	return 0;
}

struct boundary {
	uint64_t in, out;
	uint8_t bits;
};

struct span_scan {
	struct boundary *b;
	size_t n, cap;
};

static int note_boundary(struct span_scan *s, uint64_t in, uint64_t out, unsigned bits)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 64;
		struct boundary *b = realloc(s->b, cap * sizeof(*b));
		if (b == NULL)
			return -ENOMEM;
		s->b = b;
		s->cap = cap;
	}
	s->b[s->n++] = (struct boundary){ in, out, (uint8_t)bits };
	return 0;
}

/* Inflate span i (compressed bytes at buf, which starts at blob offset lo)
 * into out (span_len bytes) with zlib, noting every block boundary. */
static int scan_span(const struct clip_gz_index *index, size_t i, const unsigned char *buf,
		     uint64_t lo, const unsigned char *win, unsigned char *out, size_t span_len,
		     struct span_scan *scan, struct clip_err *err)
{
	const struct clip_gz_point *cp = &index->points[i];
	uint64_t s1 = clip_gz_span_end(index, i);
	z_stream z = { 0 };
	if (inflateInit2(&z, -15) != Z_OK)
		return clip_err_nomem(err);
	int rc = 0;
	if (cp->bits && inflatePrime(&z, cp->bits, buf[cp->in - 1 - lo] >> (8 - cp->bits)) != Z_OK)
		rc = clip_err_set(err, EBADMSG, "span %zu: bad checkpoint bits", i);
	if (rc == 0 && cp->window_len && inflateSetDictionary(&z, win, cp->window_len) != Z_OK)
		rc = clip_err_set(err, EBADMSG, "span %zu: bad checkpoint window", i);
	z.next_in = (unsigned char *)buf + (cp->in - lo);
	z.avail_in = (uInt)(s1 - cp->in);
	z.next_out = out;
	z.avail_out = (uInt)span_len;
	while (rc == 0) {
		int r = inflate(&z, Z_BLOCK);
		if (r == Z_STREAM_END)
			break;
		if (r == Z_MEM_ERROR) {
			rc = clip_err_nomem(err);
			break;
		}
		if (r != Z_OK && r != Z_BUF_ERROR) {
			rc = clip_err_set(err, EBADMSG, "span %zu does not inflate: %s", i,
					  z.msg ? z.msg : "invalid deflate data");
			break;
		}
		if ((z.data_type & 128) && !(z.data_type & 64) && z.total_out > 0 &&
		    note_boundary(scan, lo + (uint64_t)(z.next_in - buf), cp->out + z.total_out,
				  (unsigned)z.data_type & 7) < 0)
			rc = clip_err_nomem(err);
		if (r == Z_BUF_ERROR || z.avail_in == 0 || z.avail_out == 0)
			break;
	}
	if (rc == 0 && z.total_out != span_len)
		rc = clip_err_set(err, EBADMSG,
				  "span %zu inflates to %lu bytes, the index says %zu", i,
				  z.total_out, span_len);
	inflateEnd(&z);
	return rc;
}

/* Make boundary b a checkpoint: its window (the 32 KiB of span output before
 * it, made sparse), compressed and hashed. */
static int make_point(const struct boundary *b, const unsigned char *window,
		      const unsigned char *buf, uint64_t lo, uint64_t hi,
		      struct clip_gz_sparse *sparse, ZSTD_CCtx *zc, struct clip_gz_point *p)
{
	const unsigned char *win = window;
	size_t len = W, first;
	unsigned char partial = b->bits ? buf[b->in - 1 - lo] : 0;
	int r = clip_gz_sparse_run(sparse, window, W, b->bits, partial, buf + (b->in - lo),
				   (size_t)(hi - b->in), &first);
	if (r < 0)
		return r;
	if (r > 0) {
		win = sparse->window + first;
		len = W - first;
	}
	size_t bound = ZSTD_compressBound(W);
	unsigned char *z = malloc(bound > 0 ? bound : 1);
	if (z == NULL)
		return -ENOMEM;
	uint8_t codec = CLIP_GZ_WINDOW_RAW;
	size_t zlen = len;
	size_t n = len ? ZSTD_compressCCtx(zc, z, bound, win, len, CLIP_GZ_WINDOW_ZSTD_LEVEL) : 0;
	if (len && !ZSTD_isError(n) && n < len) {
		codec = CLIP_GZ_WINDOW_ZSTD;
		zlen = n;
	} else {
		memcpy(z, win, len);
	}
	*p = (struct clip_gz_point){ .in = b->in,
				     .out = b->out,
				     .bits = b->bits,
				     .window_codec = codec,
				     .window_len = (uint32_t)len,
				     .window_zlen = (uint32_t)zlen,
				     .window_z = z };
	clip_sha256_once(z, zlen, p->window_sha256);
	return 0;
}

/* The boundary a want asks for among the usable ones, or NULL. */
static const struct boundary *pick(const struct span_scan *s, const struct clip_gz_want *w)
{
	const struct boundary *found = NULL;
	for (size_t k = 0; k < s->n; k++) {
		if (!w->after && s->b[k].out <= w->at)
			found = &s->b[k];
		if (w->after && s->b[k].out >= w->at)
			return &s->b[k];
	}
	return found;
}

static int push_point(struct clip_gz_point **points, size_t *count, const struct clip_gz_point *p)
{
	struct clip_gz_point *grown = realloc(*points, (*count + 1) * sizeof(**points));
	if (grown == NULL)
		return -ENOMEM;
	*points = grown;
	grown[(*count)++] = *p;
	return 0;
}

int clip_gz_index_refine(const struct clip_gz_index *index, const struct clip_blob_source *source,
			 size_t span, const struct clip_gz_want *wants, size_t nwants,
			 struct clip_gz_point **points, size_t *count, size_t *picked,
			 struct clip_gz_read_stats *stats, struct clip_err *err)
{
	for (size_t w = 0; picked && w < nwants; w++)
		picked[w] = SIZE_MAX;
	if (index->piece_bytes == 0 || index->piece_sha256 == NULL)
		return clip_err_set(err, ENOTSUP,
				    "the archive has no piece digests (format 1 or 2): "
				    "index the image again");
	if (span >= index->count)
		return clip_err_set(err, EINVAL, "span %zu: the layer has %zu", span, index->count);
	const struct clip_gz_point *cp = &index->points[span];
	uint64_t s0 = clip_gz_span_start(index, span), s1 = clip_gz_span_end(index, span);
	uint64_t out_end = span + 1 < index->count ? index->points[span + 1].out : index->usize;
	if (s1 <= s0 || s1 > index->csize || cp->in > s1 || out_end <= cp->out ||
	    cp->window_len > W)
		return clip_err_set(err, EBADMSG, "span %zu: invalid checkpoint", span);
	size_t span_len = (size_t)(out_end - cp->out);
	if (out_end - cp->out > REFINE_MAX_SPAN || span_len <= W)
		return 0;

	uint64_t piece = index->piece_bytes;
	uint64_t lo = s0 - s0 % piece;
	uint64_t hi = s1 % piece ? s1 - s1 % piece + piece : s1;
	if (hi > index->csize)
		hi = index->csize;
	unsigned char *buf = malloc((size_t)(hi - lo));
	unsigned char *out = malloc(span_len);
	unsigned char *win = malloc(W);
	struct span_scan scan = { 0 };
	ZSTD_DCtx *dctx = NULL;
	ZSTD_CCtx *zc = ZSTD_createCCtx();
	struct clip_gz_sparse sparse = { 0 };
	int rc = buf && out && win && zc && clip_gz_sparse_init(&sparse) == 0 ? 0
									      : clip_err_nomem(err);
	if (rc == 0)
		rc = fetch_all(source, buf, lo, hi, err);
	/* Every piece is checked before the inflater sees a byte of it. */
	for (uint64_t a = lo; rc == 0 && a < hi; a += piece) {
		uint64_t b = a + piece < hi ? a + piece : hi;
		unsigned char md[32];
		clip_sha256_once(buf + (a - lo), (size_t)(b - a), md);
		if (memcmp(md, index->piece_sha256 + (a / piece) * 32, 32) != 0)
			rc = clip_err_set(err, EBADMSG,
					  "compressed piece %llu does not match its digest",
					  (unsigned long long)(a / piece));
	}
	if (stats && rc == 0) {
		stats->spans++;
		stats->compressed_bytes += hi - lo;
		stats->inflated_bytes += span_len;
	}
	if (rc == 0)
		rc = clip_gz_window_load(index, span, win, &dctx, err);
	if (rc == 0)
		rc = scan_span(index, span, buf, lo, win, out, span_len, &scan, err);

	/* Usable boundaries: a full window of this span's own output behind
	 * them (the checkpoint's window may be sparse), and inside the span. */
	size_t keep = 0;
	for (size_t k = 0; rc == 0 && k < scan.n; k++)
		if (scan.b[k].out >= cp->out + W && scan.b[k].out < out_end)
			scan.b[keep++] = scan.b[k];
	scan.n = keep;

	size_t base = *count;
	for (size_t w = 0; rc == 0 && w < nwants; w++) {
		const struct boundary *b = pick(&scan, &wants[w]);
		if (b == NULL)
			continue;
		size_t at = base;
		while (at < *count && (*points)[at].out != b->out)
			at++;
		if (at == *count) {
			struct clip_gz_point p;
			rc = make_point(b, out + (b->out - cp->out - W), buf, lo, hi, &sparse, zc,
					&p);
			if (rc == 0 && (rc = push_point(points, count, &p)) < 0)
				free((void *)p.window_z);
			if (rc < 0) {
				rc = clip_err_nomem(err);
				break;
			}
		}
		if (picked)
			picked[w] = at;
	}
	clip_gz_sparse_end(&sparse);
	ZSTD_freeCCtx(zc);
	ZSTD_freeDCtx(dctx);
	free(scan.b);
	free(win);
	free(out);
	free(buf);
	if (rc < 0)
		clip_err_prefix(err, "span %zu", span);
	return rc;
}

void clip_gz_points_free(struct clip_gz_point *points, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free((void *)points[i].window_z);
	free(points);
}
