/* Tests for gzip checkpoints: scanner, builder, reader.
 *
 * The reference everywhere is an independent full decompression with zlib;
 * digests and windows are recomputed here from the whole stream, which the
 * builder never holds. Heavy cases shrink under CLIP_TEST_QUICK.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <zlib.h>
#include <zstd.h>

#include "clip/gzindex.h"
#include "gzindex_internal.h"

#define KiB (1024u)
#define MiB (1024u * 1024u)

static bool quick;

/* ---- small helpers ---------------------------------------------------- */

struct gzt_buf {
	unsigned char *p;
	size_t len, cap;
};

static void gzt_buf_reserve(struct gzt_buf *b, size_t extra)
{
	if (b->cap - b->len >= extra)
		return;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap - b->len < extra)
		cap *= 2;
	b->p = realloc(b->p, cap);
	assert_non_null(b->p);
	b->cap = cap;
}

static void gzt_buf_add(struct gzt_buf *b, const void *p, size_t n)
{
	gzt_buf_reserve(b, n);
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void gzt_buf_free(struct gzt_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

static uint64_t rng_next(uint64_t *s)
{
	/* splitmix64 */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rng_below(uint64_t *s, uint64_t n)
{
	return n ? rng_next(s) % n : 0;
}

/* Layer-like content: text, zero runs, incompressible bytes, and copies of
 * earlier data near and beyond the 32 KiB window. */
static void gen_data(struct gzt_buf *out, size_t size, uint64_t seed)
{
	static const char *words[] = { "usr",	    "lib",    "share", "the",	   "of",
				       "container", "image",  "layer", "#include", "static",
				       "int",	    "return", "\n",    "    ",	   "{",
				       "}",	    "0x",     "error", "file",	   "tar" };
	uint64_t s = seed;
	gzt_buf_reserve(out, size);
	while (out->len < size) {
		size_t left = size - out->len;
		size_t n = 1 + rng_below(&s, 20000);
		if (n > left)
			n = left;
		unsigned kind = (unsigned)rng_below(&s, 10);
		if (kind < 5) {
			for (size_t i = 0; i < n;) {
				const char *w =
					words[rng_below(&s, sizeof(words) / sizeof(words[0]))];
				size_t wl = strlen(w);
				if (wl > n - i)
					wl = n - i;
				memcpy(out->p + out->len + i, w, wl);
				i += wl;
				if (i < n)
					out->p[out->len + i++] = ' ';
			}
		} else if (kind < 6) {
			memset(out->p + out->len, 0, n);
		} else if (kind < 8) {
			for (size_t i = 0; i < n; i++)
				out->p[out->len + i] = (unsigned char)rng_next(&s);
		} else if (out->len > 0) {
			size_t dist = 1 + rng_below(&s, out->len < 100000 ? out->len : 100000);
			for (size_t i = 0; i < n; i++)
				out->p[out->len + i] = out->p[out->len + i - dist];
		} else {
			memset(out->p + out->len, 'x', n);
		}
		out->len += n;
	}
}

static void gzip_zlib(struct gzt_buf *out, const void *data, size_t len, int level)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	assert_int_equal(deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
	size_t bound = deflateBound(&z, (uLong)len) + 64;
	gzt_buf_reserve(out, bound);
	z.next_in = (unsigned char *)data;
	z.avail_in = (uInt)len;
	z.next_out = out->p + out->len;
	z.avail_out = (uInt)bound;
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	out->len += bound - z.avail_out;
	deflateEnd(&z);
}

/* Reference: multi-member gunzip with zero padding, straight zlib. */
static void ref_gunzip(struct gzt_buf *out, const struct gzt_buf *gz)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
	size_t pos = 0;
	unsigned char tmp[65536];
	while (pos < gz->len) {
		if (gz->p[pos] == 0) {
			pos++;
			continue;
		}
		inflateReset(&z);
		int ret;
		do {
			z.next_in = gz->p + pos;
			z.avail_in = (uInt)(gz->len - pos);
			z.next_out = tmp;
			z.avail_out = sizeof(tmp);
			ret = inflate(&z, Z_NO_FLUSH);
			assert_true(ret == Z_OK || ret == Z_STREAM_END);
			pos = gz->len - z.avail_in;
			gzt_buf_add(out, tmp, sizeof(tmp) - z.avail_out);
		} while (ret != Z_STREAM_END);
	}
	inflateEnd(&z);
}

static char tmpdir[4096];

static void make_tmpdir(void)
{
	const char *base = getenv("CLIP_TEST_TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/gzindex.XXXXXX", base ? base : "/tmp");
	assert_non_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/in", tmpdir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/out", tmpdir);
	unlink(path);
	rmdir(tmpdir);
}

static bool have_tool(const char *tool)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", tool);
	return system(cmd) == 0;
}

/* Compress with a CLI tool ("gzip -9"); false when the tool is not
 * installed (the caller says what it does instead). */
static bool gzip_tool(struct gzt_buf *out, const char *tool, const char *args, const void *data,
		      size_t len)
{
	if (!have_tool(tool))
		return false;
	char in_path[4200], out_path[4200], cmd[9000];
	snprintf(in_path, sizeof(in_path), "%s/in", tmpdir);
	snprintf(out_path, sizeof(out_path), "%s/out", tmpdir);
	FILE *f = fopen(in_path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	snprintf(cmd, sizeof(cmd), "%s %s -c < '%s' > '%s'", tool, args, in_path, out_path);
	assert_int_equal(system(cmd), 0);
	f = fopen(out_path, "rb");
	assert_non_null(f);
	unsigned char tmp[65536];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		gzt_buf_add(out, tmp, n);
	fclose(f);
	return true;
}

static void sha256(const void *p, size_t len, unsigned char md[32])
{
	unsigned int n;
	assert_int_equal(EVP_Digest(p, len, md, &n, EVP_sha256(), NULL), 1);
}

/* The span digest as docs/FORMAT.md defines it:
 * SHA-256(SHA-256(window) || SHA-256(compressed span)). */
static void span_digest(const void *win, size_t wlen, const void *span, size_t slen,
			unsigned char md[32])
{
	unsigned char both[64];
	sha256(win, wlen, both);
	sha256(span, slen, both + 32);
	sha256(both, sizeof(both), md);
}

static void decode_window(const struct clip_gz_point *p, unsigned char *dst)
{
	if (p->window_codec == CLIP_GZ_WINDOW_RAW) {
		assert_int_equal(p->window_zlen, p->window_len);
		memcpy(dst, p->window_z, p->window_len);
		return;
	}
	if (p->window_codec == CLIP_GZ_WINDOW_DEFLATE) {
		z_stream z;
		memset(&z, 0, sizeof(z));
		assert_int_equal(inflateInit2(&z, -15), Z_OK);
		z.next_in = (unsigned char *)p->window_z;
		z.avail_in = p->window_zlen;
		z.next_out = dst;
		z.avail_out = p->window_len;
		assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
		assert_int_equal(z.avail_out, 0);
		inflateEnd(&z);
		return;
	}
	assert_int_equal(p->window_codec, CLIP_GZ_WINDOW_ZSTD);
	size_t n = ZSTD_decompress(dst, CLIP_GZ_WINDOW, p->window_z, p->window_zlen);
	assert_false(ZSTD_isError(n));
	assert_int_equal(n, p->window_len);
}

/* ---- a source over memory ------------------------------------------- */

struct memsrc {
	const unsigned char *p;
	size_t len;
	size_t dribble; /* when set, return at most this much per call */
	int fail;	/* when set, every read fails with this errno */
	bool map;	/* when set, the source offers map (in place of a copy) too */
	unsigned long calls;
};

/* clip_blob_source.map over memory: the reader takes the bytes in place. */
static int mem_map(void *opaque, uint64_t off, size_t len, struct clip_blob_map *mp,
		   struct clip_err *err)
{
	struct memsrc *m = opaque;
	m->calls++;
	if (m->fail)
		return clip_err_set(err, m->fail, "test source: injected failure");
	if (off > m->len || m->len - off < len)
		return clip_err_set(err, EIO, "test source: ends at %zu", m->len);
	mp->data = m->p + off;
	mp->base = NULL;
	mp->base_len = 0;
	return 0;
}

static ssize_t mem_pread(void *opaque, void *buf, size_t len, uint64_t off, struct clip_err *err)
{
	struct memsrc *m = opaque;
	m->calls++;
	if (m->fail)
		return clip_err_set(err, m->fail, "test source: injected failure");
	if (off >= m->len)
		return 0;
	size_t n = m->len - off < len ? m->len - off : len;
	if (m->dribble && n > m->dribble)
		n = m->dribble;
	memcpy(buf, m->p + off, n);
	return (ssize_t)n;
}

/* ---- driving scanner + builder as the indexer will ---------------------- */

struct hint {
	uint64_t offset, size;
};

enum hint_mode {
	HINTS_ON_TIME,	       /* as soon as the bytes up to the offset were fed */
	HINTS_BEFORE_BOUNDARY, /* all hints behind the bytes fed, just before each boundary */
	HINTS_UPFRONT,	       /* all of them before anything is fed */
};

struct built {
	struct clip_gz_index *index;
	struct clip_gz_boundary *bounds;
	size_t nbounds, bounds_cap;
	struct gzt_buf out; /* everything the scanner produced */
};

struct feeder {
	struct clip_gz_builder *b;
	const struct gzt_buf *gz;
	struct built *res;
	const struct hint *hints; /* sorted by offset */
	size_t nhints, next_hint;
	enum hint_mode mode;
	uint64_t fed_in, fed_out;
};

static void deliver_hints(struct feeder *f, uint64_t upto, bool inclusive)
{
	struct clip_err err = { 0 };
	while (f->next_hint < f->nhints && (f->hints[f->next_hint].offset < upto ||
					    (inclusive && f->hints[f->next_hint].offset == upto))) {
		const struct hint *h = &f->hints[f->next_hint++];
		int r = clip_gz_builder_file(f->b, h->offset, h->size, &err);
		if (r != 0)
			fail_msg("builder_file(%llu): %s", (unsigned long long)h->offset, err.msg);
	}
}

static void feed_to(struct feeder *f, uint64_t in_to, uint64_t out_to)
{
	struct clip_err err = { 0 };
	if (in_to > f->fed_in) {
		assert_int_equal(clip_gz_builder_compressed(f->b, f->gz->p + f->fed_in,
							    (size_t)(in_to - f->fed_in), &err),
				 0);
		f->fed_in = in_to;
	}
	while (f->fed_out < out_to) {
		uint64_t stop = out_to;
		if (f->mode == HINTS_ON_TIME && f->next_hint < f->nhints &&
		    f->hints[f->next_hint].offset > f->fed_out &&
		    f->hints[f->next_hint].offset < stop)
			stop = f->hints[f->next_hint].offset;
		assert_int_equal(clip_gz_builder_uncompressed(f->b, f->res->out.p + f->fed_out,
							      (size_t)(stop - f->fed_out), &err),
				 0);
		f->fed_out = stop;
		if (f->mode == HINTS_ON_TIME)
			deliver_hints(f, f->fed_out, true);
	}
}

struct build_opts {
	uint64_t span;
	uint64_t threshold;
	const struct hint *hints;
	size_t nhints;
	enum hint_mode mode;
	uint64_t seed;	/* chunking */
	bool tiny;	/* 1-byte chunks and one boundary per call */
	uint32_t piece; /* piece size of the digests, 0: the default */
};

/* Index `gz`; fails the test on any error. */
static void build(const struct gzt_buf *gz, const struct build_opts *o, struct built *res)
{
	struct clip_gz_builder_options bo = { .span_bytes = o->span,
					      .large_file_threshold = o->threshold,
					      .piece_bytes = o->piece };
	struct clip_err err = { 0 };
	uint64_t s = o->seed;
	memset(res, 0, sizeof(*res));
	struct clip_gz_scanner *sc = clip_gz_scanner_new();
	struct clip_gz_builder *b = clip_gz_builder_new(&bo);
	assert_non_null(sc);
	assert_non_null(b);
	struct feeder f = { .b = b,
			    .gz = gz,
			    .res = res,
			    .hints = o->hints,
			    .nhints = o->nhints,
			    .mode = o->mode };
	if (o->mode == HINTS_UPFRONT) {
		/* Backwards, to give the builder's pending list some work. */
		for (size_t i = o->nhints; i-- > 0;)
			assert_int_equal(
				clip_gz_builder_file(b, o->hints[i].offset, o->hints[i].size, &err),
				0);
		f.next_hint = o->nhints;
	}

	size_t outcap = 256 * KiB;
	unsigned char *outbuf = malloc(outcap);
	struct clip_gz_boundary bounds[16];
	size_t pos = 0;
	for (;;) {
		size_t in_len = o->tiny ? 1 : 1 + rng_below(&s, rng_below(&s, 4) ? 65536 : 64);
		if (in_len > gz->len - pos)
			in_len = gz->len - pos;
		size_t out_cap = o->tiny ? 1 : 1 + rng_below(&s, rng_below(&s, 4) ? outcap : 100);
		size_t bcap = o->tiny ? 1 : 1 + rng_below(&s, 16);
		size_t used, produced, nb;
		int r = clip_gz_scanner_run(sc, gz->p + pos, in_len, &used, outbuf, out_cap,
					    &produced, bounds, bcap, &nb, &err);
		if (r != 0)
			fail_msg("scanner: %s", err.msg);
		pos += used;
		gzt_buf_add(&res->out, outbuf, produced);
		for (size_t i = 0; i < nb; i++) {
			feed_to(&f, bounds[i].in, bounds[i].out);
			if (o->mode == HINTS_BEFORE_BOUNDARY)
				deliver_hints(&f, f.fed_out, false);
			r = clip_gz_builder_boundary(b, &bounds[i], &err);
			if (r != 0)
				fail_msg("builder_boundary: %s", err.msg);
			if (res->nbounds == res->bounds_cap) {
				res->bounds_cap = res->bounds_cap ? 2 * res->bounds_cap : 256;
				res->bounds = realloc(res->bounds,
						      res->bounds_cap * sizeof(*res->bounds));
				assert_non_null(res->bounds);
			}
			res->bounds[res->nbounds++] = bounds[i];
		}
		feed_to(&f, pos, res->out.len);
		if (pos == gz->len && used == 0 && produced == 0 && nb == 0)
			break;
	}
	free(outbuf);
	if (clip_gz_scanner_finish(sc, &err) != 0)
		fail_msg("scanner finish: %s", err.msg);
	deliver_hints(&f, UINT64_MAX, true);
	if (clip_gz_builder_finish(b, &res->index, &err) != 0)
		fail_msg("builder finish: %s", err.msg);
	clip_gz_builder_free(b);
	clip_gz_scanner_free(sc);
	assert_int_equal(res->index->csize, gz->len);
	assert_int_equal(res->index->usize, res->out.len);
}

static void built_free(struct built *res)
{
	clip_gz_index_free(res->index);
	free(res->bounds);
	gzt_buf_free(&res->out);
}

/* Inflate from checkpoint `p` of `gz` with zlib and `dict` as the window,
 * until `cap` bytes are out or the member's deflate stream ends; returns the
 * bytes produced. Independent of the library's reader and its ISA-L path. */
static size_t inflate_at(const struct gzt_buf *gz, const struct clip_gz_point *p,
			 const unsigned char *dict, size_t dict_len, unsigned char *out, size_t cap)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	assert_int_equal(inflateInit2(&z, -15), Z_OK);
	if (p->bits)
		assert_int_equal(inflatePrime(&z, p->bits, gz->p[p->in - 1] >> (8 - p->bits)),
				 Z_OK);
	if (dict_len)
		assert_int_equal(inflateSetDictionary(&z, dict, (uInt)dict_len), Z_OK);
	z.next_in = gz->p + p->in;
	z.avail_in = (uInt)(gz->len - p->in);
	z.next_out = out;
	z.avail_out = (uInt)cap;
	int ret = inflate(&z, Z_NO_FLUSH);
	if (ret != Z_OK && ret != Z_STREAM_END)
		fail_msg("inflate at checkpoint (in %llu): %d %s", (unsigned long long)p->in, ret,
			 z.msg ? z.msg : "");
	size_t n = cap - z.avail_out;
	inflateEnd(&z);
	return n;
}

