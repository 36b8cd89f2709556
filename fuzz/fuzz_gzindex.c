/* libFuzzer harness for gzip checkpoints.
 *
 * The input is a gzip stream, or (when it does not start with the gzip magic)
 * a recipe: two parameter bytes, then data that is gzipped here with those
 * parameters (level, flushes that make many and empty blocks, a second
 * member), so that the deep paths are reached without the fuzzer having to
 * invent valid deflate. Whatever the scanner accepts is indexed with a small
 * span and read back at random ranges through the index, with both inflaters,
 * and compared byte for byte with a plain zlib decompression of the same
 * stream; reads from a copy with one flipped byte must give the right bytes
 * or -EBADMSG, never anything else. Every stored (sparse) window must be the
 * real bytes before its checkpoint, some of them zeroed.
 *
 * clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc/lib \
 *   fuzz/fuzz_gzindex.c src/lib/gzindex*.c src/lib/sha256.c src/lib/err.c \
 *   -lz -lisal -lcrypto -lzstd
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>
#include <zstd.h>

#include "clip/gzindex.h"
#include "gzindex_internal.h"

#define MAX_OUT (32u << 20) /* keep decompression bombs cheap */

struct buf {
	unsigned char *p;
	size_t len, cap;
};

static void buf_add(struct buf *b, const void *p, size_t n)
{
	if (b->p == NULL || b->cap - b->len < n) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap - b->len < n)
			cap *= 2;
		b->p = realloc(b->p, cap);
		if (b->p == NULL)
			abort();
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
}

static uint64_t rng(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t below(uint64_t *s, uint64_t n)
{
	return n ? rng(s) % n : 0;
}

/* gzip `data` as one member, flushing every `every` bytes (0: never). */
static void gzip_member(struct buf *out, const unsigned char *data, size_t len, int level,
			int strategy, size_t every, int flush)
{
	z_stream z;
	unsigned char tmp[16384];
	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, strategy) != Z_OK)
		abort();
	size_t pos = 0;
	int ret;
	do {
		size_t n = len - pos;
		if (every && n > every)
			n = every;
		int mode = pos + n == len ? Z_FINISH : (every ? flush : Z_NO_FLUSH);
		z.next_in = (unsigned char *)data + pos;
		z.avail_in = (uInt)n;
		do {
			z.next_out = tmp;
			z.avail_out = sizeof(tmp);
			ret = deflate(&z, mode);
			buf_add(out, tmp, sizeof(tmp) - z.avail_out);
		} while (z.avail_out == 0 || (mode == Z_FINISH && ret != Z_STREAM_END));
		pos += n;
	} while (pos < len);
	deflateEnd(&z);
}

static void make_gzip(struct buf *gz, const uint8_t *data, size_t size)
{
	if (size < 2) {
		gzip_member(gz, data, size, 6, Z_DEFAULT_STRATEGY, 0, Z_NO_FLUSH);
		return;
	}
	static const int strategies[] = { Z_DEFAULT_STRATEGY, Z_FILTERED, Z_HUFFMAN_ONLY, Z_RLE,
					  Z_FIXED };
	static const int flushes[] = { Z_NO_FLUSH, Z_SYNC_FLUSH, Z_FULL_FLUSH, Z_BLOCK,
				       Z_PARTIAL_FLUSH };
	int level = data[0] % 10;
	int strategy = strategies[(data[0] / 10) % 5];
	size_t every = (data[1] & 0x1f) ? (size_t)(data[1] & 0x1f) * 97 : 0;
	int flush = flushes[(data[1] >> 5) % 5];
	const uint8_t *body = data + 2;
	size_t len = size - 2;
	size_t split = (data[1] & 0x80) ? len / 3 : len;
	gzip_member(gz, body, split, level, strategy, every, flush);
	if (split < len) {
		static const unsigned char zeros[3] = { 0 };
		buf_add(gz, zeros, data[0] % 4);
		gzip_member(gz, body + split, len - split, 9 - level, Z_DEFAULT_STRATEGY, 0,
			    Z_NO_FLUSH);
	}
}

/* Independent reference: zlib, member after member, zero padding skipped.
 * False when zlib does not accept the whole stream. */
