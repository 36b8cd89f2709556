/* Producing a layer's tar bytes from its source, each vouched for by a digest
 * from the archive or the manifest before it leaves this file.
 *
 * What vouches for what:
 *   - a checkpoint span of a gzip layer: the digests of its compressed pieces
 *     and of its window, checked by clip_gz_index_read before the inflater
 *     sees a byte;
 *   - a range of a plain tar, or a chunk of a whole layer as it streams: the
 *     archive's hash of every chunk on the archive's grid (the range widened
 *     to whole chunks of that grid, whatever grid the cache uses);
 *   - with no chunk hashes (archives of format 1): only the blob digest, so
 *     the whole layer is streamed, and nothing it produced is kept or handed
 *     on before the digest at its end matched.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip/decoder.h"
#include "content_internal.h"
#include "sha256.h"
#include "util.h"

int content_chunk_verify(struct clip_content *c, const struct layer_state *l, uint64_t i,
			 const void *data, size_t len, unsigned char hash[32], struct clip_err *err)
{
	clip_sha256_once(data, len, hash);
	const unsigned char *want =
		c->hash_bytes ? clip_archive_chunk_hash(c->archive, l->index, i) : NULL;
	if (want == NULL || memcmp(want, hash, 32) != 0)
		return clip_err_set(err, EBADMSG,
				    want ? "chunk %llu does not match its hash in the archive"
					 : "chunk %llu has no hash in the archive to vouch for it",
				    (unsigned long long)i);
	return 0;
}

bool content_ranges_vouched(const struct clip_content *c, const struct layer_state *l)
{
	return l->gz != NULL || (l->info.compression == CLIP_COMPRESSION_NONE && c->hash_bytes);
}

static void count_gz(struct clip_content *c, const struct clip_gz_read_stats *gz)
{
	CLIP_COUNT(c->counters.spans, gz->spans);
	CLIP_COUNT(c->counters.compressed_bytes, gz->compressed_bytes);
	CLIP_COUNT(c->counters.inflated_bytes, gz->inflated_bytes);
}

/* Plain tar bytes [off, off+len): the whole chunks of the archive's grid
 * around them are read and verified, then the range is copied out. */
static ssize_t plain_read(struct clip_content *c, struct layer_state *l, unsigned char *buf,
			  size_t len, uint64_t off, struct clip_err *err)
{
	uint64_t grid = c->hash_bytes, usize = l->info.uncompressed_size;
	uint64_t start = off - off % grid;
	uint64_t end = off + len + grid - 1 - (off + len + grid - 1) % grid;
	if (end > usize)
		end = usize;
	size_t span = (size_t)(end - start);
	cleanup_free unsigned char *tmp = NULL;
	unsigned char *data = buf;
	if (start != off || span != len) {
		tmp = malloc(span);
		if (tmp == NULL)
			return clip_err_nomem(err);
		data = tmp;
	}
	ssize_t n = clip_source_blob_pread(&l->blob, data, span, start, err);
	if (n < 0)
		return n;
	CLIP_COUNT(c->counters.compressed_bytes, n);
	if ((size_t)n != span)
		return clip_err_set(err, EIO, "blob ends at %llu, the archive expects %llu",
				    (unsigned long long)(start + (uint64_t)n),
				    (unsigned long long)end);
	for (uint64_t pos = start; pos < end; pos += grid) {
		unsigned char hash[32];
		size_t clen = (size_t)(end - pos < grid ? end - pos : grid);
		int rc = content_chunk_verify(c, l, pos / grid, data + (pos - start), clen, hash,
					      err);
		if (rc < 0)
			return rc;
	}
	if (data != buf)
		memcpy(buf, data + (off - start), len);
	return (ssize_t)len;
}

/* A remote blob read into a worker's reusable buffer, as clip_blob_source's
 * map: the reader's own copy would be a fresh allocation every time. Pieces
 * a recent read fetched come from the piece cache (content_pieces.c). */
struct buffered_blob {
	struct clip_content *c;
	struct layer_state *l;
	struct content_buf *buf;
};

static ssize_t buffered_pread(void *opaque, void *dst, size_t len, uint64_t offset,
			      struct clip_err *err)
{
	struct buffered_blob *b = opaque;
	return clip_source_blob_pread(&b->l->blob, dst, len, offset, err);
}

/* [offset, offset+len) of the blob into data: the leading pieces the piece
 * cache has from it, the rest from the source in one request (and kept). */
