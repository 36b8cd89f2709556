/* clip: gzip checkpoints — reading through them.
 *
 * A read fetches the compressed bytes of the spans it needs with one request
 * (mapped when the source can), checks every checkpoint it uses as far as
 * memory safety needs (an index from an archive is trusted only that far),
 * and inflates from the nearest checkpoint at or before the offset wanted
 * with the resumed inflater (gzindex.c), handing it each piece of the fetched
 * bytes only once the piece is verified against its digest.
 * clip_gz_read_from_start, the unchecked reference for tests, is here too.
 */
#include "clip/gzindex.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <zlib.h>
#include <zstd.h>

#include "gzindex_internal.h"
#include "sha256.h"
#include "util.h"

/* Indexes without piece digests (archives of format 1 and 2) vouch for a
 * span with span_sha256 = SHA-256(SHA-256(window) || SHA-256(compressed
 * span)): the two halves were hashed apart because the builder that made them
 * learned the stored (sparse) window only after it had hashed the first part
 * of the span, and it never kept a span whole. */

/* The span digest from its two halves; `out` may alias either. */
static void sha_span(const unsigned char window_md[32], const unsigned char compressed_md[32],
		     unsigned char out[32])
{
	unsigned char both[64];
	memcpy(both, window_md, 32);
	memcpy(both + 32, compressed_md, 32);
	clip_sha256_once(both, sizeof(both), out);
}

