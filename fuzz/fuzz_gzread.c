/* libFuzzer harness for reads through a hostile checkpoint index
 * (clip_gz_index_read_with in src/lib/gzindex_read.c).
 *
 * An archive that passed clip_archive_open can still carry checkpoints that
 * are consistent enough to pass its validation and wrong in every other way:
 * offsets that point into the middle of a block, windows that lie, spans that
 * overlap. The digests stop a stranger's bytes, but the archive's author
 * chooses the digests too. So this harness plays the author: it builds an
 * index from the input and computes the digests exactly as the reader will
 * check them (piece digests of the blob and stored-window digests, as format
 * 3 has them, or whole-span digests as formats 1 and 2 do), and then reads. The reader must stay memory-safe, return
 * either the number of bytes the contract promises or one of its documented
 * errors, and never write past the length asked for.
 *
 * Input: a 16-byte header (point count, digest kind and piece size, usize,
 * csize adjustment, read seed), 16 bytes per point (in, out, bits, codec, window length, window
 * offset in the input), then the compressed blob (for seeds, a real gzip
 * stream, so that resumed inflates get somewhere).
 *
 * Build: fuzz/build. Seeds: fuzz/corpus/gzread/ (fuzz/gen-seeds makes them).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>
#include <zlib.h>
#include <zstd.h>

#include "clip/gzindex.h"
#include "gzindex_internal.h"
#include "util.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_POINTS 16
#define MAX_USIZE  (8u << 20)

struct blob {
	const unsigned char *p;
	size_t len;
};

static ssize_t blob_pread(void *opaque, void *buf, size_t len, uint64_t off, struct clip_err *err)
{
	const struct blob *b = opaque;
	(void)err;
	if (off >= b->len)
		return 0;
	size_t n = b->len - off < len ? b->len - off : len;
	memcpy(buf, b->p + off, n);
	return (ssize_t)n;
}

/* The blob in place: the input itself, so ASan sees any read past its end. */
static int blob_map(void *opaque, uint64_t off, size_t len, struct clip_blob_map *m,
		    struct clip_err *err)
{
	const struct blob *b = opaque;
	if (off > b->len || b->len - off < len)
		return clip_err_set(err, EIO, "blob ends at %zu", b->len);
	m->data = b->p + off;
	m->base = NULL;
	m->base_len = 0;
	return 0;
}

/* The window as the reader will decode it; false when it will not decode. */
static bool decode_window(const struct clip_gz_point *p, unsigned char *dst)
{
	switch (p->window_codec) {
	case CLIP_GZ_WINDOW_RAW:
		if (p->window_zlen != p->window_len)
			return false;
		if (p->window_len)
			memcpy(dst, p->window_z, p->window_len);
		return true;
	case CLIP_GZ_WINDOW_DEFLATE: {
		z_stream z;
		memset(&z, 0, sizeof(z));
		if (inflateInit2(&z, -15) != Z_OK)
			abort();
		z.next_in = (unsigned char *)p->window_z;
		z.avail_in = p->window_zlen;
		z.next_out = dst;
		z.avail_out = p->window_len;
		int ret = inflate(&z, Z_FINISH);
		bool ok = ret == Z_STREAM_END && z.avail_out == 0;
		inflateEnd(&z);
		return ok;
	}
	case CLIP_GZ_WINDOW_ZSTD: {
		size_t n = ZSTD_decompress(dst, CLIP_GZ_WINDOW, p->window_z, p->window_zlen);
		return !ZSTD_isError(n) && n == p->window_len;
	}
	default: return false;
	}
}