static ssize_t pieces_pread(struct buffered_blob *b, unsigned char *data, size_t len,
			    uint64_t offset, struct clip_err *err)
{
	struct content_pieces *pc = b->c->pieces;
	uint64_t piece = b->l->gz ? b->l->gz->piece_bytes : 0;
	if (pc == NULL || piece == 0 || offset % piece != 0)
		return clip_source_blob_pread(&b->l->blob, data, len, offset, err);
	size_t pos = 0;
	while (pos < len) {
		size_t plen = len - pos < piece ? len - pos : (size_t)piece;
		if (content_pieces_get(pc, b->l->index, (offset + pos) / piece, data + pos, plen) !=
		    plen)
			break;
		pos += plen;
	}
	CLIP_COUNT(b->c->counters.compressed_reused, pos);
	if (pos == len)
		return (ssize_t)len;
	ssize_t n = clip_source_blob_pread(&b->l->blob, data + pos, len - pos, offset + pos, err);
	if (n < 0)
		return n;
	for (size_t at = 0; at < (size_t)n; at += (size_t)piece) {
		size_t plen = (size_t)n - at < piece ? (size_t)n - at : (size_t)piece;
		content_pieces_put(pc, b->l->index, (offset + pos + at) / piece, data + pos + at,
				   plen);
	}
	return (ssize_t)(pos + (size_t)n);
}

static int buffered_map(void *opaque, uint64_t offset, size_t len, struct clip_blob_map *m,
			struct clip_err *err)
{
	struct buffered_blob *b = opaque;
	unsigned char *own = NULL;
	unsigned char *data = content_buf_get(b->buf, len, &own);
	if (data == NULL)
		return clip_err_nomem(err);
	ssize_t n = pieces_pread(b, data, len, offset, err);
	if (n >= 0 && (size_t)n < len)
		n = clip_err_set(err, EIO,
				 "compressed blob: ends at %llu, index expects %llu bytes",
				 (unsigned long long)(offset + (uint64_t)n),
				 (unsigned long long)(offset + len));
	if (n < 0)
		return (int)n;
	*m = (struct clip_blob_map){ data, NULL, 0 };
	return 0;
}

ssize_t content_span_read(struct clip_content *c, struct layer_state *l, void *buf, size_t len,
			  uint64_t off, struct content_buf *cbuf, struct clip_err *err)
{
	if (l->gz == NULL)
		return plain_read(c, l, buf, len, off, err);
	struct clip_blob_source src = clip_source_blob_reader(&l->blob);
	/* A read of its own (no worker's buffer) gets one for this read. */
	struct content_buf mine = { 0 };
	struct buffered_blob bb = { c, l, cbuf ? cbuf : &mine };
	if (src.map == NULL)
		src = (struct clip_blob_source){ buffered_pread, &bb, buffered_map };
	struct clip_gz_read_stats gz = { 0 };
	ssize_t n = clip_gz_index_read(l->gz, &src, buf, len, off, &gz, err);
	count_gz(c, &gz);
	free(mine.data);
	return n;
}

/* ---- whole layers -------------------------------------------------------- */

/* Where a streamed layer's bytes go: called with tar bytes [off, off+len) in
 * order. `vouched`: checked against the archive's chunk hashes (then `hash`
 * is their SHA-256); otherwise only the blob digest at the end of the stream
 * will vouch for them. Returns 0 to go on, 1 to stop the stream (only once
 * what the sink needs is vouched for), or a negative errno. */
struct layer_sink {
	int (*bytes)(void *opaque, uint64_t off, const unsigned char *data, size_t len,
		     const unsigned char *hash, bool vouched, struct clip_err *err);
	void *opaque;
};

struct layer_stream {
	struct clip_content *c;
	struct layer_state *l;
	const struct layer_sink *sink;
	unsigned char *unit; /* the unit being filled: a chunk of the hash grid */
	size_t unit_cap, fill;
	uint64_t produced; /* tar bytes so far */
};

/* Pass a full unit (or the last, short one) to the sink. */
static int stream_emit(struct layer_stream *s, struct clip_err *err)
{
	uint64_t off = s->produced - s->fill;
	unsigned char hash[32];
	bool vouched = s->c->hash_bytes != 0;
	if (vouched) {
		int rc = content_chunk_verify(s->c, s->l, off / s->unit_cap, s->unit, s->fill, hash,
					      err);
		if (rc < 0)
			return rc;
	}
	int rc = s->sink->bytes(s->sink->opaque, off, s->unit, s->fill, vouched ? hash : NULL,
				vouched, err);
	s->fill = 0;
	return rc;
}