struct window_stats {
	uint64_t full_len, stored_len;	 /* uncompressed window bytes */
	uint64_t full_zlen, stored_zlen; /* zstd -3 of the real windows; as stored */
	uint64_t dropped;		 /* real non-zero bytes not stored */
};

/* Stored window `win` of checkpoint `p` against the real one, the `full`
 * member-local bytes before it: it must be a suffix of it with some bytes
 * zeroed. Inflating (zlib) the first 32 KiB after the checkpoint, or up to
 * the member's end, must give the real output with the stored window, and
 * with garbage in every byte the window claims unneeded (the dropped prefix,
 * and bytes zeroed although not zero); and unless the window was kept whole,
 * flipping a kept non-zero byte must change it. That is the builder's
 * "exactly the bytes the span reaches". */
static void check_window(const struct gzt_buf *gz, const struct gzt_buf *ref,
			 const struct clip_gz_point *p, uint64_t span_len, size_t full,
			 const unsigned char *win, struct window_stats *st, uint64_t *seed)
{
	const size_t W = CLIP_GZ_WINDOW;
	const unsigned char *real = ref->p + p->out - full;
	const unsigned char *want = ref->p + p->out;
	size_t skip = full - p->window_len;
	unsigned char *garbage = malloc(W), *out = malloc(W), *flipped = malloc(W);

	size_t dropped = 0;
	for (size_t j = 0; j < full; j++) {
		bool unneeded = j < skip || (win[j - skip] == 0 && real[j] != 0);
		if (j >= skip && win[j - skip] != 0 && win[j - skip] != real[j])
			fail_msg("window of checkpoint at out %llu: byte %zu is %u, not %u or 0",
				 (unsigned long long)p->out, j, win[j - skip], real[j]);
		dropped += unneeded && real[j] != 0;
		garbage[j] = unneeded ? (unsigned char)rng_next(seed) : real[j];
	}
	st->dropped += dropped;
	st->full_len += full;
	st->stored_len += p->window_len;
	st->stored_zlen += p->window_zlen;
	if (full) {
		unsigned char *z = malloc(ZSTD_compressBound(W));
		size_t zl = ZSTD_compress(z, ZSTD_compressBound(W), real, full, 3);
		assert_false(ZSTD_isError(zl));
		st->full_zlen += zl < full ? zl : full;
		free(z);
	}

	size_t n = inflate_at(gz, p, real, full, out, W);
	assert_memory_equal(out, want, n);
	assert_true(n >= (span_len < W ? span_len : W));
	assert_int_equal(inflate_at(gz, p, garbage, full, out, W), n);
	assert_memory_equal(out, want, n);
	assert_int_equal(inflate_at(gz, p, win, p->window_len, out, W), n);
	assert_memory_equal(out, want, n);
	/* A window kept whole (when the builder could not follow the output far
	 * enough) may hold bytes nothing reaches; a sparse one may not. */
	bool is_sparse = skip > 0 || dropped > 0;
	for (int f = 0; f < 2 && is_sparse && p->window_len > 0; f++) {
		size_t j = (size_t)rng_below(seed, p->window_len), k = 0;
		while (k < p->window_len && win[(j + k) % p->window_len] == 0)
			k++;
		if (k == p->window_len)
			break; /* kept bytes that are all zero: nothing to flip */
		j = (j + k) % p->window_len;
		memcpy(flipped, win, p->window_len);
		flipped[j] ^= 0x5a;
		assert_int_equal(inflate_at(gz, p, flipped, p->window_len, out, W), n);
		if (memcmp(out, want, n) == 0)
			fail_msg("checkpoint at out %llu keeps window byte %zu of %u, which no "
				 "output byte reaches",
				 (unsigned long long)p->out, j, p->window_len);
	}
	free(garbage);
	free(out);
	free(flipped);
}

/* Every structural promise of the index, checked against the boundaries
 * the scanner reported and the full stream. `span` is the periodic
 * distance, or 0 when hints make the periodic rule uncheckable. */
static void check_index_stats(const struct built *res, const struct gzt_buf *gz,
			      const struct gzt_buf *ref, uint64_t span, struct window_stats *st)
{
	const struct clip_gz_index *ix = res->index;
	uint64_t seed = gz->len;
	unsigned char *win = malloc(CLIP_GZ_WINDOW);
	assert_int_equal(ix->usize, ref->len);
	if (ref->len > 0) {
		assert_true(ix->count > 0);
		assert_int_equal(ix->points[0].out, 0);
	}
	size_t bi = 0;
	uint64_t member_out = 0;
	for (size_t i = 0; i < ix->count; i++) {
		const struct clip_gz_point *p = &ix->points[i];
		assert_true(p->out < ix->usize); /* no useless checkpoint at the end */
		if (i > 0)
			assert_true(p->out > ix->points[i - 1].out);
		/* It is one of the reported boundaries; track member starts. */
		while (bi < res->nbounds && res->bounds[bi].in < p->in) {
			if (res->bounds[bi].member_start)
				member_out = res->bounds[bi].out;
			bi++;
		}
		assert_true(bi < res->nbounds);
		assert_int_equal(res->bounds[bi].in, p->in);
		assert_int_equal(res->bounds[bi].out, p->out);
		assert_int_equal(res->bounds[bi].bits, p->bits);
		if (res->bounds[bi].member_start)
			member_out = p->out;

		/* Window: the member-local 32 KiB before the point, as much of
		 * it as the span reaches. */
		uint64_t full = p->out - member_out;
		if (full > CLIP_GZ_WINDOW)
			full = CLIP_GZ_WINDOW;
		assert_true(p->window_len <= full);
		decode_window(p, win);
		uint64_t next_out = i + 1 < ix->count ? ix->points[i + 1].out : ix->usize;
		check_window(gz, ref, p, next_out - p->out, (size_t)full, win, st, &seed);

		/* The digest of the stored window. */
		uint64_t s0 = clip_gz_span_start(ix, i), s1 = clip_gz_span_end(ix, i);
		assert_true(s0 < s1 && s1 <= gz->len);
		unsigned char md[32];
		sha256(p->window_z, p->window_zlen, md);
		assert_memory_equal(md, p->window_sha256, 32);
	}
	/* The digest of every piece of the compressed stream. */
	assert_true(ix->piece_bytes >= CLIP_GZ_MIN_PIECE_BYTES);
	assert_int_equal(ix->npieces, (gz->len + ix->piece_bytes - 1) / ix->piece_bytes);
	for (size_t k = 0; k < ix->npieces; k++) {
		size_t a = k * ix->piece_bytes;
		size_t n = gz->len - a < ix->piece_bytes ? gz->len - a : ix->piece_bytes;
		unsigned char md[32];
		sha256(gz->p + a, n, md);
		assert_memory_equal(md, ix->piece_sha256 + 32 * k, 32);
	}
	/* Every non-empty member starts with a checkpoint, and (without hints)
	 * no boundary that the periodic rule wants was skipped. */
	for (size_t k = 0; k < res->nbounds; k++) {
		const struct clip_gz_boundary *bd = &res->bounds[k];
		ssize_t at = clip_gz_index_find(ix, bd->out);
		if (bd->member_start && bd->out < ix->usize) {
			assert_true(at >= 0);
			assert_int_equal(ix->points[at].out, bd->out);
		}
		if (span && at >= 0 && bd->out < ix->usize && bd->out - ix->points[at].out >= span)
			fail_msg(
				"boundary at out %llu skipped (last checkpoint at %llu, span %llu)",
				(unsigned long long)bd->out, (unsigned long long)ix->points[at].out,
				(unsigned long long)span);
	}
	free(win);
}