static bool ref_gunzip(struct buf *out, const struct buf *gz)
{
	z_stream z;
	unsigned char tmp[65536];
	size_t pos = 0, members = 0;
	bool ok = true;
	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, 15 + 16) != Z_OK)
		abort();
	while (ok && pos < gz->len) {
		if (members > 0 && gz->p[pos] == 0) {
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
			pos = gz->len - z.avail_in;
			buf_add(out, tmp, sizeof(tmp) - z.avail_out);
			if (out->len > MAX_OUT)
				ret = Z_DATA_ERROR;
		} while (ret == Z_OK);
		if (ret != Z_STREAM_END)
			ok = false;
		members++;
	}
	inflateEnd(&z);
	return ok && members > 0;
}

struct memsrc {
	const unsigned char *p;
	size_t len;
};

static ssize_t mem_pread(void *opaque, void *buf, size_t len, uint64_t off, struct clip_err *err)
{
	struct memsrc *m = opaque;
	(void)err;
	if (off >= m->len)
		return 0;
	size_t n = m->len - off < len ? m->len - off : len;
	memcpy(buf, m->p + off, n);
	return (ssize_t)n;
}

/* Scan and index; false when the scanner rejects the stream. */
static bool build(const struct buf *gz, uint64_t *seed, struct buf *out,
		  struct clip_gz_index **index)
{
	struct clip_gz_builder_options bo = { .span_bytes = 1 + below(seed, 70000),
					      .large_file_threshold = below(seed, 100000) };
	struct clip_err err = { 0 };
	struct clip_gz_scanner *sc = clip_gz_scanner_new();
	struct clip_gz_builder *b = clip_gz_builder_new(&bo);
	unsigned char tmp[70000];
	struct clip_gz_boundary bounds[8];
	uint64_t fed_in = 0, fed_out = 0;
	size_t pos = 0;
	bool ok = true;
	if (sc == NULL || b == NULL)
		abort();
	for (;;) {
		size_t in_len = 1 + below(seed, 40000);
		if (in_len > gz->len - pos)
			in_len = gz->len - pos;
		size_t out_cap = 1 + below(seed, sizeof(tmp));
		size_t used, produced, nb;
		if (clip_gz_scanner_run(sc, gz->p + pos, in_len, &used, tmp, out_cap, &produced,
					bounds, 1 + below(seed, 8), &nb, &err) != 0) {
			ok = false;
			break;
		}
		pos += used;
		buf_add(out, tmp, produced);
		if (out->len > MAX_OUT) {
			ok = false;
			break;
		}
		for (size_t i = 0; i < nb; i++) {
			if (bounds[i].in < fed_in || bounds[i].out < fed_out ||
			    bounds[i].in > pos || bounds[i].out > out->len)
				abort(); /* boundaries out of order or ahead of the data */
			if (clip_gz_builder_compressed(b, gz->p + fed_in, bounds[i].in - fed_in,
						       &err) ||
			    clip_gz_builder_uncompressed(b, out->p + fed_out,
							 bounds[i].out - fed_out, &err))
				abort();
			fed_in = bounds[i].in;
			fed_out = bounds[i].out;
			if (below(seed, 4) == 0 && clip_gz_builder_file(b, fed_out + below(seed, 3),
									below(seed, 200000), &err))
				abort();
			if (clip_gz_builder_boundary(b, &bounds[i], &err))
				abort();
		}
		if (clip_gz_builder_compressed(b, gz->p + fed_in, pos - fed_in, &err) ||
		    clip_gz_builder_uncompressed(b, out->p + fed_out, out->len - fed_out, &err))
			abort();
		fed_in = pos;
		fed_out = out->len;
		if (pos == gz->len && used == 0 && produced == 0 && nb == 0)
			break;
	}
	if (ok && clip_gz_scanner_finish(sc, &err) != 0)
		ok = false;
	if (ok && clip_gz_builder_finish(b, index, &err) != 0)
		abort();
	clip_gz_builder_free(b);
	clip_gz_scanner_free(sc);
	return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf gz = { 0 }, ref = { 0 }, out = { 0 };
	struct clip_gz_index *index = NULL;
	uint64_t seed = 0x1234;
	buf_add(&gz, NULL, 0); /* never a NULL buffer, even for empty streams */
	buf_add(&ref, NULL, 0);
	buf_add(&out, NULL, 0);
	for (size_t i = 0; i < size && i < 64; i++)
		seed = seed * 131 + data[i];