/* Decode one block of compressed input into units. 1 when the sink stopped
 * the stream. */
static int stream_decode(struct layer_stream *s, struct clip_decoder *d, const unsigned char *in,
			 size_t n, struct clip_err *err)
{
	uint64_t usize = s->l->info.uncompressed_size;
	size_t pos = 0;
	for (;;) {
		size_t used = 0, made = 0;
		int rc = clip_decoder_run(d, in + pos, n - pos, &used, s->unit + s->fill,
					  s->unit_cap - s->fill, &made, NULL, 0, NULL, err);
		if (rc < 0)
			return rc;
		pos += used;
		s->fill += made;
		s->produced += made;
		if (s->produced > usize)
			return clip_err_set(err, EBADMSG,
					    "layer inflates to more than the %llu bytes indexed",
					    (unsigned long long)usize);
		if (s->fill == s->unit_cap || (s->fill && s->produced == usize)) {
			rc = stream_emit(s, err);
			if (rc != 0)
				return rc;
		}
		if (pos == n && made == 0)
			return 0;
	}
}

static void digest_hex(struct clip_sha256 *sha, char out[72])
{
	unsigned char md[32];
	clip_sha256_final(sha, md);
	memcpy(out, "sha256:", 7);
	for (int i = 0; i < 32; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
}

/* Stream layer l from its start through the decoder into `sink`, in units of
 * the hash grid (the cache's grid when the archive has no hashes). 0 once
 * the whole layer was produced and its blob digest matched (so every byte
 * passed unvouched is vouched for now), 1 when the sink stopped it early, or
 * a negative errno. */
static int layer_stream(struct clip_content *c, struct layer_state *l,
			const struct layer_sink *sink, struct clip_err *err)
{
	struct layer_stream s = { c, l, sink, NULL, 0, 0, 0 };
	s.unit_cap = (size_t)(c->hash_bytes ? c->hash_bytes : c->chunk_bytes);
	const size_t in_cap = 1 << 18;
	cleanup_free unsigned char *in = malloc(in_cap);
	cleanup_free unsigned char *unit = malloc(s.unit_cap);
	struct clip_decoder *d = NULL;
	struct clip_stream stream = { 0 };
	s.unit = unit;
	int rc = in && unit ? 0 : clip_err_nomem(err);
	if (rc == 0)
		rc = clip_decoder_new(l->info.compression, &d, err);
	if (rc == 0)
		rc = clip_source_blob_stream(&l->blob, &stream, err);
	/* Counted when it starts, not when it ends: a stream that fails or is
	 * stopped early (a read without a cache) was still paid for. */
	if (rc == 0) {
		CLIP_COUNT(c->counters.whole_layer_fetches[l->fallback], 1);
		CLIP_COUNT(l->whole_layer_fetches, 1);
	}
	struct clip_sha256 blob_sha;
	clip_sha256_init(&blob_sha);
	uint64_t consumed = 0;
	while (rc == 0) {
		ssize_t n = stream.read(stream.opaque, in, in_cap, err);
		if (n <= 0) {
			rc = (int)n;
			break;
		}
		consumed += (uint64_t)n;
		clip_sha256_update(&blob_sha, in, (size_t)n);
		rc = stream_decode(&s, d, in, (size_t)n, err);
	}
	if (rc == 0)
		rc = clip_decoder_finish(d, err);
	if (rc == 0 && s.produced != l->info.uncompressed_size)
		rc = clip_err_set(err, EBADMSG,
				  "layer inflates to %llu bytes, the archive says %llu",
				  (unsigned long long)s.produced,
				  (unsigned long long)l->info.uncompressed_size);
	if (rc == 0) {
		char digest[72];
		digest_hex(&blob_sha, digest);
		if (strcmp(digest, l->info.digest) != 0)
			rc = clip_err_set(err, EBADMSG, "digest mismatch: the blob hashes to %s",
					  digest);
	}
	CLIP_COUNT(c->counters.compressed_bytes, consumed);
	CLIP_COUNT(c->counters.inflated_bytes, s.produced);
	if (stream.close)
		stream.close(stream.opaque);
	clip_decoder_free(d);
	return rc;
}

/* The cache sink: cuts the stream into cache chunks and keeps each one,
 * published at once when vouched for, staged until the end otherwise. */
struct cache_sink {
	struct clip_content *c;
	struct layer_state *l;
	struct chunk_want *want;
	unsigned char *chunk; /* assembles cache chunks when the grids differ */
	size_t fill;
	struct clip_diskcache_staging *staging;
};

static int cache_keep(struct cache_sink *s, uint64_t k, const unsigned char *data, size_t len,
		      const unsigned char *hash, bool vouched, struct clip_err *err)
{
	unsigned char own[32];
	if (hash == NULL) {
		clip_sha256_once(data, len, own);
		hash = own;
	}
	content_want_fill(s->want, k, data);
	CLIP_COUNT(s->c->counters.tier[CLIP_TIER_LAYER].bytes, len);
	if (vouched) {
		content_chunk_store(s->c, s->l, k, data, len, hash, true);
		return 0;
	}
	if (s->c->cache == NULL)
		return 0;
	if (s->staging == NULL) {
		int rc = clip_diskcache_stage_begin(s->c->cache, s->l->hex, &s->staging, err);
		if (rc < 0)
			return rc;
	}
	/* A disk that cannot stage only costs speed, as a failed put does. */
	struct clip_err e = { 0 };
	if (clip_diskcache_stage(s->staging, k, data, len, hash, &e) < 0)
		CLIP_COUNT(s->c->counters.tier[CLIP_TIER_DISK].errors, 1);
	return 0;
}

static int cache_sink_bytes(void *opaque, uint64_t off, const unsigned char *data, size_t len,
			    const unsigned char *hash, bool vouched, struct clip_err *err)
{
	struct cache_sink *s = opaque;
	struct clip_content *c = s->c;
	uint64_t cb = c->chunk_bytes, usize = s->l->info.uncompressed_size;
	/* Units on the cache's own grid are cache chunks already. */
	if (s->chunk == NULL)
		return cache_keep(s, off / cb, data, len, hash, vouched, err);
	while (len > 0) {
		uint64_t k = off / cb;
		size_t clen = content_chunk_len(c, s->l, k);
		size_t take = clen - s->fill < len ? clen - s->fill : len;
		memcpy(s->chunk + s->fill, data, take);
		s->fill += take;
		off += take;
		data += take;
		len -= take;
		if (s->fill == clen || off == usize) {
			int rc = cache_keep(s, k, s->chunk, s->fill, NULL, vouched, err);
			s->fill = 0;
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

int content_layer_fetch(struct clip_content *c, struct layer_state *l, struct chunk_want *want,
			struct clip_err *err)
{
	struct cache_sink s = { c, l, want, NULL, 0, NULL };
	if (c->hash_bytes && c->hash_bytes != c->chunk_bytes) {
		s.chunk = malloc((size_t)c->chunk_bytes);
		if (s.chunk == NULL)
			return clip_err_nomem(err);
	}
	const struct layer_sink sink = { cache_sink_bytes, &s };
	int rc = layer_stream(c, l, &sink, err);
	/* The blob digest matched: what was staged is vouched for now. */
	if (rc == 0 && s.staging && clip_diskcache_stage_publish(s.staging, err) < 0)
		CLIP_COUNT(c->counters.tier[CLIP_TIER_DISK].errors, 1);
	clip_diskcache_stage_free(s.staging);
	free(s.chunk);
	return rc < 0 ? rc : 0;
}

/* The range sink: copies the part of the stream a read wants, and stops the
 * stream once that part is vouched for. */
struct range_sink {
	unsigned char *buf;
	size_t len;
	uint64_t off;
};

static int range_sink_bytes(void *opaque, uint64_t off, const unsigned char *data, size_t len,
			    const unsigned char *hash, bool vouched, struct clip_err *err)
{
	(void)hash;
	(void)err;
	struct range_sink *r = opaque;
	uint64_t end = off + len, want_end = r->off + r->len;
	uint64_t from = off > r->off ? off : r->off, to = end < want_end ? end : want_end;
	if (from < to)
		memcpy(r->buf + (from - r->off), data + (from - off), (size_t)(to - from));
	return vouched && end >= want_end ? 1 : 0;
}

ssize_t content_direct_read(struct clip_content *c, struct layer_state *l, void *buf, size_t len,
			    uint64_t off, struct clip_err *err)
{
	if (content_ranges_vouched(c, l))
		return content_span_read(c, l, buf, len, off, NULL, err);
	struct range_sink r = { buf, len, off };
	const struct layer_sink sink = { range_sink_bytes, &r };
	int rc = layer_stream(c, l, &sink, err);
	return rc < 0 ? rc : (ssize_t)len;
}