static void check_index(const struct built *res, const struct gzt_buf *gz,
			const struct gzt_buf *ref, uint64_t span)
{
	struct window_stats st = { 0 };
	check_index_stats(res, gz, ref, span, &st);
}

/* A copy of `ix` as archives of format 1 and 2 have it: no piece digests,
 * a whole-span digest per checkpoint. Windows stay borrowed from `ix`. */
static struct clip_gz_index *legacy_copy(const struct clip_gz_index *ix, const struct gzt_buf *gz)
{
	struct clip_gz_index *l = calloc(1, sizeof(*l));
	*l = (struct clip_gz_index){ .csize = ix->csize, .usize = ix->usize, .count = ix->count };
	l->points = calloc(ix->count ? ix->count : 1, sizeof(*l->points));
	l->owns_points = true;
	unsigned char *win = malloc(CLIP_GZ_WINDOW);
	for (size_t i = 0; i < ix->count; i++) {
		l->points[i] = ix->points[i];
		memset(l->points[i].window_sha256, 0, 32);
		decode_window(&ix->points[i], win);
		uint64_t s0 = clip_gz_span_start(ix, i), s1 = clip_gz_span_end(ix, i);
		span_digest(win, ix->points[i].window_len, gz->p + s0, (size_t)(s1 - s0),
			    l->points[i].span_sha256);
	}
	free(win);
	return l;
}

static void check_one_read(const struct clip_gz_index *ix, struct memsrc *src,
			   const struct gzt_buf *ref, uint64_t off, size_t len,
			   enum clip_gz_inflater inflater, unsigned char *buf)
{
	struct clip_blob_source source = { .pread = mem_pread,
					   .opaque = src,
					   .map = src->map ? mem_map : NULL };
	struct clip_gz_read_stats st = { 0 };
	struct clip_err err = { 0 };
	memset(buf, 0xa5, len + 16);
	ssize_t n = clip_gz_index_read_with(ix, &source, buf, len, off, inflater, &st, &err);
	size_t expect = off < ref->len ? (ref->len - off < len ? ref->len - off : len) : 0;
	if (n < 0)
		fail_msg("read(%llu, %zu) with %s: %s", (unsigned long long)off, len,
			 inflater == CLIP_GZ_INFLATER_ZLIB ? "zlib" : "isal", err.msg);
	assert_int_equal((size_t)n, expect);
	if (expect) {
		assert_memory_equal(buf, ref->p + off, expect);
		assert_true(st.spans >= 1);
		assert_true(st.inflated_bytes >= expect);
		assert_true(st.compressed_bytes > 0);
	}
	for (size_t i = expect; i < len + 16; i++)
		if (buf[i] != 0xa5)
			fail_msg("read(%llu, %zu) wrote past its result at %zu",
				 (unsigned long long)off, len, i);
}

/* `n` random reads (some past EOF, some around checkpoints and spans), each
 * with ISA-L, every third one also with zlib, and every fourth also through
 * the whole-span digests of older archives. */
static void check_reads(const struct clip_gz_index *ix, const struct gzt_buf *gz,
			const struct gzt_buf *ref, unsigned n, uint64_t seed)
{
	struct clip_gz_index *legacy = legacy_copy(ix, gz);
	struct memsrc src = { .p = gz->p, .len = gz->len };
	size_t maxlen = 300 * KiB;
	unsigned char *buf = malloc(maxlen + 64 * KiB + 16);
	uint64_t s = seed;
	for (unsigned r = 0; r < n; r++) {
		uint64_t off;
		size_t len = (size_t)rng_below(&s, maxlen + 1);
		unsigned kind = (unsigned)rng_below(&s, 20);
		if (kind < 12 || ix->count == 0) {
			off = rng_below(&s, ref->len + 1000);
		} else if (kind < 15) {
			const struct clip_gz_point *p = &ix->points[rng_below(&s, ix->count)];
			int64_t d = (int64_t)rng_below(&s, 601) - 300;
			off = (int64_t)p->out + d < 0 ? 0 : (uint64_t)((int64_t)p->out + d);
		} else if (kind < 17) {
			off = ref->len - (ref->len < 2000 ? ref->len : rng_below(&s, 2000)) +
			      rng_below(&s, 10);
		} else {
			/* exactly one span, or the two bytes around a span edge */
			size_t i = (size_t)rng_below(&s, ix->count);
			uint64_t a = ix->points[i].out;
			uint64_t z = i + 1 < ix->count ? ix->points[i + 1].out : ix->usize;
			if (kind == 17 && z - a <= maxlen + 64 * KiB) {
				off = a;
				len = (size_t)(z - a);
			} else {
				off = a ? a - 1 : 0;
				len = 2;
			}
		}
		src.map = r % 2 == 1; /* half the reads take the bytes mapped */
		check_one_read(ix, &src, ref, off, len, CLIP_GZ_INFLATER_ISAL, buf);
		if (r % 3 == 0)
			check_one_read(ix, &src, ref, off, len, CLIP_GZ_INFLATER_ZLIB, buf);
		if (r % 4 == 1)
			check_one_read(legacy, &src, ref, off, len, CLIP_GZ_INFLATER_ISAL, buf);
	}
	clip_gz_index_free(legacy);
	/* A source that returns little at a time behaves the same. */
	src.map = false;
	src.dribble = 777;
	for (unsigned r = 0; r < 10; r++)
		check_one_read(ix, &src, ref, rng_below(&s, ref->len + 1), 100 * KiB,
			       CLIP_GZ_INFLATER_ISAL, buf);
	free(buf);
}

/* Index `gz` with 64 KiB spans, check its structure and many reads. */
static void property(const char *what, const struct gzt_buf *gz, unsigned nreads)
{
	struct gzt_buf ref = { 0 };
	struct built res;
	ref_gunzip(&ref, gz);
	/* Pieces much smaller than spans, so that reads cross many. */
	struct build_opts o = {
		.span = 64 * KiB, .threshold = UINT64_MAX, .seed = gz->len, .piece = 4 * KiB
	};
	build(gz, &o, &res);
	assert_int_equal(res.out.len, ref.len);
	assert_memory_equal(res.out.p, ref.p, ref.len);
	struct window_stats st = { 0 };
	check_index_stats(&res, gz, &ref, o.span, &st);
	print_message("%-14s usize %9zu csize %9zu boundaries %6zu checkpoints %5zu, windows "
		      "%7llu -> %7llu bytes (%llu -> %llu stored)\n",
		      what, ref.len, gz->len, res.nbounds, res.index->count,
		      (unsigned long long)st.full_len, (unsigned long long)st.stored_len,
		      (unsigned long long)st.full_zlen, (unsigned long long)st.stored_zlen);
	/* The stored windows are not the real ones: some bytes were dropped. */
	if (st.full_len > 0)
		assert_true(st.dropped > 0 || st.stored_len < st.full_len);
	check_reads(res.index, gz, &ref, nreads, 42);
	built_free(&res);
	gzt_buf_free(&ref);
}

static size_t data_size(void)
{
	return quick ? 1 * MiB : 4 * MiB;
}

/* ---- tests --------------------------------------------------------------- */

static void test_find(void **state)
{
	(void)state;
	struct clip_gz_point pts[5] = {
		{ .out = 10 }, { .out = 20 }, { .out = 20 }, { .out = 20 }, { .out = 30 }
	};
	struct clip_gz_index ix = { .count = 5, .points = pts, .usize = 100 };
	struct clip_gz_index empty = { .count = 0, .points = NULL };
	struct clip_gz_index empty2 = { .count = 0, .points = pts };
	assert_int_equal(clip_gz_index_find(&empty, 0), -1);
	assert_int_equal(clip_gz_index_find(&empty2, 50), -1);
	assert_int_equal(clip_gz_index_find(&ix, 0), -1);
	assert_int_equal(clip_gz_index_find(&ix, 9), -1);
	assert_int_equal(clip_gz_index_find(&ix, 10), 0);
	assert_int_equal(clip_gz_index_find(&ix, 19), 0);
	assert_int_equal(clip_gz_index_find(&ix, 20), 3); /* latest among equal */
	assert_int_equal(clip_gz_index_find(&ix, 29), 3);
	assert_int_equal(clip_gz_index_find(&ix, 30), 4);
	assert_int_equal(clip_gz_index_find(&ix, UINT64_MAX), 4);
	struct clip_gz_index one = { .count = 1, .points = pts };
	assert_int_equal(clip_gz_index_find(&one, 9), -1);
	assert_int_equal(clip_gz_index_find(&one, 10), 0);
	assert_int_equal(clip_gz_index_find(&one, 11), 0);
}

static void test_zlib_levels(void **state)
{
	(void)state;
	struct gzt_buf data = { 0 };
	gen_data(&data, data_size(), 1);
	for (int level = 1; level <= 9; level += 8) {
		struct gzt_buf gz = { 0 };
		char what[32];
		gzip_zlib(&gz, data.p, data.len, level);
		snprintf(what, sizeof(what), "zlib -%d", level);
		property(what, &gz, 1200);
		gzt_buf_free(&gz);
	}
	gzt_buf_free(&data);
}

static void test_tools(void **state)
{
	(void)state;
	static const struct {
		const char *tool, *args;
	} tools[] = {
		{ "gzip", "-1" },  { "gzip", "-9" },  { "pigz", "-6" },	 { "igzip", "-0" },
		{ "igzip", "-1" }, { "igzip", "-2" }, { "igzip", "-3" },
	};
	struct gzt_buf data = { 0 };
	char missing[64] = ""; /* " pigz igzip": each missing tool once */
	gen_data(&data, data_size(), 2);
	make_tmpdir();
	for (size_t i = 0; i < sizeof(tools) / sizeof(tools[0]); i++) {
		struct gzt_buf gz = { 0 };
		char what[32];
		if (!gzip_tool(&gz, tools[i].tool, tools[i].args, data.p, data.len)) {
			snprintf(what, sizeof(what), " %s", tools[i].tool);
			if (strstr(missing, what) == NULL)
				strncat(missing, what, sizeof(missing) - strlen(missing) - 1);
			continue;
		}
		snprintf(what, sizeof(what), "%s %s", tools[i].tool, tools[i].args);
		property(what, &gz, 1000);
		gzt_buf_free(&gz);
	}
	remove_tmpdir();
	gzt_buf_free(&data);
	/* The installed tools were tested; the run still says that not all were. */
	if (missing[0] != '\0') {
		print_message("skipped: not installed:%s\n", missing);
		skip();
	}
}

/* Members: zlib -6, 37 zero bytes, an empty member, gzip -9 (or zlib -9),
 * and a small third one right after without padding. */
static void make_multimember(struct gzt_buf *gz, bool use_tool)
{
	struct gzt_buf a = { 0 }, b = { 0 }, c = { 0 };
	gen_data(&a, data_size() / 2, 3);
	gen_data(&b, data_size() / 2 + 12345, 4);
	gen_data(&c, 70000, 5);
	gzip_zlib(gz, a.p, a.len, 6);
	unsigned char zeros[37] = { 0 };
	gzt_buf_add(gz, zeros, sizeof(zeros));
	gzip_zlib(gz, "", 0, 6);
	bool tool = false;
	if (use_tool) {
		make_tmpdir();
		tool = gzip_tool(gz, "gzip", "-9", b.p, b.len);
		remove_tmpdir();
		if (!tool)
			print_message("gzip not installed: zlib -9 instead\n");
	}
	if (!tool)
		gzip_zlib(gz, b.p, b.len, 9);
	gzip_zlib(gz, c.p, c.len, 1);
	gzt_buf_free(&a);
	gzt_buf_free(&b);
	gzt_buf_free(&c);
}