/* pread until `len` bytes or the end of the blob; returns bytes read. */
static ssize_t source_read(const struct clip_blob_source *src, void *buf, size_t len,
			   uint64_t offset, struct clip_err *err)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n =
			src->pread(src->opaque, (char *)buf + got, len - got, offset + got, err);
		if (n < 0) {
			if (err == NULL)
				return n;
			if (err->code == 0)
				return clip_err_set(err, (int)n,
						    "compressed blob: read failed at %llu",
						    (unsigned long long)(offset + got));
			return clip_err_prefix(err, "compressed blob");
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static int window_decode(const struct clip_gz_point *p, ZSTD_DCtx **dctx, unsigned char *dst)
{
	switch (p->window_codec) {
	case CLIP_GZ_WINDOW_RAW:
		if (p->window_zlen != p->window_len)
			return -EBADMSG;
		if (p->window_len)
			memcpy(dst, p->window_z, p->window_len);
		return 0;
	case CLIP_GZ_WINDOW_DEFLATE: {
		z_stream z;
		memset(&z, 0, sizeof(z));
		if (inflateInit2(&z, -15) != Z_OK)
			return -ENOMEM;
		z.next_in = (unsigned char *)p->window_z;
		z.avail_in = p->window_zlen;
		z.next_out = dst;
		z.avail_out = p->window_len;
		int ret = inflate(&z, Z_FINISH);
		bool ok = ret == Z_STREAM_END && z.avail_out == 0;
		inflateEnd(&z);
		return ok ? 0 : -EBADMSG;
	}
	case CLIP_GZ_WINDOW_ZSTD: {
		if (*dctx == NULL && (*dctx = ZSTD_createDCtx()) == NULL)
			return -ENOMEM;
		size_t n = ZSTD_decompressDCtx(*dctx, dst, CLIP_GZ_WINDOW, p->window_z,
					       p->window_zlen);
		return !ZSTD_isError(n) && n == p->window_len ? 0 : -EBADMSG;
	}
	default: return -EBADMSG;
	}
}

/* Output before the wanted offset is inflated into a scratch buffer of this
 * size, a piece at a time. */
#define SKIP_CHUNK (256u * 1024)

static void blob_unmap(struct clip_blob_map *m)
{
	if (m->base != NULL)
		munmap(m->base, m->base_len);
}

/* What the reader relies on for memory safety, checked on the spans it uses:
 * an index from an archive is trusted only this far. */
static int check_span(const struct clip_gz_index *index, size_t i, struct clip_err *err)
{
	const struct clip_gz_point *p = &index->points[i];
	uint64_t end = clip_gz_span_end(index, i);
	uint64_t next_out = i + 1 < index->count ? index->points[i + 1].out : index->usize;

	if (p->bits > 7 || (p->bits && p->in == 0) || p->window_len > CLIP_GZ_WINDOW ||
	    (p->window_zlen && p->window_z == NULL) || p->in > end || end > index->csize ||
	    p->out > next_out || next_out > index->usize)
		return clip_err_set(err, EBADMSG, "gzip index: checkpoint %zu is inconsistent", i);
	return 0;
}

/* The compressed bytes fetched for one read, blob offsets [lo, hi), of which
 * [lo, verified) have been checked against their digests. With piece digests
 * lo is a piece boundary and hi one or the end of the blob, and `verified`
 * moves on a piece at a time as the inflater asks for more; without, every
 * span is checked whole up front and `verified` is hi. */
struct fetched {
	const unsigned char *data;
	uint64_t lo, hi, verified;
};

/* Check the piece at f->verified (there is one before f->hi): 0, or -EBADMSG
 * with err naming span i, the one being read. */
static int verify_piece(const struct clip_gz_index *index, struct fetched *f, size_t i,
			struct clip_err *err)
{
	uint64_t k = f->verified / index->piece_bytes;
	uint64_t a = k * index->piece_bytes;
	uint64_t b = a + index->piece_bytes < index->csize ? a + index->piece_bytes : index->csize;
	unsigned char md[32];
	clip_sha256_once(f->data + (a - f->lo), (size_t)(b - a), md);
	if (memcmp(md, index->piece_sha256 + k * 32, 32) != 0)
		return clip_err_set(err, EBADMSG,
				    "span %zu: digest mismatch (compressed bytes %llu-%llu)", i,
				    (unsigned long long)a, (unsigned long long)b);
	f->verified = b;
	return 0;
}

/* Make sure the byte at blob offset `at` is verified; it must lie in the
 * fetched range (it does not when a span is empty). */
static int verify_through(const struct clip_gz_index *index, struct fetched *f, uint64_t at,
			  size_t i, struct clip_err *err)
{
	if (at >= f->hi)
		return clip_err_set(err, EBADMSG, "span %zu: compressed span ends early", i);
	while (f->verified <= at) {
		int r = verify_piece(index, f, i, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Produce exactly `len` bytes of span i into dst. The inflater has been
 * handed the span's bytes up to min(verified, span_end); when it runs dry,
 * the next piece is verified and handed over. */
static int span_produce(const struct clip_gz_index *index, struct fetched *f,
			struct clip_gz_resume *r, size_t i, uint64_t span_end, unsigned char *dst,
			size_t len, struct clip_err *err)
{
	while (len > 0) {
		size_t got;
		enum clip_gz_resume_stop stop;
		const char *why = "invalid deflate data";
		int ret = clip_gz_resume_run(r, dst, len, &got, &stop, &why);
		if (ret < 0)
			return clip_err_set(err, ret, "span %zu: %s", i, why);
		dst += got;
		len -= got;
		if (len == 0)
			break;
		if (stop == CLIP_GZ_RESUME_END)
			return clip_err_set(err, EBADMSG,
					    "span %zu: deflate stream ends before the span does",
					    i);
		uint64_t at = f->lo + (uint64_t)(r->in - f->data) + r->in_left;
		if (at >= span_end)
			return clip_err_set(err, EBADMSG, "span %zu: compressed span ends early",
					    i);
		ret = verify_through(index, f, at, i, err);
		if (ret < 0)
			return ret;
		r->in_left += (size_t)((f->verified < span_end ? f->verified : span_end) - at);
	}
	return 0;
}

/* The window of checkpoint i, verified (with piece digests: its stored bytes
 * against window_sha256) and decoded into `win`. */
int clip_gz_window_load(const struct clip_gz_index *index, size_t i, unsigned char *win,
			ZSTD_DCtx **dctx, struct clip_err *err)
{
	const struct clip_gz_point *p = &index->points[i];
	if (index->piece_bytes) {
		unsigned char md[32];
		clip_sha256_once(p->window_z, p->window_zlen, md);
		if (memcmp(md, p->window_sha256, sizeof(md)) != 0)
			return clip_err_set(err, EBADMSG, "span %zu: window digest mismatch", i);
	}
	int ret = window_decode(p, dctx, win);
	if (ret == -EBADMSG)
		return clip_err_set(err, EBADMSG, "span %zu: window does not decode", i);
	if (ret < 0)
		return clip_err_set(err, ret, "span %zu: decoding window", i);
	return 0;
}

/* Without piece digests: verify every span of the read, window and
 * compressed bytes, before inflating any of it. */
static int verify_spans(const struct clip_gz_index *index, const struct fetched *f, size_t first,
			size_t nspans, unsigned char *win, ZSTD_DCtx **dctx, struct clip_err *err)
{
	for (size_t i = first; i < first + nspans; i++) {
		const struct clip_gz_point *p = &index->points[i];
		unsigned char win_md[32], span_md[32], md[32];
		uint64_t s0 = clip_gz_span_start(index, i), s1 = clip_gz_span_end(index, i);
		int ret = clip_gz_window_load(index, i, win, dctx, err);
		if (ret < 0)
			return ret;
		clip_sha256_once(win, p->window_len, win_md);
		clip_sha256_once(f->data + (s0 - f->lo), (size_t)(s1 - s0), span_md);
		sha_span(win_md, span_md, md);
		if (memcmp(md, p->span_sha256, sizeof(md)) != 0)
			return clip_err_set(err, EBADMSG, "span %zu: digest mismatch", i);
	}
	return 0;
}

/* check_span() on every span [first, last] of a read, and what ties them and
 * the piece digests together. */
static int check_read(const struct clip_gz_index *index, ssize_t first, ssize_t last,
		      struct clip_err *err)
{
	for (ssize_t i = first; i <= last; i++) {
		int r = check_span(index, (size_t)i, err);
		if (r < 0)
			return r;
		/* Span starts must not go backwards within the fetched range. */
		if (i > first &&
		    clip_gz_span_start(index, (size_t)i) < clip_gz_span_start(index, (size_t)i - 1))
			return clip_err_set(err, EBADMSG,
					    "gzip index: checkpoint %zd is inconsistent", i);
	}
	uint64_t piece = index->piece_bytes;
	if (piece &&
	    (piece < CLIP_GZ_MIN_PIECE_BYTES || piece > CLIP_GZ_MAX_PIECE_BYTES ||
	     index->piece_sha256 == NULL || index->npieces != (index->csize + piece - 1) / piece))
		return clip_err_set(err, EBADMSG, "gzip index: piece digests are inconsistent");
	return 0;
}

/* What one read carries from span to span, released by read_state_end(). */
struct read_state {
	struct fetched f;
	unsigned char *copy;	  /* f.data when the source was read into memory */
	struct clip_blob_map map; /* f.data when the source mapped it */
	struct clip_gz_resume inflate;
	unsigned char *win;	/* the current span's window, decoded */
	ZSTD_DCtx *dctx;	/* made for the first zstd window */
	unsigned char *scratch; /* SKIP_CHUNK bytes, made for the first skip */
};

static void read_state_end(struct read_state *s)
{
	clip_gz_resume_end(&s->inflate);
	ZSTD_freeDCtx(s->dctx);
	free(s->scratch);
	free(s->win);
	blob_unmap(&s->map);
	free(s->copy);
}

/* Set s->f to the compressed bytes spans [first, last] need: with piece
 * digests, whole pieces, so that each can be checked. */
static int fetch_range(const struct clip_gz_index *index, size_t first, size_t last,
		       struct read_state *s, struct clip_err *err)
{
	uint64_t piece = index->piece_bytes;
	uint64_t cstart = clip_gz_span_start(index, first);
	uint64_t cend = clip_gz_span_end(index, last);
	s->f.lo = cstart;
	s->f.hi = cend;
	if (piece) {
		s->f.lo = cstart - cstart % piece;
		uint64_t up = cend % piece ? cend - cend % piece + piece : cend;
		s->f.hi = up < index->csize ? up : index->csize;
	}
	if (s->f.hi - s->f.lo > SIZE_MAX / 2)
		return clip_err_set(err, EFBIG, "gzip index: span too large");
	return 0;
}

/* Point s->f.data at the bytes of s->f, mapped when the source can, else
 * read into s->copy. */
static int fetch(const struct clip_blob_source *source, struct read_state *s, struct clip_err *err)
{
	size_t fetch_len = (size_t)(s->f.hi - s->f.lo);
	if (source->map != NULL && fetch_len > 0) {
		int r = source->map(source->opaque, s->f.lo, fetch_len, &s->map, err);
		if (r < 0)
			return r;
		s->f.data = s->map.data;
		return 0;
	}
	if ((s->copy = malloc(fetch_len ? fetch_len : 1)) == NULL)
		return clip_err_set(err, ENOMEM, "gzip read: out of memory (%zu bytes)", fetch_len);
	ssize_t got = source_read(source, s->copy, fetch_len, s->f.lo, err);
	if (got < 0)
		return (int)got;
	if ((size_t)got < fetch_len)
		return clip_err_set(
			err, EIO, "compressed blob: ends at %llu, index expects %llu bytes",
			(unsigned long long)(s->f.lo + (uint64_t)got), (unsigned long long)s->f.hi);
	s->f.data = s->copy;
	return 0;
}

/* Inflate uncompressed [from, to) of span i, which lies in s->f, into `dst`:
 * resume at the checkpoint with its window and what is verified of the span,
 * and inflate the output before `from` into s->scratch. */
static int read_span(const struct clip_gz_index *index, struct read_state *s, size_t i,
		     uint64_t from, uint64_t to, unsigned char *dst,
		     struct clip_gz_read_stats *stats, struct clip_err *err)
{
	const struct clip_gz_point *p = &index->points[i];
	uint64_t s0 = clip_gz_span_start(index, i);
	uint64_t s1 = clip_gz_span_end(index, i);
	int ret = clip_gz_window_load(index, i, s->win, &s->dctx, err);
	if (ret == 0)
		ret = verify_through(index, &s->f, s0, i, err);
	if (ret < 0)
		return ret;
	/* The span starts with the byte holding the primed bits, if any;
	 * the inflater gets what is verified of the rest. */
	const unsigned char *span = s->f.data + (s0 - s->f.lo);
	size_t partial = p->bits ? 1 : 0;
	uint64_t avail = (s->f.verified < s1 ? s->f.verified : s1) - s0 - partial;
	ret = clip_gz_resume_start(&s->inflate, p->bits, partial ? span[0] : 0, span + partial,
				   (size_t)avail, s->win, p->window_len);
	if (ret < 0)
		return clip_err_set(err, ret, "span %zu: cannot start inflate", i);
	uint64_t skip = from - p->out;
	if (skip > 0 && s->scratch == NULL && (s->scratch = malloc(SKIP_CHUNK)) == NULL)
		return clip_err_set(err, ENOMEM, "gzip read: out of memory");
	while (skip > 0 && ret == 0) {
		size_t n = (size_t)(skip < SKIP_CHUNK ? skip : SKIP_CHUNK);
		ret = span_produce(index, &s->f, &s->inflate, i, s1, s->scratch, n, err);
		skip -= n;
	}
	if (ret == 0)
		ret = span_produce(index, &s->f, &s->inflate, i, s1, dst, (size_t)(to - from), err);
	if (stats) {
		stats->spans++;
		stats->inflated_bytes += s->inflate.produced;
	}
	return ret;
}

ssize_t clip_gz_index_read_with(const struct clip_gz_index *index,
				const struct clip_blob_source *source, void *buf, size_t len,
				uint64_t offset, enum clip_gz_inflater inflater,
				struct clip_gz_read_stats *stats, struct clip_err *err)
{
	if (offset >= index->usize || len == 0)
		return 0;
	uint64_t end = offset + clip_gz_min_size(len, index->usize - offset);
	ssize_t first = clip_gz_index_find(index, offset);
	ssize_t last = clip_gz_index_find(index, end - 1);
	if (first < 0)
		return clip_err_set(
			err, EBADMSG,
			"gzip index: no checkpoint at or before uncompressed offset %llu",
			(unsigned long long)offset);
	int ret = check_read(index, first, last, err);
	if (ret < 0)
		return ret;

	__attribute__((cleanup(read_state_end))) struct read_state s = { .inflate.kind = inflater };
	ret = fetch_range(index, (size_t)first, (size_t)last, &s, err);
	if (ret < 0)
		return ret;
	if ((s.win = malloc(CLIP_GZ_WINDOW)) == NULL)
		return clip_err_set(err, ENOMEM, "gzip read: out of memory");
	ret = fetch(source, &s, err);
	if (ret < 0)
		return ret;
	if (stats)
		stats->compressed_bytes += s.f.hi - s.f.lo;

	s.f.verified = s.f.lo;
	if (!index->piece_bytes) {
		/* Whole-span digests: all of it before any output, so that a
		 * corrupt span never leaves partial output behind. */
		ret = verify_spans(index, &s.f, (size_t)first, (size_t)(last - first + 1), s.win,
				   &s.dctx, err);
		s.f.verified = s.f.hi;
	}
	unsigned char *dst = buf;
	for (size_t i = (size_t)first; i <= (size_t)last && ret == 0; i++) {
		uint64_t next_out = i + 1 < index->count ? index->points[i + 1].out : index->usize;
		uint64_t from = offset > index->points[i].out ? offset : index->points[i].out;
		uint64_t to = end < next_out ? end : next_out;
		if (from >= to)
			continue; /* an empty span */
		ret = read_span(index, &s, i, from, to, dst, stats, err);
		dst += to - from;
	}
	if (ret < 0)
		return ret;
	return (ssize_t)(end - offset);
}

ssize_t clip_gz_index_read(const struct clip_gz_index *index, const struct clip_blob_source *source,
			   void *buf, size_t len, uint64_t offset, struct clip_gz_read_stats *stats,
			   struct clip_err *err)
{
	return clip_gz_index_read_with(index, source, buf, len, offset, CLIP_GZ_INFLATER_DEFAULT,
				       stats, err);
}

#define FROM_START_CHUNK (256 * 1024)

ssize_t clip_gz_read_from_start(const struct clip_blob_source *source, void *buf, size_t len,
				uint64_t offset, struct clip_gz_read_stats *stats,
				struct clip_err *err)
{
	if (len == 0)
		return 0;
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	uint64_t end = offset + len < offset ? UINT64_MAX : offset + len;
	cleanup_free unsigned char *in = malloc(FROM_START_CHUNK);
	cleanup_free unsigned char *out = malloc(FROM_START_CHUNK);
	struct clip_gz_scanner *s = clip_gz_scanner_new();
	if (in == NULL || out == NULL || s == NULL) {
		clip_gz_scanner_free(s);
		return clip_err_set(err, ENOMEM, "gzip read: out of memory");
	}

	/* The scanner does the multi-member walking and the garbage checks;
	 * boundaries are not needed here. */
	struct clip_gz_boundary bounds[64];
	uint64_t cpos = 0, upos = 0, copied = 0;
	size_t in_have = 0, in_off = 0;
	bool eof = false;
	int ret = 0;
	unsigned char *dst = buf;

	while (upos < end) {
		if (in_off == in_have && !eof) {
			ssize_t n = source_read(source, in, FROM_START_CHUNK, cpos, err);
			if (n < 0) {
				ret = (int)n;
				break;
			}
			if (stats)
				stats->compressed_bytes += (uint64_t)n;
			cpos += (uint64_t)n;
			in_have = (size_t)n;
			in_off = 0;
			eof = (size_t)n < FROM_START_CHUNK;
		}
		size_t used, produced, nb;
		ret = clip_gz_scanner_run(s, in + in_off, in_have - in_off, &used, out,
					  FROM_START_CHUNK, &produced, bounds,
					  CLIP_ARRAY_SIZE(bounds), &nb, err);
		if (ret < 0)
			break;
		in_off += used;
		if (stats)
			stats->inflated_bytes += produced;
		if (upos + produced > offset) {
			uint64_t from = offset > upos ? offset - upos : 0;
			uint64_t to = end - upos < produced ? end - upos : produced;
			memcpy(dst + copied, out + from, (size_t)(to - from));
			copied += to - from;
		}
		upos += produced;
		if (eof && in_off == in_have && produced < FROM_START_CHUNK &&
		    nb < CLIP_ARRAY_SIZE(bounds)) {
			ret = clip_gz_scanner_finish(s, err);
			break;
		}
	}
	clip_gz_scanner_free(s);
	if (ret < 0)
		return ret;
	return (ssize_t)copied;
}