/* The digests the reader checks, when the span lies inside the blob. */
static void sign(struct clip_gz_index *index, size_t i, const struct blob *b)
{
	struct clip_gz_point *p = &index->points[i];
	if (index->piece_bytes) {
		SHA256(p->window_z, p->window_zlen, p->window_sha256);
		return;
	}
	static unsigned char win[CLIP_GZ_WINDOW];
	if (p->window_len > CLIP_GZ_WINDOW || !decode_window(p, win))
		return;
	if (p->bits && p->in == 0)
		return;
	uint64_t s0 = clip_gz_span_start(index, i), s1 = clip_gz_span_end(index, i);
	if (s0 > s1 || s1 > b->len)
		return;
	unsigned char both[64];
	SHA256(win, p->window_len, both);
	SHA256(b->p + s0, (size_t)(s1 - s0), both + 32);
	SHA256(both, sizeof(both), p->span_sha256);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 16)
		return 0;
	size_t npoints = data[0] % (MAX_POINTS + 1);
	uint64_t usize = clip_get_le32(data + 4) % MAX_USIZE;
	int32_t cadj = (int32_t)clip_get_le32(data + 8) % 64;
	size_t head = 16 + npoints * 16;
	if (size < head)
		return 0;
	struct blob b = { data + head, size - head };

	struct clip_gz_index index = { 0 };
	struct clip_gz_point points[MAX_POINTS + 1];
	memset(points, 0, sizeof(points));
	index.points = points;
	index.count = npoints;
	index.usize = usize;
	index.csize = (uint64_t)((int64_t)b.len + cadj < 0 ? 0 : (int64_t)b.len + cadj);
	for (size_t i = 0; i < npoints; i++) {
		const uint8_t *r = data + 16 + i * 16;
		struct clip_gz_point *p = &points[i];
		p->in = clip_get_le32(r) % (b.len + 2);
		p->out = clip_get_le32(r + 4) % (usize + 2);
		p->bits = r[8] % 9;
		p->window_codec = r[9] % 4;
		uint32_t wlen = clip_get_le16(r + 10);
		uint32_t woff = clip_get_le16(r + 12);
		uint32_t wz = clip_get_le16(r + 14);
		/* The window bytes come from the input itself. */
		if (woff > size)
			woff = (uint32_t)size;
		if (wz > size - woff)
			wz = (uint32_t)(size - woff);
		p->window_z = data + woff;
		p->window_zlen = wz;
		p->window_len = p->window_codec == CLIP_GZ_WINDOW_RAW ? wz : wlen;
		if (r[9] & 0x80)
			p->window_len += wlen; /* raw with a lying length */
	}
	/* Data[1] bit 0: piece digests (4 KiB to 32 KiB pieces) or span digests. */
	unsigned char *pieces = NULL;
	if (data[1] & 1) {
		index.piece_bytes = 4096u << ((data[1] >> 1) % 4);
		index.npieces = (size_t)((index.csize + index.piece_bytes - 1) / index.piece_bytes);
		/* Now and then one piece too few or too many. */
		if (data[1] & 0x80)
			index.npieces += (data[1] & 0x40) ? 1 : (index.npieces ? (size_t)-1 : 0);
		pieces = calloc(index.npieces + 1, 32);
		if (pieces == NULL)
			return 0;
		for (size_t k = 0; k < index.npieces; k++) {
			uint64_t a = (uint64_t)k * index.piece_bytes;
			if (a >= b.len)
				break;
			size_t n = b.len - a < index.piece_bytes ? (size_t)(b.len - a)
								 : index.piece_bytes;
			SHA256(b.p + a, n, pieces + 32 * k);
		}
		index.piece_sha256 = pieces;
	}
	for (size_t i = 0; i < npoints; i++)
		sign(&index, i, &b);

	size_t cap = 1u << 20;
	unsigned char *buf = malloc(cap + 64);
	if (buf == NULL) {
		free(pieces);
		return 0;
	}
	uint64_t seed = clip_get_le32(data + 12) | 1;
	for (int k = 0; k < 6; k++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		uint64_t off = (seed >> 20) % (usize + 3);
		size_t len = (size_t)((seed >> 40) % (k < 3 ? 4097 : cap + 1));
		memset(buf + len, 0xee, 64);
		struct clip_err err = { 0 };
		/* Reads 2 and 3 take the blob mapped, the others copied. */
		struct clip_blob_source src = { .pread = blob_pread,
						.opaque = &b,
						.map = k / 2 == 1 ? blob_map : NULL };
		ssize_t n = clip_gz_index_read_with(&index, &src, buf, len, off,
						    (enum clip_gz_inflater)(k % 2), NULL, &err);
		size_t expect = off < usize ? (usize - off < len ? (size_t)(usize - off) : len) : 0;
		if (n >= 0) {
			if ((size_t)n != expect) {
				fprintf(stderr, "read(%llu, %zu) = %zd, want %zu\n",
					(unsigned long long)off, len, n, expect);
				abort();
			}
		} else {
			CHECK(n == -EBADMSG || n == -EIO || n == -EFBIG);
			CHECK(err.code == n && err.msg[0] != '\0');
		}
		for (int j = 0; j < 64; j++)
			CHECK(buf[len + j] == 0xee);
	}
	free(buf);
	free(pieces);
	return 0;
}