static void test_multimember(void **state)
{
	(void)state;
	struct gzt_buf gz = { 0 };
	make_multimember(&gz, true);
	property("multi-member", &gz, 1200);

	/* Every member's first checkpoint has an empty window. */
	struct built res;
	struct build_opts o = { .span = 64 * KiB, .threshold = UINT64_MAX, .seed = 9 };
	build(&gz, &o, &res);
	size_t starts = 0;
	for (size_t k = 0; k < res.nbounds; k++) {
		if (!res.bounds[k].member_start)
			continue;
		starts++;
		ssize_t at = clip_gz_index_find(res.index, res.bounds[k].out);
		if (res.bounds[k].out < res.index->usize)
			assert_int_equal(res.index->points[at].window_len, 0);
	}
	assert_int_equal(starts, 4);
	built_free(&res);
	gzt_buf_free(&gz);
}

static void test_empty_and_tiny(void **state)
{
	(void)state;
	struct clip_err err = { 0 };
	unsigned char buf[16];
	for (size_t size = 0; size <= 1; size++) {
		struct gzt_buf gz = { 0 }, ref = { 0 };
		struct built res;
		gzip_zlib(&gz, "A", size, 6);
		ref_gunzip(&ref, &gz);
		struct build_opts o = { .span = 1, .threshold = 0, .seed = 1 };
		struct hint h = { 0, 1 };
		o.hints = &h;
		o.nhints = 1;
		build(&gz, &o, &res);
		check_index(&res, &gz, &ref, 0);
		assert_int_equal(res.index->usize, size);
		assert_int_equal(res.index->count, size ? 1 : 0);
		struct memsrc m = { .p = gz.p, .len = gz.len };
		struct clip_blob_source src = { .pread = mem_pread, .opaque = &m };
		for (uint64_t off = 0; off < 3; off++) {
			memset(buf, 0x11, sizeof(buf));
			ssize_t n = clip_gz_index_read(res.index, &src, buf, 4, off, NULL, &err);
			assert_int_equal(n, off < size ? 1 : 0);
			if (n == 1)
				assert_int_equal(buf[0], 'A');
			n = clip_gz_read_from_start(&src, buf, 4, off, NULL, &err);
			assert_int_equal(n, off < size ? 1 : 0);
		}
		assert_int_equal(clip_gz_index_read(res.index, &src, buf, 0, 0, NULL, &err), 0);
		built_free(&res);
		gzt_buf_free(&gz);
		gzt_buf_free(&ref);
	}
}

/* Every span read exactly, and the two bytes across every span edge, with
 * both inflaters. */
static void test_span_edges(void **state)
{
	(void)state;
	struct gzt_buf data = { 0 }, gz = { 0 }, ref = { 0 };
	struct built res;
	gen_data(&data, data_size(), 6);
	gzip_zlib(&gz, data.p, data.len, 6);
	ref_gunzip(&ref, &gz);
	struct build_opts o = { .span = 32 * KiB, .threshold = UINT64_MAX, .seed = 3 };
	build(&gz, &o, &res);
	check_index(&res, &gz, &ref, o.span);
	struct clip_gz_index *ix = res.index;
	struct memsrc m = { .p = gz.p, .len = gz.len };
	unsigned char *buf = malloc(data_size() + 64);
	for (size_t i = 0; i < ix->count; i++) {
		uint64_t a = ix->points[i].out;
		uint64_t z = i + 1 < ix->count ? ix->points[i + 1].out : ix->usize;
		for (int inf = 0; inf < 2; inf++) {
			enum clip_gz_inflater k =
				inf ? CLIP_GZ_INFLATER_ZLIB : CLIP_GZ_INFLATER_ISAL;
			check_one_read(ix, &m, &ref, a, (size_t)(z - a), k, buf);
			check_one_read(ix, &m, &ref, z - 1, 1, k, buf);
			if (a > 0)
				check_one_read(ix, &m, &ref, a - 1, 2, k, buf);
		}
	}
	/* Reading a span fetches that span, widened to whole pieces, once;
	 * through whole-span digests, exactly the span. */
	if (ix->count > 2) {
		struct clip_blob_source src = { .pread = mem_pread, .opaque = &m };
		struct clip_gz_read_stats st = { 0 };
		struct clip_err err = { 0 };
		m.calls = 0;
		uint64_t a = ix->points[1].out;
		assert_int_equal(clip_gz_index_read(ix, &src, buf, 10, a + 5, &st, &err), 10);
		assert_int_equal(m.calls, 1);
		assert_int_equal(st.spans, 1);
		uint64_t s0 = clip_gz_span_start(ix, 1), s1 = clip_gz_span_end(ix, 1);
		uint64_t piece = ix->piece_bytes;
		uint64_t lo = s0 / piece * piece, hi = (s1 + piece - 1) / piece * piece;
		if (hi > ix->csize)
			hi = ix->csize;
		assert_int_equal(st.compressed_bytes, hi - lo);
		assert_int_equal(st.inflated_bytes, 15);

		struct clip_gz_index *legacy = legacy_copy(ix, &gz);
		memset(&st, 0, sizeof(st));
		m.calls = 0;
		assert_int_equal(clip_gz_index_read(legacy, &src, buf, 10, a + 5, &st, &err), 10);
		assert_int_equal(m.calls, 1);
		assert_int_equal(st.compressed_bytes, s1 - s0);
		clip_gz_index_free(legacy);
	}
	free(buf);
	built_free(&res);
	gzt_buf_free(&data);
	gzt_buf_free(&gz);
	gzt_buf_free(&ref);
}

static void test_big_zeros_and_random(void **state)
{
	(void)state;
	size_t size = quick ? 8 * MiB : 64 * MiB;
	for (int kind = 0; kind < 2; kind++) {
		struct gzt_buf data = { 0 }, gz = { 0 };
		gzt_buf_reserve(&data, size);
		data.len = size;
		if (kind == 0) {
			memset(data.p, 0, size);
		} else {
			uint64_t s = 77;
			for (size_t i = 0; i + 8 <= size; i += 8) {
				uint64_t v = rng_next(&s);
				memcpy(data.p + i, &v, 8);
			}
		}
		gzip_zlib(&gz, data.p, data.len, kind == 0 ? 6 : 1);
		gzt_buf_free(&data);
		property(kind == 0 ? "64M zeros" : "64M random", &gz, quick ? 200 : 400);
		gzt_buf_free(&gz);
	}
}

/* ---- one huge deflate block, written by hand ---------------------------- */

struct bitw {
	struct gzt_buf *out;
	uint64_t acc;
	unsigned n;
};

static void bits_put(struct bitw *w, uint32_t v, unsigned n)
{
	w->acc |= (uint64_t)v << w->n;
	w->n += n;
	while (w->n >= 8) {
		unsigned char c = (unsigned char)w->acc;
		gzt_buf_add(w->out, &c, 1);
		w->acc >>= 8;
		w->n -= 8;
	}
}

static void huff_put(struct bitw *w, uint32_t code, unsigned n)
{
	uint32_t r = 0;
	for (unsigned i = 0; i < n; i++)
		r |= ((code >> i) & 1) << (n - 1 - i);
	bits_put(w, r, n);
}

static void fixed_litlen(struct bitw *w, unsigned sym)
{
	if (sym < 144)
		huff_put(w, 0x30 + sym, 8);
	else if (sym < 256)
		huff_put(w, 0x190 + sym - 144, 9);
	else if (sym < 280)
		huff_put(w, sym - 256, 7);
	else
		huff_put(w, 0xc0 + sym - 280, 8);
}

static void fixed_match(struct bitw *w, unsigned len, unsigned dist)
{
	static const uint16_t lbase[29] = { 3,	4,  5,	6,   7,	  8,   9,   10,	 11, 13,
					    15, 17, 19, 23,  27,  31,  35,  43,	 51, 59,
					    67, 83, 99, 115, 131, 163, 195, 227, 258 };
	static const uint8_t lext[29] = { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
					  2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0 };
	static const uint16_t dbase[30] = { 1,	  2,	3,    4,     5,	    7,	  9,	13,
					    17,	  25,	33,   49,    65,    97,	  129,	193,
					    257,  385,	513,  769,   1025,  1537, 2049, 3073,
					    4097, 6145, 8193, 12289, 16385, 24577 };
	static const uint8_t dext[30] = { 0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
					  6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13 };
	unsigned l = 28;
	while (lbase[l] > len)
		l--;
	if (len == 258)
		l = 28;
	else if (l == 28)
		l = 27;
	fixed_litlen(w, 257 + l);
	bits_put(w, len - lbase[l], lext[l]);
	unsigned d = 29;
	while (dbase[d] > dist)
		d--;
	huff_put(w, d, 5);
	bits_put(w, dist - dbase[d], dext[d]);
}

/* A gzip member: `pre` bytes compressed by zlib and sync-flushed, then
 * `empties` empty stored blocks, then one fixed-Huffman block producing `huge`
 * bytes (literals and matches reaching back into `pre`), then an empty final
 * block. */
static void make_huge_block(struct gzt_buf *gz, size_t pre, size_t empties, size_t huge,
			    uint64_t seed)
{
	static const unsigned char hdr[10] = { 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3 };
	struct gzt_buf data = { 0 }, body = { 0 };
	gen_data(&data, pre, seed);
	gzt_buf_add(gz, hdr, sizeof(hdr));

	z_stream z;
	memset(&z, 0, sizeof(z));
	assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
	size_t bound = deflateBound(&z, (uLong)pre) + 64;
	gzt_buf_reserve(&body, bound);
	z.next_in = data.p;
	z.avail_in = (uInt)pre;
	z.next_out = body.p;
	z.avail_out = (uInt)bound;
	assert_int_equal(deflate(&z, Z_SYNC_FLUSH), Z_OK);
	body.len = bound - z.avail_out;
	deflateEnd(&z);
	/* After a sync flush the stream is byte-aligned: an empty stored block
	 * is a zero header byte (not final, stored), LEN 0 and NLEN 0xffff. */
	static const unsigned char empty_stored[5] = { 0, 0, 0, 0xff, 0xff };
	for (size_t e = 0; e < empties; e++)
		gzt_buf_add(&body, empty_stored, sizeof(empty_stored));

	struct bitw w = { .out = &body };
	uint64_t s = seed, produced = pre;
	bits_put(&w, 0, 1); /* not final */
	bits_put(&w, 1, 2); /* fixed codes */
	size_t made = 0;
	while (made < huge) {
		/* Mostly literals, so that the block is megabytes compressed too. */
		if (produced >= 3 && huge - made >= 258 && rng_below(&s, 16) == 0) {
			unsigned len = 3 + (unsigned)rng_below(&s, rng_below(&s, 8) ? 32 : 256);
			uint64_t maxd = produced < 32768 ? produced : 32768;
			unsigned dist = 1 + (unsigned)rng_below(&s, maxd);
			fixed_match(&w, len, dist);
			made += len;
			produced += len;
		} else {
			fixed_litlen(&w, 'a' + (unsigned)rng_below(&s, 26));
			made++;
			produced++;
		}
	}
	fixed_litlen(&w, 256);
	bits_put(&w, 1, 1); /* final, empty */
	bits_put(&w, 1, 2);
	fixed_litlen(&w, 256);
	if (w.n)
		bits_put(&w, 0, 8 - w.n);

	/* Trailer from the raw stream's own decompression. */
	struct gzt_buf plain = { 0 };
	memset(&z, 0, sizeof(z));
	assert_int_equal(inflateInit2(&z, -15), Z_OK);
	gzt_buf_reserve(&plain, pre + huge);
	z.next_in = body.p;
	z.avail_in = (uInt)body.len;
	z.next_out = plain.p;
	z.avail_out = (uInt)(pre + huge);
	assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
	assert_int_equal(z.avail_out, 0);
	inflateEnd(&z);
	assert_memory_equal(plain.p, data.p, pre);
	uint32_t crc = (uint32_t)crc32(0, plain.p, (uInt)(pre + huge));
	uint32_t isize = (uint32_t)(pre + huge);
	unsigned char trl[8];
	for (int i = 0; i < 4; i++) {
		trl[i] = (unsigned char)(crc >> (8 * i));
		trl[4 + i] = (unsigned char)(isize >> (8 * i));
	}
	gzt_buf_add(gz, body.p, body.len);
	gzt_buf_add(gz, trl, sizeof(trl));
	gzt_buf_free(&data);
	gzt_buf_free(&body);
	gzt_buf_free(&plain);
}