	if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b)
		buf_add(&gz, data, size);
	else
		make_gzip(&gz, data, size);

	bool ref_ok = ref_gunzip(&ref, &gz);
	bool scan_ok = build(&gz, &seed, &out, &index);
	/* Scanner and zlib agree on what is a valid stream (below the cap). */
	if (scan_ok != ref_ok && ref.len <= MAX_OUT && out.len <= MAX_OUT)
		abort();
	if (!scan_ok || !ref_ok) {
		/* The fallback reader must fail the same way, not crash. */
		struct memsrc m = { gz.p, gz.len };
		struct clip_blob_source src = { .pread = mem_pread, .opaque = &m };
		unsigned char small[64];
		struct clip_err err = { 0 };
		if (ref.len <= MAX_OUT / 4)
			(void)clip_gz_read_from_start(&src, small, sizeof(small),
						      below(&seed, ref.len + 10), NULL, &err);
		goto out;
	}
	if (out.len != ref.len || memcmp(out.p, ref.p, ref.len) != 0)
		abort();
	if (index->usize != ref.len || index->csize != gz.len)
		abort();

	unsigned char win[CLIP_GZ_WINDOW];
	for (size_t i = 0; i < index->count; i++) {
		const struct clip_gz_point *p = &index->points[i];
		size_t n = p->window_len;
		if (p->out > ref.len || n > p->out || n > CLIP_GZ_WINDOW)
			abort();
		if (p->window_codec == CLIP_GZ_WINDOW_ZSTD) {
			size_t got = ZSTD_decompress(win, sizeof(win), p->window_z, p->window_zlen);
			if (ZSTD_isError(got) || got != n)
				abort();
		} else if (p->window_codec == CLIP_GZ_WINDOW_RAW && p->window_zlen == n) {
			if (n > 0)
				memcpy(win, p->window_z, n);
		} else {
			abort();
		}
		const unsigned char *real = ref.p + p->out - n;
		for (size_t j = 0; j < n; j++)
			if (win[j] != 0 && win[j] != real[j])
				abort();
	}

	struct memsrc m = { gz.p, gz.len };
	struct clip_blob_source src = { .pread = mem_pread, .opaque = &m };
	size_t cap = 200000;
	unsigned char *buf = malloc(cap);
	for (int r = 0; r < 24; r++) {
		uint64_t off = below(&seed, ref.len + 100);
		size_t len = (size_t)below(&seed, cap + 1);
		size_t expect = off < ref.len ? (ref.len - off < len ? ref.len - off : len) : 0;
		struct clip_err err = { 0 };
		enum clip_gz_inflater inf = r % 2 ? CLIP_GZ_INFLATER_ZLIB : CLIP_GZ_INFLATER_ISAL;
		ssize_t n = clip_gz_index_read_with(index, &src, buf, len, off, inf, NULL, &err);
		const unsigned char *want = ref.p + (expect ? off : 0);
		if (n != (ssize_t)expect || memcmp(buf, want, expect) != 0) {
			fprintf(stderr, "read(%llu, %zu) = %zd, want %zu: %s\n",
				(unsigned long long)off, len, n, expect, err.msg);
			abort();
		}
		if (r < 2 && ref.len < (4u << 20)) {
			n = clip_gz_read_from_start(&src, buf, len, off, NULL, &err);
			if (n != (ssize_t)expect || memcmp(buf, want, expect) != 0)
				abort();
		}
	}
	/* One flipped byte: right bytes or -EBADMSG. */
	if (gz.len > 0) {
		struct buf bad = { 0 };
		buf_add(&bad, gz.p, gz.len);
		bad.p[below(&seed, bad.len)] ^= (unsigned char)(1 + below(&seed, 255));
		struct memsrc bm = { bad.p, bad.len };
		struct clip_blob_source bsrc = { .pread = mem_pread, .opaque = &bm };
		for (int r = 0; r < 8; r++) {
			uint64_t off = below(&seed, ref.len + 1);
			size_t len = (size_t)below(&seed, cap + 1);
			size_t expect =
				off < ref.len ? (ref.len - off < len ? ref.len - off : len) : 0;
			struct clip_err err = { 0 };
			ssize_t n =
				clip_gz_index_read_with(index, &bsrc, buf, len, off,
							(enum clip_gz_inflater)(r % 2), NULL, &err);
			const unsigned char *want = ref.p + (expect ? off : 0);
			if (n != -EBADMSG &&
			    (n != (ssize_t)expect || memcmp(buf, want, expect) != 0))
				abort();
		}
		free(bad.p);
	}
	free(buf);
out:
	clip_gz_index_free(index);
	free(gz.p);
	free(ref.p);
	free(out.p);
	return 0;
}