static void test_huge_block(void **state)
{
	(void)state;
	size_t pre = 200 * KiB, huge = quick ? 5 * MiB : 8 * MiB;
	struct gzt_buf gz = { 0 }, ref = { 0 };
	make_huge_block(&gz, pre, 0, huge, 11);
	ref_gunzip(&ref, &gz);
	/* Well past the builder's 1 MiB hold-back, so that it has to hash both
	 * possible futures of the boundary before the block. */
	assert_true(gz.len > 3 * MiB / 2);
	property("huge block", &gz, 100);

	/* A large file inside the block wants the boundary at its start, which
	 * is only known to be the right one when the block ends; without the
	 * hint that boundary is dropped after all. */
	struct hint h = { pre + 1000, 10 * MiB };
	for (int mode = 0; mode < 4; mode++) {
		struct built res;
		struct build_opts o = { .span = UINT64_MAX,
					.threshold = MiB,
					.hints = &h,
					.nhints = mode < 3,
					.mode = (enum hint_mode)(mode % 3),
					.seed = 5 };
		build(&gz, &o, &res);
		check_index(&res, &gz, &ref, 0);
		if (mode < 3) {
			assert_int_equal(res.index->count, 2);
			assert_int_equal(res.index->points[1].out, pre);
			/* Its span reaches into the 200 KiB before it, not all of it. */
			assert_true(res.index->points[1].window_len > 0);
		} else {
			assert_int_equal(res.index->count, 1);
		}
		check_reads(res.index, &gz, &ref, 30, 8);
		built_free(&res);
	}
	gzt_buf_free(&gz);
	gzt_buf_free(&ref);
}

/* Output that never reaches back past its checkpoint (random data, which
 * zlib stores as is) needs no window at all, even right after text. */
static void test_unreferenced_window(void **state)
{
	(void)state;
	size_t text = 256 * KiB, random = quick ? 1 * MiB : 2 * MiB;
	struct gzt_buf data = { 0 }, gz = { 0 }, ref = { 0 };
	gen_data(&data, text, 51);
	gzt_buf_reserve(&data, random);
	uint64_t s = 52;
	for (size_t i = 0; i < random; i++)
		data.p[data.len + i] = (unsigned char)rng_next(&s);
	data.len += random;
	gen_data(&data, data.len + text, 53); /* more text, copying from all that */
	gzip_zlib(&gz, data.p, data.len, 6);
	ref_gunzip(&ref, &gz);

	struct built res;
	struct build_opts o = { .span = 64 * KiB, .threshold = UINT64_MAX, .seed = 4 };
	build(&gz, &o, &res);
	check_index(&res, &gz, &ref, o.span);
	size_t empty = 0, text_windows = 0;
	for (size_t i = 0; i < res.index->count; i++) {
		const struct clip_gz_point *p = &res.index->points[i];
		/* Well inside the random part: stored blocks all the way. */
		if (p->out > text && p->out + 64 * KiB <= text + random) {
			assert_int_equal(p->window_len, 0);
			assert_int_equal(p->window_zlen, 0);
			empty++;
		} else if (p->window_len > 0) {
			text_windows++;
		}
	}
	print_message("random part: %zu checkpoints with an empty window, %zu others with one\n",
		      empty, text_windows);
	assert_true(empty >= random / (128 * KiB));
	assert_true(text_windows > 0);
	check_reads(res.index, &gz, &ref, 300, 6);
	built_free(&res);
	gzt_buf_free(&data);
	gzt_buf_free(&gz);
	gzt_buf_free(&ref);
}

/* The builder keeps at most 256 KiB of compressed bytes for a checkpoint's
 * first 32 KiB of output. Empty stored blocks (5 bytes each, no output)
 * right after a checkpoint: with 50 KB of them its window is still made
 * sparse, with 300 KB it is kept whole. Both read right. */
static void test_lookahead_cap(void **state)
{
	(void)state;
	const size_t pre = 100 * KiB;
	const size_t empties[2] = { 10000, 60000 };
	unsigned char *win = malloc(CLIP_GZ_WINDOW);
	for (int c = 0; c < 2; c++) {
		struct gzt_buf gz = { 0 }, ref = { 0 };
		make_huge_block(&gz, pre, empties[c], 64 * KiB, 61 + (uint64_t)c);
		ref_gunzip(&ref, &gz);
		struct built res;
		struct build_opts o = { .span = pre, .threshold = UINT64_MAX, .seed = 7 };
		build(&gz, &o, &res);
		assert_true(res.nbounds > empties[c]);
		check_index(&res, &gz, &ref, o.span);
		ssize_t at = clip_gz_index_find(res.index, pre);
		assert_true(at >= 0);
		const struct clip_gz_point *p = &res.index->points[at];
		assert_int_equal(p->out, pre);
		decode_window(p, win);
		const unsigned char *real = ref.p + pre - CLIP_GZ_WINDOW;
		if (c == 0) {
			size_t skip = CLIP_GZ_WINDOW - p->window_len, zeroed = 0;
			for (size_t j = 0; j < p->window_len; j++)
				zeroed += win[j] != real[skip + j];
			assert_true(skip > 0 || zeroed > 0);
		} else {
			assert_int_equal(p->window_len, CLIP_GZ_WINDOW);
			assert_memory_equal(win, real, CLIP_GZ_WINDOW);
		}
		check_reads(res.index, &gz, &ref, 100, 9);
		built_free(&res);
		gzt_buf_free(&gz);
		gzt_buf_free(&ref);
	}
	free(win);
}

/* gzip `data` with zlib, sync-flushing every `every` bytes. */
static void gzip_flushed(struct gzt_buf *out, const void *data, size_t len, size_t every)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
	size_t bound = deflateBound(&z, (uLong)len) + (len / every + 1) * 16 + 64;
	gzt_buf_reserve(out, bound);
	z.next_out = out->p + out->len;
	z.avail_out = (uInt)bound;
	for (size_t pos = 0; pos < len; pos += every) {
		size_t n = len - pos < every ? len - pos : every;
		z.next_in = (unsigned char *)data + pos;
		z.avail_in = (uInt)n;
		int flush = pos + n == len ? Z_FINISH : Z_SYNC_FLUSH;
		assert_int_equal(deflate(&z, flush), flush == Z_FINISH ? Z_STREAM_END : Z_OK);
	}
	out->len += bound - z.avail_out;
	deflateEnd(&z);
}

/* Checkpoints 1000 bytes apart (a tiny span over sync-flushed blocks): more
 * windows wait for their 32 KiB of output than the builder holds, so the
 * oldest are stored whole early; the last ones, stored at the end, are
 * sparse. Everything reads right. */
static void test_dense_checkpoints(void **state)
{
	(void)state;
	struct gzt_buf data = { 0 }, gz = { 0 }, ref = { 0 };
	gen_data(&data, quick ? 256 * KiB : 512 * KiB, 71);
	gzip_flushed(&gz, data.p, data.len, 1000);
	ref_gunzip(&ref, &gz);
	struct built res;
	struct build_opts o = { .span = 1, .threshold = UINT64_MAX, .seed = 8 };
	build(&gz, &o, &res);
	assert_true(res.index->count > data.len / 1000 - 2);
	check_index(&res, &gz, &ref, o.span);
	size_t whole = 0, sparse = 0;
	unsigned char *win = malloc(CLIP_GZ_WINDOW);
	for (size_t i = 0; i < res.index->count; i++) {
		const struct clip_gz_point *p = &res.index->points[i];
		if (p->out < CLIP_GZ_WINDOW)
			continue;
		decode_window(p, win);
		if (p->window_len == CLIP_GZ_WINDOW &&
		    memcmp(win, ref.p + p->out - CLIP_GZ_WINDOW, CLIP_GZ_WINDOW) == 0)
			whole++;
		else
			sparse++;
	}
	print_message("%zu checkpoints: %zu whole windows, %zu sparse\n", res.index->count, whole,
		      sparse);
	assert_true(whole > 0);
	assert_true(sparse > 0);
	check_reads(res.index, &gz, &ref, 200, 10);
	free(win);
	built_free(&res);
	gzt_buf_free(&data);
	gzt_buf_free(&gz);
	gzt_buf_free(&ref);
}

/* Last boundary at or before `d` among those recorded. */
static const struct clip_gz_boundary *boundary_before(const struct built *res, uint64_t d)
{
	const struct clip_gz_boundary *best = NULL;
	for (size_t k = 0; k < res->nbounds; k++)
		if (res->bounds[k].out <= d)
			best = &res->bounds[k];
	return best;
}

static int cmp_hint(const void *a, const void *b)
{
	const struct hint *x = a, *y = b;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static void test_large_file_hints(void **state)
{
	(void)state;
	struct gzt_buf data = { 0 }, gz = { 0 }, ref = { 0 };
	gen_data(&data, data_size(), 12);
	gzip_zlib(&gz, data.p, data.len, 6);
	ref_gunzip(&ref, &gz);

	/* Boundaries first, to aim hints at them, one byte before and after. */
	struct built plain;
	struct build_opts po = { .span = UINT64_MAX, .threshold = UINT64_MAX, .seed = 1 };
	build(&gz, &po, &plain);
	assert_int_equal(plain.index->count, 1);
	uint64_t s = 99;
	size_t nh = 0;
	struct hint hints[120];
	for (size_t k = 1; k < plain.nbounds && nh + 3 <= 60; k += 1 + rng_below(&s, 8)) {
		uint64_t o = plain.bounds[k].out;
		hints[nh++] = (struct hint){ o, 2 * MiB };
		hints[nh++] = (struct hint){ o ? o - 1 : 0, 2 * MiB };
		hints[nh++] = (struct hint){ o + 1, 100 }; /* small: no checkpoint */
	}
	while (nh < 100)
		hints[nh++] =
			(struct hint){ rng_below(&s, ref.len), rng_below(&s, 2) ? 5 * MiB : 1 };
	qsort(hints, nh, sizeof(hints[0]), cmp_hint);

	/* Expected with no periodic checkpoints: member start + the last
	 * boundary <= offset of every large file, except one at the end. */
	struct clip_gz_index *first = NULL;
	for (int mode = 0; mode < 3; mode++) {
		struct built res;
		struct build_opts o = { .span = UINT64_MAX,
					.threshold = MiB,
					.hints = hints,
					.nhints = nh,
					.mode = (enum hint_mode)mode,
					.seed = 7 + mode };
		build(&gz, &o, &res);
		check_index(&res, &gz, &ref, 0);
		size_t expect = 1;
		uint64_t last_out = 0;
		for (size_t i = 0; i < nh; i++) {
			if (hints[i].size <= MiB)
				continue;
			const struct clip_gz_boundary *bd = boundary_before(&res, hints[i].offset);
			assert_non_null(bd);
			ssize_t at = clip_gz_index_find(res.index, bd->out);
			assert_true(at >= 0);
			assert_int_equal(res.index->points[at].out, bd->out);
			if (bd->out != last_out && bd->out < ref.len) {
				expect++;
				last_out = bd->out;
			}
		}
		assert_int_equal(res.index->count, expect);
		/* The same checkpoints whenever the hints arrive. */
		if (mode == 0) {
			first = res.index;
			res.index = NULL;
		} else {
			assert_int_equal(res.index->count, first->count);
			for (size_t i = 0; i < first->count; i++) {
				assert_int_equal(res.index->points[i].in, first->points[i].in);
				assert_memory_equal(res.index->points[i].span_sha256,
						    first->points[i].span_sha256, 32);
			}
		}
		check_reads(first, &gz, &ref, 50, 3);
		built_free(&res);
	}
	clip_gz_index_free(first);

	/* With periodic checkpoints too, every large file still gets its own. */
	struct built res;
	struct build_opts o = { .span = 256 * KiB,
				.threshold = MiB,
				.hints = hints,
				.nhints = nh,
				.mode = HINTS_ON_TIME,
				.seed = 4 };
	build(&gz, &o, &res);
	check_index(&res, &gz, &ref, 0);
	for (size_t i = 0; i < nh; i++) {
		if (hints[i].size <= MiB)
			continue;
		const struct clip_gz_boundary *bd = boundary_before(&res, hints[i].offset);
		ssize_t at = clip_gz_index_find(res.index, bd->out);
		assert_int_equal(res.index->points[at].out, bd->out);
	}
	check_reads(res.index, &gz, &ref, 100, 5);
	built_free(&res);

	built_free(&plain);
	gzt_buf_free(&data);
	gzt_buf_free(&gz);
	gzt_buf_free(&ref);
}

/* The same boundaries and checkpoints however the stream is chunked, down
 * to one byte in, one byte out, one boundary per call. */
static void test_chunking(void **state)
{
	(void)state;
	struct gzt_buf data = { 0 }, gz = { 0 }, ref = { 0 };
	make_multimember(&gz, false);
	ref_gunzip(&ref, &gz);
	struct built a, b;
	struct build_opts o = { .span = 64 * KiB, .threshold = UINT64_MAX, .seed = 1 };
	build(&gz, &o, &a);
	o.tiny = true;
	build(&gz, &o, &b);
	assert_int_equal(a.nbounds, b.nbounds);
	for (size_t k = 0; k < a.nbounds; k++) {
		assert_int_equal(a.bounds[k].in, b.bounds[k].in);
		assert_int_equal(a.bounds[k].out, b.bounds[k].out);
		assert_int_equal(a.bounds[k].bits, b.bounds[k].bits);
		assert_int_equal(a.bounds[k].member_start, b.bounds[k].member_start);
	}
	assert_int_equal(a.index->count, b.index->count);
	for (size_t i = 0; i < a.index->count; i++) {
		assert_int_equal(a.index->points[i].in, b.index->points[i].in);
		assert_memory_equal(a.index->points[i].span_sha256, b.index->points[i].span_sha256,
				    32);
	}
	check_index(&b, &gz, &ref, o.span);
	built_free(&a);
	built_free(&b);
	gzt_buf_free(&data);
	gzt_buf_free(&gz);
	gzt_buf_free(&ref);
}

static void test_read_from_start(void **state)
{
	(void)state;
	struct gzt_buf gz = { 0 }, ref = { 0 };
	make_multimember(&gz, false);
	ref_gunzip(&ref, &gz);
	struct memsrc m = { .p = gz.p, .len = gz.len };
	struct clip_blob_source src = { .pread = mem_pread, .opaque = &m };
	unsigned char *buf = malloc(300 * KiB + 16);
	uint64_t s = 5;
	for (int r = 0; r < (quick ? 30 : 100); r++) {
		uint64_t off = rng_below(&s, ref.len + 1000);
		size_t len = (size_t)rng_below(&s, 300 * KiB);
		size_t expect = off < ref.len ? (ref.len - off < len ? ref.len - off : len) : 0;
		struct clip_gz_read_stats st = { 0 };
		struct clip_err err = { 0 };
		m.dribble = r % 2 ? 0 : 1000 + (size_t)rng_below(&s, 100000);
		memset(buf, 0x5a, len + 16);
		ssize_t n = clip_gz_read_from_start(&src, buf, len, off, &st, &err);
		if (n < 0)
			fail_msg("read_from_start: %s", err.msg);
		assert_int_equal((size_t)n, expect);
		assert_memory_equal(buf, ref.p + off, expect);
		for (size_t i = expect; i < len + 16; i++)
			assert_int_equal(buf[i], 0x5a);
		if (expect)
			assert_true(st.inflated_bytes >= off + expect);
	}
	free(buf);
	gzt_buf_free(&gz);
	gzt_buf_free(&ref);
}

/* ---- refining a span (clip optimize) ------------------------------------ */

static int cmp_point_out(const void *a, const void *b)
{
	const struct clip_gz_point *x = a, *y = b;
	return x->out < y->out ? -1 : x->out > y->out;
}

/* The index with `extra` points merged in (points owned, windows borrowed). */
static struct clip_gz_index *merged_index(const struct clip_gz_index *ix,
					  const struct clip_gz_point *extra, size_t nextra)
{
	struct clip_gz_index *m = calloc(1, sizeof(*m));
	*m = *ix;
	m->owned_storage = NULL;
	m->owned_pieces = NULL;
	m->count = ix->count + nextra;
	m->points = malloc(m->count * sizeof(*m->points));
	m->owns_points = true;
	memcpy(m->points, ix->points, ix->count * sizeof(*m->points));
	memcpy(m->points + ix->count, extra, nextra * sizeof(*m->points));
	qsort(m->points, m->count, sizeof(*m->points), cmp_point_out);
	return m;
}

/* New checkpoints inside spans land exactly on the boundaries asked for (the
 * last at or before, the first at or after, at least a window into the span),
 * are made the same way twice, read back byte-exact with the rest of the
 * index, and a flipped compressed byte is refused. */
static void test_refine(void **state)
{
	(void)state;
	struct gzt_buf gz = { 0 }, ref = { 0 };
	make_multimember(&gz, false);
	ref_gunzip(&ref, &gz);
	struct built res;
	build(&gz, &(struct build_opts){ .span = 1024 * KiB, .threshold = UINT64_MAX, .seed = 9 },
	      &res);
	const struct clip_gz_index *ix = res.index;
	struct memsrc m = { .p = gz.p, .len = gz.len };
	struct clip_blob_source src = { .pread = mem_pread, .opaque = &m };
	struct clip_gz_point *pts = NULL, *again = NULL;
	size_t npts = 0, nagain = 0, asked = 0;
	uint64_t s = 21;
	struct clip_err err = { 0 };
	for (size_t i = 0; i < ix->count; i++) {
		uint64_t a = ix->points[i].out;
		uint64_t z = i + 1 < ix->count ? ix->points[i + 1].out : ix->usize;
		if (z - a < 4 * CLIP_GZ_WINDOW)
			continue;
		struct clip_gz_want w[4];
		for (int k = 0; k < 4; k++)
			w[k] = (struct clip_gz_want){ a + rng_below(&s, z - a), k % 2 == 1 };
		size_t before = npts, picked[4];
		struct clip_gz_read_stats st = { 0 };
		if (clip_gz_index_refine(ix, &src, i, w, 4, &pts, &npts, picked, &st, &err) < 0)
			fail_msg("refine span %zu: %s", i, err.msg);
		assert_int_equal(
			clip_gz_index_refine(ix, &src, i, w, 4, &again, &nagain, NULL, NULL, &err),
			0);
		assert_int_equal(st.spans, 1);
		asked += 4;
		/* Each new point is a boundary the scanner saw, inside the span. */
		for (size_t p = before; p < npts; p++) {
			bool seen = false;
			for (size_t b = 0; b < res.nbounds && !seen; b++)
				seen = res.bounds[b].in == pts[p].in &&
				       res.bounds[b].out == pts[p].out &&
				       res.bounds[b].bits == pts[p].bits;
			assert_true(seen);
			assert_true(pts[p].out >= a + CLIP_GZ_WINDOW && pts[p].out < z);
		}
		/* Each want got the nearest usable boundary on its side. */
		for (int k = 0; k < 4; k++) {
			const struct clip_gz_boundary *best = NULL;
			for (size_t b = 0; b < res.nbounds; b++) {
				const struct clip_gz_boundary *bd = &res.bounds[b];
				if (bd->out < a + CLIP_GZ_WINDOW || bd->out >= z)
					continue;
				if (!w[k].after && bd->out <= w[k].at)
					best = bd;
				if (w[k].after && bd->out >= w[k].at && best == NULL)
					best = bd;
			}
			if (best == NULL)
				assert_int_equal(picked[k], SIZE_MAX);
			else
				assert_int_equal(pts[picked[k]].out, best->out);
		}
	}
	assert_true(asked > 0 && npts > 0);
	assert_int_equal(npts, nagain);
	for (size_t p = 0; p < npts; p++) {
		assert_int_equal(pts[p].out, again[p].out);
		assert_int_equal(pts[p].window_zlen, again[p].window_zlen);
		assert_memory_equal(pts[p].window_z, again[p].window_z, pts[p].window_zlen);
	}
	struct clip_gz_index *merged = merged_index(ix, pts, npts);
	check_reads(merged, &gz, &ref, quick ? 60 : 200, 77);
	clip_gz_index_free(merged);

	/* A flipped compressed byte in the span is caught before inflating. */
	size_t i = ix->count / 2;
	uint64_t mid = (clip_gz_span_start(ix, i) + clip_gz_span_end(ix, i)) / 2;
	gz.p[mid] ^= 0x10;
	struct clip_gz_want w = { ix->points[i].out + 100 * KiB, false };
	struct clip_gz_point *bad = NULL;
	size_t nbad = 0;
	assert_int_equal(clip_gz_index_refine(ix, &src, i, &w, 1, &bad, &nbad, NULL, NULL, &err),
			 -EBADMSG);
	assert_non_null(strstr(err.msg, "does not match its digest"));
	assert_int_equal(nbad, 0);
	gz.p[mid] ^= 0x10;

	clip_gz_points_free(pts, npts);
	clip_gz_points_free(again, nagain);
	built_free(&res);
	gzt_buf_free(&gz);
	gzt_buf_free(&ref);
}

/* Set the stored-window digest of `p` to what its stored bytes hash to now
 * (pieces), or its span digest to what the window and `blob` give (legacy). */
static void reseal_span(struct clip_gz_index *ix, size_t i, const unsigned char *blob)
{
	struct clip_gz_point *p = &ix->points[i];
	if (ix->piece_bytes) {
		sha256(p->window_z, p->window_zlen, p->window_sha256);
		return;
	}
	unsigned char *w = malloc(CLIP_GZ_WINDOW);
	decode_window(p, w);
	uint64_t s0 = clip_gz_span_start(ix, i), s1 = clip_gz_span_end(ix, i);
	span_digest(w, p->window_len, blob + s0, (size_t)(s1 - s0), p->span_sha256);
	free(w);
}

/* Recompute the piece digests over blob bytes [a, b) (pieces only). */
static void reseal_pieces(struct clip_gz_index *ix, const unsigned char *blob, size_t blob_len,
			  uint64_t a, uint64_t b)
{
	if (!ix->piece_bytes)
		return;
	for (uint64_t k = a / ix->piece_bytes; k * ix->piece_bytes < b; k++) {
		uint64_t s = k * ix->piece_bytes;
		uint64_t n = blob_len - s < ix->piece_bytes ? blob_len - s : ix->piece_bytes;
		sha256(blob + s, (size_t)n, (unsigned char *)ix->piece_sha256 + 32 * k);
	}
}

/* Damage of every kind to the compressed bytes, the windows and the index,
 * through the digests of `ix`: piece digests (the builder's) or whole-span
 * digests (a legacy copy). A read returns the right bytes or an error, never
 * a wrong byte; with whole-span digests it never writes before failing. */
static void corruption_cases(struct clip_gz_index *ix, const struct gzt_buf *gz,
			     const struct gzt_buf *ref)
{
	bool pieces = ix->piece_bytes != 0;
	assert_true(ix->count >= 4);
	/* A checkpoint past the first two with a zstd window of some size. */
	size_t k = 2;
	while (k < ix->count && (ix->points[k].window_len < 1024 ||
				 ix->points[k].window_codec != CLIP_GZ_WINDOW_ZSTD))
		k++;
	assert_true(k + 1 < ix->count);
	struct clip_gz_point *p = &ix->points[k];
	char span_k[64], mismatch[64], win_mismatch[64];
	snprintf(span_k, sizeof(span_k), "span %zu: ", k);
	snprintf(mismatch, sizeof(mismatch), "span %zu: digest mismatch", k);
	snprintf(win_mismatch, sizeof(win_mismatch), "span %zu: %sdigest mismatch", k,
		 pieces ? "window " : "");
	uint64_t off = p->out + 100;
	uint64_t span_len = ix->points[k + 1].out - p->out;
	unsigned char *whole = malloc(span_len);
	unsigned char buf[4096];
	struct clip_err err = { 0 };

	/* A flipped byte in the compressed span: in its primed first byte, its
	 * middle and its last byte. Reading the whole span fails; a 4 KiB read
	 * near its start fails, or (pieces, the byte not reached) is right. */
	uint64_t where[3] = { clip_gz_span_start(ix, k),
			      (clip_gz_span_start(ix, k) + clip_gz_span_end(ix, k)) / 2,
			      clip_gz_span_end(ix, k) - 1 };
	for (int w = 0; w < 3; w++) {
		for (int inf = 0; inf < 2; inf++) {
			struct gzt_buf bad = { 0 };
			gzt_buf_add(&bad, gz->p, gz->len);
			bad.p[where[w]] ^= 0x10;
			struct memsrc m = { .p = bad.p, .len = bad.len, .map = inf == 1 };
			struct clip_blob_source src = { .pread = mem_pread,
							.opaque = &m,
							.map = inf == 1 ? mem_map : NULL };
			clip_err_clear(&err);
			ssize_t n =
				clip_gz_index_read_with(ix, &src, whole, (size_t)span_len, p->out,
							(enum clip_gz_inflater)inf, NULL, &err);
			assert_int_equal(n, -EBADMSG);
			assert_non_null(strstr(err.msg, mismatch));

			memset(buf, 0xee, sizeof(buf));
			clip_err_clear(&err);
			n = clip_gz_index_read_with(ix, &src, buf, sizeof(buf), off,
						    (enum clip_gz_inflater)inf, NULL, &err);
			if (n == (ssize_t)sizeof(buf) && pieces && w > 0) {
				assert_memory_equal(buf, ref->p + off, sizeof(buf));
			} else {
				assert_int_equal(n, -EBADMSG);
				assert_non_null(strstr(err.msg, mismatch));
				for (size_t i = 0; i < sizeof(buf) && !pieces; i++)
					assert_int_equal(buf[i], 0xee);
			}
			/* A span that does not include the byte still reads. */
			n = clip_gz_index_read(ix, &src, buf, 100, ix->points[0].out, NULL, &err);
			assert_int_equal(n, 100);
			assert_memory_equal(buf, ref->p, 100);
			gzt_buf_free(&bad);
		}
	}
	/* With pieces, the byte the read needs first is caught all the same
	 * when it is the only damage and lies deep in the span. */
	if (pieces) {
		struct gzt_buf bad = { 0 };
		gzt_buf_add(&bad, gz->p, gz->len);
		bad.p[clip_gz_span_end(ix, k) - 2] ^= 0x01;
		struct memsrc m = { .p = bad.p, .len = bad.len };
		struct clip_blob_source src = { .pread = mem_pread, .opaque = &m };
		clip_err_clear(&err);
		assert_int_equal(
			clip_gz_index_read(ix, &src, buf, 1, ix->points[k + 1].out - 1, NULL, &err),
			-EBADMSG);
		assert_non_null(strstr(err.msg, mismatch));
		assert_non_null(strstr(err.msg, "compressed bytes"));
		gzt_buf_free(&bad);
	}

	struct memsrc m = { .p = gz->p, .len = gz->len };
	struct clip_blob_source src = { .pread = mem_pread, .opaque = &m };

	/* A flipped byte in the window: stored raw, the digest catches it;
	 * the same window unflipped reads fine. */
	unsigned char *win = malloc(CLIP_GZ_WINDOW);
	decode_window(p, win);
	struct clip_gz_point saved = *p;
	p->window_codec = CLIP_GZ_WINDOW_RAW;
	p->window_z = win;
	p->window_zlen = p->window_len;
	reseal_span(ix, k, gz->p);
	assert_int_equal(clip_gz_index_read(ix, &src, buf, sizeof(buf), off, NULL, &err),
			 (ssize_t)sizeof(buf));
	assert_memory_equal(buf, ref->p + off, sizeof(buf));
	win[p->window_len - 7] ^= 1;
	memset(buf, 0xee, sizeof(buf));
	clip_err_clear(&err);
	assert_int_equal(clip_gz_index_read(ix, &src, buf, sizeof(buf), off, NULL, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, win_mismatch));
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 0xee);
	*p = saved;

	/* A flipped byte in the stored (zstd) window: -EBADMSG either way. */
	unsigned char *z = malloc(p->window_zlen);
	memcpy(z, p->window_z, p->window_zlen);
	z[p->window_zlen / 2] ^= 0x40;
	p->window_z = z;
	memset(buf, 0xee, sizeof(buf));
	assert_int_equal(clip_gz_index_read(ix, &src, buf, sizeof(buf), off, NULL, &err), -EBADMSG);
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 0xee);
	*p = saved;
	free(z);
	free(win);

	/* A window stored as raw deflate (a codec the builder does not pick,
	 * but an archive may hold) reads the same. */
	{
		unsigned char *plain = malloc(CLIP_GZ_WINDOW), *dz = malloc(2 * CLIP_GZ_WINDOW);
		decode_window(p, plain);
		z_stream zs;
		memset(&zs, 0, sizeof(zs));
		assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY),
				 Z_OK);
		zs.next_in = plain;
		zs.avail_in = p->window_len;
		zs.next_out = dz;
		zs.avail_out = 2 * CLIP_GZ_WINDOW;
		assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
		p->window_codec = CLIP_GZ_WINDOW_DEFLATE;
		p->window_z = dz;
		p->window_zlen = (uint32_t)zs.total_out;
		deflateEnd(&zs);
		reseal_span(ix, k, gz->p);
		assert_int_equal(clip_gz_index_read(ix, &src, buf, sizeof(buf), off, NULL, &err),
				 (ssize_t)sizeof(buf));
		assert_memory_equal(buf, ref->p + off, sizeof(buf));
		dz[p->window_zlen / 2] ^= 0x21;
		assert_int_equal(clip_gz_index_read(ix, &src, buf, sizeof(buf), off, NULL, &err),
				 -EBADMSG);
		dz[p->window_zlen / 2] ^= 0x21;
		p->window_codec = 7;
		assert_int_equal(clip_gz_index_read(ix, &src, buf, sizeof(buf), off, NULL, &err),
				 -EBADMSG);
		assert_non_null(strstr(err.msg, span_k));
		assert_non_null(strstr(err.msg, pieces ? "window does not decode" : "window"));
		*p = saved;
		free(plain);
		free(dz);
	}

	/* Data that passes its digest but does not inflate (an index made for
	 * other bytes): an error, never a crash. The last span cut short, and
	 * an index claiming more output than the stream has. */
	for (int inf = 0; inf < 2; inf++) {
		size_t last = ix->count - 1;
		struct clip_gz_point *lp = &ix->points[last];
		struct clip_gz_point lsaved = *lp;
		uint64_t saved_csize = ix->csize, saved_usize = ix->usize;
		size_t saved_npieces = ix->npieces;
		uint64_t cut = (clip_gz_span_start(ix, last) + saved_csize) / 2;
		unsigned char last_md[32];
		if (pieces) {
			/* The last piece now ends at the cut, and its digest says so. */
			ix->npieces = (size_t)((cut + ix->piece_bytes - 1) / ix->piece_bytes);
			memcpy(last_md, ix->piece_sha256 + 32 * (ix->npieces - 1), 32);
			reseal_pieces(ix, gz->p, cut, cut - 1, cut);
		}
		ix->csize = cut;
		reseal_span(ix, last, gz->p);
		clip_err_clear(&err);
		ssize_t n = clip_gz_index_read_with(ix, &src, buf, sizeof(buf),
						    saved_usize - sizeof(buf),
						    (enum clip_gz_inflater)inf, NULL, &err);
		assert_int_equal(n, -EBADMSG);
		assert_non_null(strstr(err.msg, "compressed span ends early"));
		if (pieces)
			memcpy((unsigned char *)ix->piece_sha256 + 32 * (ix->npieces - 1), last_md,
			       32);
		ix->csize = saved_csize;
		ix->npieces = saved_npieces;
		*lp = lsaved;

		ix->usize = saved_usize + 1000;
		clip_err_clear(&err);
		n = clip_gz_index_read_with(ix, &src, buf, sizeof(buf), saved_usize - 100,
					    (enum clip_gz_inflater)inf, NULL, &err);
		assert_int_equal(n, -EBADMSG);
		assert_non_null(strstr(err.msg, "deflate stream ends before the span does"));
		ix->usize = saved_usize;

		struct gzt_buf bad = { 0 };
		gzt_buf_add(&bad, gz->p, gz->len);
		uint64_t s0 = clip_gz_span_start(ix, k);
		for (uint64_t j = s0 + 40; j < s0 + 80; j++)
			bad.p[j] ^= 0xff;
		unsigned char *saved_pieces = NULL;
		if (pieces) {
			saved_pieces = malloc(32 * ix->npieces);
			memcpy(saved_pieces, ix->piece_sha256, 32 * ix->npieces);
		}
		reseal_pieces(ix, bad.p, bad.len, s0 + 40, s0 + 80);
		reseal_span(ix, k, bad.p);
		struct memsrc bm = { .p = bad.p, .len = bad.len };
		struct clip_blob_source bsrc = { .pread = mem_pread, .opaque = &bm };
		clip_err_clear(&err);
		n = clip_gz_index_read_with(ix, &bsrc, buf, sizeof(buf), p->out + 30000,
					    (enum clip_gz_inflater)inf, NULL, &err);
		if (n < 0) {
			assert_int_equal(n, -EBADMSG);
			assert_non_null(strstr(err.msg, span_k));
		}
		*p = saved;
		if (pieces) {
			memcpy((unsigned char *)ix->piece_sha256, saved_pieces, 32 * ix->npieces);
			free(saved_pieces);
		}
		gzt_buf_free(&bad);
	}

	/* An index that cannot be right is refused before any fetch. */
	p->bits = 9;
	clip_err_clear(&err);
	assert_int_equal(clip_gz_index_read(ix, &src, buf, 10, off, NULL, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "inconsistent"));
	*p = saved;
	if (pieces) {
		ix->npieces--;
		assert_int_equal(clip_gz_index_read(ix, &src, buf, 10, off, NULL, &err), -EBADMSG);
		assert_non_null(strstr(err.msg, "piece digests are inconsistent"));
		ix->npieces++;
	}

	/* The blob is shorter than the index says. */
	m.len = (size_t)clip_gz_span_end(ix, k) - 1;
	clip_err_clear(&err);
	assert_int_equal(clip_gz_index_read(ix, &src, buf, 10, off, NULL, &err), -EIO);
	m.len = gz->len;

	/* The source fails: its code and message come through. */
	m.fail = ETIMEDOUT;
	clip_err_clear(&err);
	assert_int_equal(clip_gz_index_read(ix, &src, buf, 10, off, NULL, &err), -ETIMEDOUT);
	assert_non_null(strstr(err.msg, "injected failure"));
	assert_int_equal(clip_gz_read_from_start(&src, buf, 10, off, NULL, &err), -ETIMEDOUT);
	m.fail = 0;

	/* The same through a source that maps: short blob, failure, success. */
	struct clip_blob_source msrc = { .pread = mem_pread, .opaque = &m, .map = mem_map };
	m.len = (size_t)clip_gz_span_end(ix, k) - 1;
	clip_err_clear(&err);
	assert_int_equal(clip_gz_index_read(ix, &msrc, buf, 10, off, NULL, &err), -EIO);
	assert_non_null(strstr(err.msg, "ends at"));
	m.len = gz->len;
	m.fail = ETIMEDOUT;
	assert_int_equal(clip_gz_index_read(ix, &msrc, buf, 10, off, NULL, &err), -ETIMEDOUT);
	m.fail = 0;
	assert_int_equal(clip_gz_index_read(ix, &msrc, buf, 10, off, NULL, &err), 10);
	assert_memory_equal(buf, ref->p + off, 10);
	free(whole);
}

static void test_corruption(void **state)
{
	(void)state;
	struct gzt_buf data = { 0 }, gz = { 0 }, ref = { 0 };
	gen_data(&data, 1 * MiB, 21);
	gzip_zlib(&gz, data.p, data.len, 6);
	ref_gunzip(&ref, &gz);
	struct built res;
	/* 4 KiB pieces: several to a span, so damage can lie past a read. */
	struct build_opts o = {
		.span = 64 * KiB, .threshold = UINT64_MAX, .seed = 2, .piece = 4 * KiB
	};
	build(&gz, &o, &res);
	corruption_cases(res.index, &gz, &ref);
	struct clip_gz_index *legacy = legacy_copy(res.index, &gz);
	corruption_cases(legacy, &gz, &ref);
	clip_gz_index_free(legacy);
	built_free(&res);
	gzt_buf_free(&data);
	gzt_buf_free(&gz);
	gzt_buf_free(&ref);
}

/* Scan `len` bytes handed over at most `step` at a time. */
static int scan_stepwise(const void *p, size_t len, size_t step, struct clip_err *err)
{
	struct clip_gz_scanner *sc = clip_gz_scanner_new();
	assert_non_null(sc);
	size_t cap = 4 * MiB;
	unsigned char *out = malloc(cap);
	struct clip_gz_boundary bounds[64];
	size_t pos = 0;
	int r = 0;
	for (;;) {
		size_t used, produced, nb;
		size_t give = len - pos < step ? len - pos : step;
		r = clip_gz_scanner_run(sc, (const unsigned char *)p + pos, give, &used, out, cap,
					&produced, bounds, 64, &nb, err);
		if (r < 0)
			break;
		pos += used;
		if (pos == len && produced < cap && nb < 64) {
			r = clip_gz_scanner_finish(sc, err);
			break;
		}
	}
	free(out);
	clip_gz_scanner_free(sc);
	return r;
}

/* Run the scanner over `p` in one go (with room for everything); returns
 * its error code, from run or finish. */
static int scan_all(const void *p, size_t len, struct clip_err *err)
{
	return scan_stepwise(p, len, len, err);
}

static void test_scanner_errors(void **state)
{
	(void)state;
	struct gzt_buf data = { 0 }, gz = { 0 };
	struct clip_err err = { 0 };
	gen_data(&data, 300 * KiB, 31);
	gzip_zlib(&gz, data.p, data.len, 6);
	assert_int_equal(scan_all(gz.p, gz.len, &err), 0);

	/* Not gzip at all, and nothing. */
	assert_int_equal(scan_all("hello, world", 12, &err), -EBADMSG);
	assert_string_equal(err.msg, "not in gzip format");
	assert_int_equal(scan_all(data.p, 1000, &err), -EBADMSG);
	assert_string_equal(err.msg, "not in gzip format");
	assert_int_equal(scan_all("", 0, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "truncated gzip stream"));

	/* Truncated anywhere: in the header, the data, the trailer. */
	size_t cuts[] = { 1,	      2,	  5,	      9,	  10,	     11,
			  gz.len / 3, gz.len / 2, gz.len - 8, gz.len - 5, gz.len - 1 };
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		clip_err_clear(&err);
		assert_int_equal(scan_all(gz.p, cuts[i], &err), -EBADMSG);
		assert_non_null(strstr(err.msg, "truncated gzip stream"));
	}

	/* Trailing bytes: zero padding is fine, anything else is garbage at
	 * its exact offset; a second member cut short is truncation. */
	struct gzt_buf t = { 0 };
	char expect[128];
	static const unsigned char zeros[5] = { 0 };
	gzt_buf_add(&t, gz.p, gz.len);
	gzt_buf_add(&t, zeros, sizeof(zeros));
	assert_int_equal(scan_all(t.p, t.len, &err), 0);
	gzt_buf_add(&t, "GARBAGE", 7);
	assert_int_equal(scan_all(t.p, t.len, &err), -EBADMSG);
	snprintf(expect, sizeof(expect), "trailing garbage after gzip member at offset %zu",
		 gz.len + 5);
	assert_string_equal(err.msg, expect);
	t.len = gz.len;
	gzt_buf_add(&t, "\x1f\x8b", 2);
	assert_int_equal(scan_all(t.p, t.len, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "truncated gzip stream"));
	t.len = gz.len;
	gzt_buf_add(&t, "\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f\x1f", 12);
	assert_int_equal(scan_all(t.p, t.len, &err), -EBADMSG);
	snprintf(expect, sizeof(expect), "trailing garbage after gzip member at offset %zu",
		 gz.len);
	assert_string_equal(err.msg, expect);

	/* A bad CRC, and damaged deflate data. */
	t.len = 0;
	gzt_buf_add(&t, gz.p, gz.len);
	t.p[t.len - 6] ^= 1;
	assert_int_equal(scan_all(t.p, t.len, &err), -EBADMSG);
	assert_string_equal(err.msg, "gzip member at offset 0: incorrect data check");
	/* The trailer is checked however the input is cut (it straddles calls). */
	for (size_t step = 1; step <= 9; step += 4) {
		assert_int_equal(scan_stepwise(gz.p, gz.len, step, &err), 0);
		assert_int_equal(scan_stepwise(t.p, t.len, step, &err), -EBADMSG);
		assert_string_equal(err.msg, "gzip member at offset 0: incorrect data check");
	}
	t.p[t.len - 6] ^= 1;
	t.p[t.len - 2] ^= 1;
	assert_int_equal(scan_all(t.p, t.len, &err), -EBADMSG);
	assert_string_equal(err.msg, "gzip member at offset 0: incorrect length check");
	/* In a second member, the message names that member. */
	t.len = 0;
	gzt_buf_add(&t, gz.p, gz.len);
	gzt_buf_add(&t, gz.p, gz.len);
	t.p[t.len - 7] ^= 0x80;
	assert_int_equal(scan_all(t.p, t.len, &err), -EBADMSG);
	snprintf(expect, sizeof(expect), "gzip member at offset %zu: incorrect data check", gz.len);
	assert_string_equal(err.msg, expect);
	for (size_t at = 20; at < gz.len - 8; at += gz.len / 7) {
		t.len = 0;
		gzt_buf_add(&t, gz.p, gz.len);
		for (size_t j = 0; j < 64; j++)
			t.p[at + j] ^= 0xff;
		assert_int_equal(scan_all(t.p, t.len, &err), -EBADMSG);
	}

	/* The scanner stays failed; the read-from-start path reports the
	 * same errors. */
	struct memsrc m = { .p = (const unsigned char *)"hello, world", .len = 12 };
	struct clip_blob_source src = { .pread = mem_pread, .opaque = &m };
	unsigned char buf[16];
	assert_int_equal(clip_gz_read_from_start(&src, buf, 4, 0, NULL, &err), -EBADMSG);
	assert_string_equal(err.msg, "not in gzip format");
	m.p = gz.p;
	m.len = gz.len / 2;
	assert_int_equal(clip_gz_read_from_start(&src, buf, 4, data.len - 4, NULL, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "truncated gzip stream"));

	gzt_buf_free(&t);
	gzt_buf_free(&data);
	gzt_buf_free(&gz);
}

static void test_builder_misuse(void **state)
{
	(void)state;
	struct clip_gz_builder_options bo = { .span_bytes = UINT64_MAX,
					      .large_file_threshold = 10 };
	struct clip_err err = { 0 };
	struct clip_gz_index *ix = NULL;

	/* A boundary that does not match the bytes fed. */
	struct clip_gz_builder *b = clip_gz_builder_new(&bo);
	assert_int_equal(clip_gz_builder_compressed(b, "0123456789", 10, &err), 0);
	struct clip_gz_boundary bd = { .in = 11, .out = 0, .bits = 0, .member_start = true };
	assert_int_equal(clip_gz_builder_boundary(b, &bd, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "bytes fed"));
	assert_int_equal(clip_gz_builder_finish(b, &ix, &err), -EINVAL);
	assert_null(ix);
	clip_gz_builder_free(b);

	/* The first boundary must start a member. */
	b = clip_gz_builder_new(&bo);
	assert_int_equal(clip_gz_builder_compressed(b, "0123456789", 10, &err), 0);
	bd = (struct clip_gz_boundary){ .in = 10, .out = 0, .bits = 0, .member_start = false };
	assert_int_equal(clip_gz_builder_boundary(b, &bd, &err), -EINVAL);
	clip_gz_builder_free(b);

	/* A large-file hint that comes after the boundary following its
	 * offset was fed is refused, unless that boundary is a checkpoint. */
	struct gzt_buf data = { 0 }, gz = { 0 };
	gen_data(&data, 512 * KiB, 41);
	gzip_zlib(&gz, data.p, data.len, 6);
	struct built res;
	struct build_opts o = { .span = UINT64_MAX, .threshold = UINT64_MAX, .seed = 1 };
	build(&gz, &o, &res);
	assert_true(res.nbounds >= 4);
	b = clip_gz_builder_new(&bo);
	uint64_t fed_in = 0, fed_out = 0;
	for (size_t k = 0; k < 3; k++) {
		const struct clip_gz_boundary *x = &res.bounds[k];
		assert_int_equal(clip_gz_builder_compressed(b, gz.p + fed_in, x->in - fed_in, &err),
				 0);
		assert_int_equal(clip_gz_builder_uncompressed(b, res.out.p + fed_out,
							      x->out - fed_out, &err),
				 0);
		fed_in = x->in;
		fed_out = x->out;
		assert_int_equal(clip_gz_builder_boundary(b, x, &err), 0);
	}
	/* bounds[0] is the member start (a checkpoint): a file just after it
	 * is served; one after bounds[1] (not a checkpoint) is not. */
	assert_true(res.bounds[1].out > 5 && res.bounds[2].out > res.bounds[1].out + 1);
	assert_int_equal(clip_gz_builder_file(b, 5, 2000, &err), 0);
	assert_int_equal(clip_gz_builder_file(b, res.bounds[1].out + 1, 2000, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "announced after the boundary"));
	clip_gz_builder_free(b);
	built_free(&res);
	gzt_buf_free(&data);
	gzt_buf_free(&gz);
}

int main(void)
{
	quick = getenv("CLIP_TEST_QUICK") != NULL;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_find),
		cmocka_unit_test(test_empty_and_tiny),
		cmocka_unit_test(test_scanner_errors),
		cmocka_unit_test(test_builder_misuse),
		cmocka_unit_test(test_chunking),
		cmocka_unit_test(test_span_edges),
		cmocka_unit_test(test_corruption),
		cmocka_unit_test(test_large_file_hints),
		cmocka_unit_test(test_read_from_start),
		cmocka_unit_test(test_refine),
		cmocka_unit_test(test_zlib_levels),
		cmocka_unit_test(test_tools),
		cmocka_unit_test(test_multimember),
		cmocka_unit_test(test_huge_block),
		cmocka_unit_test(test_unreferenced_window),
		cmocka_unit_test(test_lookahead_cap),
		cmocka_unit_test(test_dense_checkpoints),
		cmocka_unit_test(test_big_zeros_and_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
