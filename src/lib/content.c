/* File contents: from an inode to the bytes of its layer, through the tiers.
 *
 * A read of inode `ino` at `offset` is a read of its layer's uncompressed tar
 * at data_offset + offset. With a disk cache, that range is served chunk by
 * chunk (chunk i = tar bytes [i*C, (i+1)*C)), each chunk from the fastest
 * tier that has it:
 *   1. disk: the local disk cache (clip/diskcache.h);
 *   2. memory: the chunks the disk cache could not be counted on to keep
 *      (clip/memcache.h): none there, a put that failed or was declined, or
 *      a full disk that evicts what it just took to make room for the next;
 *   3. remote: a shared content cache (clip/rcache.h), Redis behind it;
 *   4. span: the chunk's range produced from the source — checkpoint spans
 *      of a gzip layer (one Range request for the spans needed), or the
 *      range of a plain tar;
 *   5. layer: the whole layer fetched once as a stream and decoded (zstd
 *      layers, gzip without checkpoints, --no-checkpoints), every chunk of it
 *      kept in the disk cache on the way.
 * The source tiers (4 and 5) live in content_produce.c, which hands out only
 * bytes a digest from the archive or the manifest vouches for; chunks from
 * the remote cache are checked against the archive's chunk hashes. Whatever
 * a slower tier produced is kept in the faster ones. Concurrent reads of the
 * same chunk wait for one fetch.
 *
 * Without a disk cache (`clip cat`) chunking would only cost: reads go
 * straight to the source, as small as what vouches for them allows.
 *
 * No thread is started here and nothing touches the network before the first
 * read, so the FUSE front end can fork after clip_content_open.
 */
#include "clip/content.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clip/indexer.h"
#include "content_internal.h"
#include "sha256.h"
#include "util.h"

/* Chunks [first, last] of a layer being fetched; others wanting one of them
 * wait on `done`. In-flight ranges of one layer never overlap. */
struct inflight {
	uint32_t layer;
	uint64_t first, last;
	bool finished;
	int waiters;
	pthread_cond_t done;
	struct inflight *next;
};

uint64_t content_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void content_count_tier(struct clip_content *c, enum clip_tier tier, int outcome, uint64_t bytes,
			uint64_t t0)
{
	struct tier_counters *t = &c->counters.tier[tier];
	if (outcome > 0)
		CLIP_COUNT(t->hits, 1);
	else if (outcome == 0)
		CLIP_COUNT(t->misses, 1);
	else
		CLIP_COUNT(t->errors, 1);
	CLIP_COUNT(t->bytes, bytes);
	CLIP_COUNT(t->nanoseconds, content_now_ns() - t0);
}

static int open_source(struct clip_content *c, const struct clip_content_options *o,
		       struct clip_err *err)
{
	const struct clip_registry_options *ro = o ? o->registry : NULL;
	if (o && o->source_ops) {
		clip_source_open_ops(o->source_ops, &c->source);
		return 0;
	}
	if (o && o->source)
		return clip_source_open_text(o->source, ro, &c->source, err);
	return clip_source_open_record(clip_archive_source_json(c->archive), ro, &c->source, err);
}

static int open_caches(struct clip_content *c, const struct clip_content_options *o,
		       struct clip_err *err)
{
	if (o && o->cache_dir) {
		struct clip_diskcache_options dco = { o->cache_dir, o->cache_max };
		int rc = clip_diskcache_open(&dco, &c->cache, err);
		if (rc < 0)
			return clip_err_prefix(err, "disk cache");
	}
	if (o && o->remote_cache) {
		int rc =
			clip_rcache_open(o->remote_cache, o->remote_cache_options, &c->rcache, err);
		if (rc < 0)
			return clip_err_prefix(err, "remote cache");
	}
	/* Without a disk or a remote cache reads are not made of chunks, so
	 * there would be nothing to keep. */
	uint64_t mem = o ? o->memory_cache_max : 0;
	if ((c->cache || c->rcache) && mem != CLIP_MEMORY_CACHE_OFF) {
		int rc = clip_memcache_open(mem ? mem : CLIP_DEFAULT_MEMORY_CACHE, &c->memcache,
					    err);
		if (rc < 0)
			return clip_err_prefix(err, "memory cache");
	}
	return 0;
}

int content_load_replay(struct clip_content *c, const struct clip_profile *profile,
			struct clip_err *err)
{
	cleanup_free uint32_t *map = calloc(profile->nlayers ? profile->nlayers : 1, sizeof(*map));
	if (map == NULL)
		return clip_err_nomem(err);
	int rc = clip_profile_match(profile, c->archive, map, err);
	return rc < 0 ? rc : content_engine_replay_load(c, profile, map, err);
}

/* Why layer l can only be read whole: what content_layer_prepare and
 * content_ranges_vouched decide, known before the layer is prepared. */
static enum clip_fallback layer_fallback(const struct clip_content *c, const struct layer_state *l)
{
	switch (l->info.compression) {
	case CLIP_COMPRESSION_GZIP:
		return c->no_checkpoints	   ? CLIP_FALLBACK_OPTION
		       : l->info.ncheckpoints == 0 ? CLIP_FALLBACK_NO_CHECKPOINTS
						   : CLIP_FALLBACK_NONE;
	case CLIP_COMPRESSION_NONE:
		return c->hash_bytes ? CLIP_FALLBACK_NONE : CLIP_FALLBACK_NO_CHUNK_HASHES;
	default: return CLIP_FALLBACK_ZSTD;
	}
}

const char *clip_fallback_name(enum clip_fallback reason)
{
	static const char *const names[] = { "none", "no_checkpoints_option", "no_checkpoints",
					     "zstd", "no_chunk_hashes" };
	return (unsigned)reason < CLIP_ARRAY_SIZE(names) ? names[reason] : "unknown";
}

int clip_content_open(const struct clip_archive *archive, const struct clip_content_options *o,
		      struct clip_content **out, struct clip_err *err)
{
	struct clip_content *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return clip_err_nomem(err);
	c->archive = archive;
	c->no_checkpoints = o && o->no_checkpoints;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->engine_wake, NULL);
	pthread_cond_init(&c->engine_idle, NULL);
	c->hydrate_percent = !o || o->hydrate_percent == 0 ? CLIP_DEFAULT_HYDRATE_PERCENT
			     : o->hydrate_percent > 100	   ? 0
							   : o->hydrate_percent;
	c->cache_max = o ? o->cache_max : 0;
	c->recorder = o ? o->record_profile : NULL;
	struct clip_archive_stats st;
	clip_archive_stats(archive, &st);
	c->nlayers = st.layers;
	c->layers = calloc(c->nlayers ? c->nlayers : 1, sizeof(*c->layers));
	if (c->layers == NULL) {
		free(c);
		return clip_err_nomem(err);
	}
	for (uint32_t i = 0; i < c->nlayers; i++) {
		struct layer_state *l = &c->layers[i];
		l->blob.fd = -1;
		l->index = i;
		pthread_cond_init(&l->streamed, NULL);
		clip_archive_layer(archive, i, &l->info);
		const char *colon = strchr(l->info.digest, ':');
		snprintf(l->hex, sizeof(l->hex), "%s", colon ? colon + 1 : l->info.digest);
	}
	c->hash_bytes = st.chunk_bytes;
	c->chunk_bytes = o && o->chunk_size ? o->chunk_size
			 : st.chunk_bytes   ? st.chunk_bytes
					    : CLIP_DEFAULT_CHUNK_BYTES;
	c->archive_hashes = st.chunk_bytes != 0 && c->chunk_bytes == st.chunk_bytes;
	for (uint32_t i = 0; i < c->nlayers; i++)
		c->layers[i].fallback = layer_fallback(c, &c->layers[i]);
	int rc = open_source(c, o, err);
	if (rc < 0) {
		clip_content_close(c);
		return clip_err_prefix(err, "image source");
	}
	rc = open_caches(c, o, err);
	/* Pieces of remote blobs that one read fetched and the next may need
	 * (content_pieces.c); a local blob is mapped instead. */
	if (rc == 0 && st.piece_bytes && c->source.registry &&
	    (c->pieces = content_pieces_new((size_t)st.piece_bytes, CONTENT_PIECES_MAX)) == NULL)
		rc = clip_err_nomem(err);
	if (rc == 0 && o && o->replay_profile)
		rc = content_load_replay(c, o->replay_profile, err);
	if (rc < 0) {
		clip_content_close(c);
		return rc;
	}
	*out = c;
	return 0;
}

int content_layer_prepare(struct clip_content *c, struct layer_state *l, struct clip_err *err)
{
	int rc = 0;
	pthread_mutex_lock(&c->lock);
	if (!l->ready) {
		rc = clip_source_blob_open(&c->source, l->info.digest, l->info.compressed_size,
					   &l->blob, err);
		if (rc == 0 && l->info.compression == CLIP_COMPRESSION_GZIP && !c->no_checkpoints &&
		    l->info.ncheckpoints > 0)
			rc = clip_archive_layer_gzindex(c->archive, l->index, &l->gz, err);
		if (rc == 0)
			l->ready = true;
		else
			clip_source_blob_close(&l->blob);
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* ---- chunks ------------------------------------------------------------- */

uint64_t content_chunk_count(const struct clip_content *c, const struct layer_state *l)
{
	return (l->info.uncompressed_size + c->chunk_bytes - 1) / c->chunk_bytes;
}

size_t content_chunk_len(const struct clip_content *c, const struct layer_state *l, uint64_t k)
{
	uint64_t start = k * c->chunk_bytes;
	uint64_t end = start + c->chunk_bytes;
	if (end > l->info.uncompressed_size)
		end = l->info.uncompressed_size;
	return (size_t)(end - start);
}

/* The archive's hash of cache chunk k, when the grids agree. */
static const unsigned char *expected_hash(struct clip_content *c, const struct layer_state *l,
					  uint64_t k)
{
	return c->archive_hashes ? clip_archive_chunk_hash(c->archive, l->index, k) : NULL;
}

void content_want_fill(struct chunk_want *w, uint64_t k, const unsigned char *data)
{
	if (w && !w->done && w->chunk == k) {
		memcpy(w->buf, data + w->off, w->len);
		w->done = true;
	}
}

/* How long background work waits for room in the remote cache's store
 * queue: a few store timeouts (250 ms), after which a stuck server has been
 * marked down and the queue drains by dropping. */
#define REMOTE_STORE_WAIT_MS 1000

void content_chunk_store(struct clip_content *c, const struct layer_state *l, uint64_t k,
			 const void *data, size_t len, const unsigned char hash[32], bool to_remote)
{
	struct clip_err e = { 0 };
	bool kept = false;
	if (c->cache) {
		int rc = clip_diskcache_put(c->cache, l->hex, k, data, len, hash, &e);
		if (rc < 0)
			CLIP_COUNT(c->counters.tier[CLIP_TIER_DISK].errors, 1);
		kept = rc == 0 && !clip_diskcache_full(c->cache);
	}
	/* What the disk did not keep, or may evict before it is read (a full
	 * disk makes room for each put by evicting the oldest chunks, which may
	 * be the ones just put for the reads to come), stays in memory:
	 * otherwise every read of it would produce it again, a whole gzip span
	 * inflated for each 128 KiB FUSE asks for. */
	if (c->memcache && !kept)
		clip_memcache_put(c->memcache, l->hex, k, data, len, &e);
	/* Only chunks the archive has a hash for are worth sharing: nobody
	 * could verify the others. The store is queued, never waited for; when
	 * the queue is full, background work waits for room (it would otherwise
	 * throw away what other nodes will need), a program's read does not. */
	char key[256];
	if (to_remote && c->rcache && c->archive_hashes &&
	    clip_rcache_key(c->rcache, l->hex, k, key, sizeof(key)) > 0)
		c->rcache->ops->put(c->rcache->self, key, data, len,
				    content_engine_in_worker() ? REMOTE_STORE_WAIT_MS : 0, &e);
}

/* Tier 2: chunk k whole from the remote cache into `data` (chunk_len
 * bytes), verified against the archive's hash. 1 on a hit, 0 on a miss
 * (absent, failed, slow, or not matching its hash: all counted, never an
 * error, since the slower tiers can always answer). */
static int remote_get(struct clip_content *c, const struct layer_state *l, uint64_t k,
		      unsigned char *data, size_t len)
{
	char key[256];
	if (c->rcache == NULL || !c->archive_hashes ||
	    clip_rcache_key(c->rcache, l->hex, k, key, sizeof(key)) < 0)
		return 0;
	uint64_t t0 = content_now_ns();
	struct clip_err e = { 0 };
	ssize_t n = c->rcache->ops->get(c->rcache->self, key, data, len, 0, &e);
	if (n == -ENOENT || (n >= 0 && (size_t)n != len)) {
		content_count_tier(c, CLIP_TIER_REMOTE, 0, 0, t0);
		return 0;
	}
	if (n < 0) {
		content_count_tier(c, CLIP_TIER_REMOTE, -1, 0, t0);
		return 0;
	}
	unsigned char hash[32];
	if (content_chunk_verify(c, l, k, data, len, hash, &e) < 0) {
		/* A poisoned or stale entry: count it and fall through. */
		CLIP_COUNT(c->counters.remote_verify_failures, 1);
		content_count_tier(c, CLIP_TIER_REMOTE, -1, 0, t0);
		return 0;
	}
	content_count_tier(c, CLIP_TIER_REMOTE, 1, len, t0);
	content_chunk_store(c, l, k, data, len, hash, false);
	return 1;
}

/* The chunks [*first, *last] one fetch for chunk k should produce. A gzip
 * span is inflated from its start whatever part of it is wanted, and chunks
 * are smaller than spans, so every chunk lying wholly inside the spans that
 * chunk k needs comes at no extra fetch and little extra inflate: producing
 * them now saves fetching and inflating the same span again for the next
 * chunk. Bounded so that pathological spans (hundreds of MiB in one deflate
 * block) do not become huge buffers. */
#define SPAN_BATCH_MAX (16u << 20)
void content_span_batch(const struct clip_content *c, const struct layer_state *l, uint64_t k,
			const struct extent *file, uint64_t *first, uint64_t *last)
{
	*first = *last = k;
	if (l->gz == NULL || l->gz->count == 0)
		return;
	uint64_t start = k * c->chunk_bytes;
	uint64_t end = start + content_chunk_len(c, l, k);
	ssize_t i = clip_gz_index_find(l->gz, start);
	ssize_t j = clip_gz_index_find(l->gz, end - 1);
	if (i < 0 || j < 0)
		return;
	uint64_t span_start = l->gz->points[i].out;
	uint64_t span_end =
		(size_t)j + 1 < l->gz->count ? l->gz->points[j + 1].out : l->info.uncompressed_size;
	uint64_t lo = (span_start + c->chunk_bytes - 1) / c->chunk_bytes;
	uint64_t hi = span_end == l->info.uncompressed_size ? content_chunk_count(c, l)
							    : span_end / c->chunk_bytes;
	uint64_t max_chunks = SPAN_BATCH_MAX / c->chunk_bytes;
	if (max_chunks == 0)
		max_chunks = 1;
	/* Chunks before k inside the span come free: the inflate passes
	 * through them anyway. After k, only chunks of the file being read:
	 * the rest of a span usually holds other files that nobody may read,
	 * and inflating it for them would cost as much as the read itself
	 * (small files, scattered) -- unless the layer is dense enough that
	 * it is being hydrated, and the rest of the span is wanted soon. */
	uint64_t file_hi = (file->end + c->chunk_bytes - 1) / c->chunk_bytes;
	if (hi > file_hi && !l->hydrating)
		hi = file_hi;
	if (lo > k)
		lo = k;
	if (lo < k && k - lo >= max_chunks)
		lo = k;
	if (hi > lo + max_chunks)
		hi = lo + max_chunks;
	if (lo < k)
		*first = lo;
	if (hi > k + 1)
		*last = hi - 1;
}

/* Set on a thread whose request needed a whole-layer fetch: it ran one or
 * waited for another's. A program's read is served on its own thread, so
 * clip_content_read clears it before the read and finds it set after when
 * the read fell back to tier 5 (the engine's workers set it unread). */
static _Thread_local bool fell_back;

/* Tier 4 for chunk_fetch: one whole-layer fetch at a time; the others wait
 * for it and then look for their chunk in the cache (1: look again). */
static int layer_tier(struct clip_content *c, struct layer_state *l, struct chunk_want *want,
		      struct clip_err *err)
{
	fell_back = true;
	if (l->streaming) {
		CLIP_COUNT(c->counters.coalesced, 1);
		while (l->streaming)
			pthread_cond_wait(&l->streamed, &c->lock);
		pthread_mutex_unlock(&c->lock);
		return 1;
	}
	l->streaming = true;
	pthread_mutex_unlock(&c->lock);
	uint64_t t0 = content_now_ns();
	int rc = content_layer_fetch(c, l, want, err);
	content_count_tier(c, CLIP_TIER_LAYER, rc < 0 ? -1 : 1, 0, t0);
	pthread_mutex_lock(&c->lock);
	l->streaming = false;
	pthread_cond_broadcast(&l->streamed);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* Tier 3: produce chunks [first, last] from their spans (or plain tar
 * range), and keep each one. */
static int span_tier(struct clip_content *c, struct layer_state *l, uint64_t first, uint64_t last,
		     struct chunk_want *want, struct run_buffers *bufs, struct clip_err *err)
{
	uint64_t start = first * c->chunk_bytes;
	size_t len = (size_t)(last * c->chunk_bytes + content_chunk_len(c, l, last) - start);
	cleanup_free unsigned char *own = NULL;
	unsigned char *data = content_buf_get(bufs ? &bufs->tar : NULL, len, &own);
	if (data == NULL)
		return clip_err_nomem(err);
	uint64_t t0 = content_now_ns();
	ssize_t n = content_span_read(c, l, data, len, start, bufs ? &bufs->compressed : NULL, err);
	if (n >= 0 && (size_t)n != len)
		n = clip_err_set(err, EIO, "chunks %llu-%llu end early (%zd of %zu bytes)",
				 (unsigned long long)first, (unsigned long long)last, n, len);
	int rc = n < 0 ? (int)n : 0;
	for (uint64_t i = first; rc == 0 && i <= last; i++) {
		unsigned char hash[32];
		const unsigned char *p = data + (i - first) * c->chunk_bytes;
		size_t clen = content_chunk_len(c, l, i);
		/* Vouched for already; where the grids agree, the archive's hash
		 * checks the inflated bytes once more, for the price of the
		 * hash the cache needs anyway. */
		if (c->archive_hashes)
			rc = content_chunk_verify(c, l, i, p, clen, hash, err);
		else
			clip_sha256_once(p, clen, hash);
		if (rc == 0) {
			content_chunk_store(c, l, i, p, clen, hash, true);
			content_want_fill(want, i, p);
		}
	}
	content_count_tier(c, CLIP_TIER_SPAN, rc < 0 ? -1 : 1, rc < 0 ? 0 : len, t0);
	return rc;
}

unsigned char *content_buf_get(struct content_buf *buf, size_t len, unsigned char **own)
{
	if (buf == NULL)
		return *own = malloc(len ? len : 1);
	if (buf->cap < len) {
		free(buf->data);
		buf->data = malloc(len);
		buf->cap = buf->data ? len : 0;
	}
	return buf->data;
}

/* The in-flight fetch of layer l holding chunk k, or NULL. Under c->lock. */
static struct inflight *inflight_find(struct clip_content *c, uint32_t layer, uint64_t k)
{
	for (struct inflight *f = c->inflight; f; f = f->next)
		if (f->layer == layer && f->first <= k && k <= f->last)
			return f;
	return NULL;
}

/* Wait for in-flight fetch f to end, and let go of it. Under c->lock. */
static void inflight_wait(struct clip_content *c, struct inflight *f)
{
	CLIP_COUNT(c->counters.coalesced, 1);
	f->waiters++;
	while (!f->finished)
		pthread_cond_wait(&f->done, &c->lock);
	if (--f->waiters == 0) {
		pthread_cond_destroy(&f->done);
		free(f);
	}
}

uint64_t content_inflight_end(struct clip_content *c, const struct layer_state *l, uint64_t k)
{
	struct inflight *f = inflight_find(c, l->index, k);
	return f ? f->last + 1 : k;
}

void content_inflight_trim(struct clip_content *c, const struct layer_state *l, uint64_t keep,
			   uint64_t *first, uint64_t *last)
{
	for (struct inflight *f = c->inflight; f; f = f->next) {
		if (f->layer != l->index || f->last < *first || f->first > *last)
			continue;
		if (f->last < keep)
			*first = f->last + 1;
		else
			*last = f->first - 1;
	}
}

/* Chunks [first, last]: each from the remote cache when it has it, the rest
 * from the source in as few span reads as the hits leave. */
static int remote_then_spans(struct clip_content *c, struct layer_state *l, uint64_t first,
			     uint64_t last, struct chunk_want *want, struct run_buffers *bufs,
			     struct clip_err *err)
{
	cleanup_free unsigned char *buf = malloc((size_t)c->chunk_bytes);
	if (buf == NULL)
		return clip_err_nomem(err);
	uint64_t from = first; /* the first chunk not had yet */
	for (uint64_t i = first; i <= last + 1; i++) {
		bool hit = i <= last && remote_get(c, l, i, buf, content_chunk_len(c, l, i));
		if (hit)
			content_want_fill(want, i, buf);
		if (!hit && i <= last)
			continue;
		if (from < i) {
			int rc = span_tier(c, l, from, i - 1, want, bufs, err);
			if (rc < 0)
				return rc;
		}
		from = i + 1;
	}
	return 0;
}

int content_fetch_run(struct clip_content *c, struct layer_state *l, uint64_t first, uint64_t last,
		      struct chunk_want *want, bool try_remote, struct run_buffers *bufs,
		      struct clip_err *err)
{
	struct inflight *f = calloc(1, sizeof(*f));
	if (f == NULL) {
		pthread_mutex_unlock(&c->lock);
		return clip_err_nomem(err);
	}
	*f = (struct inflight){ .layer = l->index, .first = first, .last = last, .waiters = 1 };
	pthread_cond_init(&f->done, NULL);
	f->next = c->inflight;
	c->inflight = f;
	pthread_mutex_unlock(&c->lock);

	int rc = try_remote && c->rcache && c->archive_hashes
			 ? remote_then_spans(c, l, first, last, want, bufs, err)
			 : span_tier(c, l, first, last, want, bufs, err);

	pthread_mutex_lock(&c->lock);
	for (struct inflight **p = &c->inflight; *p; p = &(*p)->next) {
		if (*p == f) {
			*p = f->next;
			break;
		}
	}
	f->finished = true;
	pthread_cond_broadcast(&f->done);
	if (--f->waiters == 0) {
		pthread_cond_destroy(&f->done);
		free(f);
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int content_chunk_fetch(struct clip_content *c, struct layer_state *l, uint64_t k,
			const struct extent *file, struct chunk_want *want, bool try_remote,
			struct clip_err *err)
{
	pthread_mutex_lock(&c->lock);
	if (!content_ranges_vouched(c, l))
		return layer_tier(c, l, want, err); /* unlocks */
	struct inflight *f = inflight_find(c, l->index, k);
	if (f) {
		inflight_wait(c, f);
		pthread_mutex_unlock(&c->lock);
		return 1;
	}
	uint64_t first, last;
	content_span_batch(c, l, k, file, &first, &last);
	content_inflight_trim(c, l, k, &first, &last);
	return content_fetch_run(c, l, first, last, want, try_remote, NULL, err); /* unlocks */
}

bool content_chunk_cached(struct clip_content *c, const struct layer_state *l, uint64_t k)
{
	size_t clen = content_chunk_len(c, l, k);
	if (c->memcache && clip_memcache_contains(c->memcache, l->hex, k, clen))
		return true;
	unsigned char probe;
	struct clip_err e = { 0 };
	return c->cache && clip_diskcache_read(c->cache, l->hex, k, clen, expected_hash(c, l, k),
					       &probe, 1, 0, &e) >= 0;
}

/* The memory tier: [off, off+len) of chunk k (of clen bytes) into buf. 1 on
 * a hit, 0 on a miss; both counted. */
static int memory_get(struct clip_content *c, const struct layer_state *l, uint64_t k, size_t clen,
		      void *buf, size_t len, size_t off)
{
	if (c->memcache == NULL)
		return 0;
	uint64_t t0 = content_now_ns();
	struct clip_err e = { 0 };
	ssize_t n = clip_memcache_read(c->memcache, l->hex, k, clen, buf, len, off, &e);
	content_count_tier(c, CLIP_TIER_MEMORY, n >= 0 ? 1 : 0, n >= 0 ? (uint64_t)n : 0, t0);
	return n >= 0;
}

/* Copy [off, off+len) of chunk k (off relative to the chunk) into buf from
 * the fastest tier that has the chunk: the disk cache, the remote cache, or
 * a fetch from the source (which fills the faster tiers). */
static int chunk_read(struct clip_content *c, struct layer_state *l, uint64_t k,
		      const struct extent *file, void *buf, size_t len, size_t off,
		      uint64_t readahead, struct clip_err *err)
{
	size_t clen = content_chunk_len(c, l, k);
	/* A fetch that another reader made for us is looked for in the disk and
	 * memory caches; when neither kept it (a full disk, a memory cache too
	 * small for what is read at once), we fetch it ourselves, a bounded
	 * number of times. */
	for (int attempt = 0; attempt < 4; attempt++) {
		if (c->cache) {
			uint64_t t0 = content_now_ns();
			ssize_t n = clip_diskcache_read(c->cache, l->hex, k, clen,
							expected_hash(c, l, k), buf, len, off, err);
			if (n >= 0) {
				content_count_tier(c, CLIP_TIER_DISK, 1, (uint64_t)n, t0);
				return 0;
			}
			if (n != -ENOENT) {
				content_count_tier(c, CLIP_TIER_DISK, -1, 0, t0);
				return (int)n;
			}
			content_count_tier(c, CLIP_TIER_DISK, 0, 0, t0);
		}
		if (memory_get(c, l, k, clen, buf, len, off))
			return 0;
		if (c->rcache && c->archive_hashes) {
			cleanup_free unsigned char *data = malloc(clen ? clen : 1);
			if (data == NULL)
				return clip_err_nomem(err);
			if (remote_get(c, l, k, data, clen)) {
				memcpy(buf, data + off, len);
				return 0;
			}
		}
		struct chunk_want want = { k, buf, len, off, false };
		/* Chunk k itself was looked for in the remote cache already; a
		 * read waits for no more round trips for the rest of its batch. */
		int rc = content_chunk_fetch(c, l, k, file, &want, false, err);
		if (rc < 0)
			return rc;
		if (want.done) {
			/* A sequential reader had to wait for the source: fetch
			 * what follows in its file meanwhile, on the other cores. */
			if (readahead) {
				uint64_t first, last;
				content_span_batch(c, l, k, file, &first, &last);
				content_engine_readahead(c, l, last + 1, file, readahead);
			}
			return 0;
		}
	}
	return clip_err_set(err, EIO, "chunk %llu: the disk cache does not keep it",
			    (unsigned long long)k);
}

/* How far ahead of this read of inode `ino` to fetch: a window that doubles
 * from READAHEAD_MIN up to READAHEAD_MAX while the file is read in order,
 * and nothing for a read that jumps (page faults of a mapped library, which
 * read-ahead would only make slower and costlier). The kernel's own
 * read-ahead (128 KiB, fuse.c) turns a sequential reader's reads into
 * requests that follow each other exactly. */
#define READAHEAD_MIN (1u << 20)
#define READAHEAD_MAX (32u << 20)
static uint64_t readahead_window(struct clip_content *c, uint32_t ino, uint64_t offset, size_t len)
{
	pthread_mutex_lock(&c->lock);
	struct seq_slot *s = &c->seq[ino % SEQ_SLOTS];
	uint64_t window = 0;
	if (s->ino == ino && s->next == offset && offset > 0) {
		window = s->window ? 2 * s->window : READAHEAD_MIN;
		if (window > READAHEAD_MAX)
			window = READAHEAD_MAX;
	}
	*s = (struct seq_slot){ ino, offset + len, window };
	pthread_mutex_unlock(&c->lock);
	return window;
}

/* Read [tar_off, tar_off+len) of file `file` chunk by chunk through the
 * tiers, reading `readahead` bytes ahead where a read had to wait. */
static ssize_t chunked_read(struct clip_content *c, struct layer_state *l,
			    const struct extent *file, unsigned char *buf, size_t len,
			    uint64_t tar_off, uint64_t readahead, struct clip_err *err)
{
	size_t done = 0;
	while (done < len) {
		uint64_t pos = tar_off + done;
		uint64_t k = pos / c->chunk_bytes;
		size_t in_chunk = (size_t)(pos - k * c->chunk_bytes);
		size_t want = (size_t)c->chunk_bytes - in_chunk;
		if (want > len - done)
			want = len - done;
		int rc = chunk_read(c, l, k, file, buf + done, want, in_chunk, readahead, err);
		if (rc < 0)
			return rc;
		done += want;
	}
	return (ssize_t)done;
}

ssize_t clip_content_read(struct clip_content *c, uint32_t ino, void *buf, size_t len,
			  uint64_t offset, struct clip_err *err)
{
	struct clip_archive_inode inode;
	int irc = clip_archive_inode(c->archive, ino, &inode);
	if (irc == -EBADMSG)
		return clip_err_set(err, EBADMSG, "%s: inode %u is invalid",
				    clip_archive_path(c->archive), ino);
	if (irc < 0)
		return clip_err_set(err, ENOENT, "inode %u does not exist", ino);
	if (S_ISDIR(inode.mode))
		return clip_err_set(err, EISDIR, "inode %u is a directory", ino);
	if (!S_ISREG(inode.mode))
		return clip_err_set(err, EINVAL, "inode %u is not a regular file", ino);
	if (offset >= inode.size || len == 0)
		return 0;
	if (len > inode.size - offset)
		len = (size_t)(inode.size - offset);
	struct layer_state *l = &c->layers[inode.layer];
	int rc = content_layer_prepare(c, l, err);
	if (rc < 0)
		return clip_err_prefix(err, "layer %s", l->info.digest);
	uint64_t tar_off = inode.data_offset + offset;
	if (c->recorder)
		clip_profile_recorder_add(c->recorder, l->index, tar_off, len);
	ssize_t n;
	fell_back = false;
	if (c->cache == NULL && c->rcache == NULL) {
		fell_back = !content_ranges_vouched(c, l);
		uint64_t t0 = content_now_ns();
		n = content_direct_read(c, l, buf, len, tar_off, err);
		content_count_tier(c,
				   content_ranges_vouched(c, l) ? CLIP_TIER_SPAN : CLIP_TIER_LAYER,
				   n < 0 ? -1 : 1, n < 0 ? 0 : (uint64_t)n, t0);
	} else {
		const struct extent file = { inode.data_offset, inode.data_offset + inode.size };
		uint64_t readahead = readahead_window(c, ino, offset, len);
		content_engine_touch(c, l, tar_off, len);
		n = chunked_read(c, l, &file, buf, len, tar_off, readahead, err);
	}
	if (n < 0)
		return clip_err_prefix(err, "layer %s", l->info.digest);
	if ((size_t)n < len)
		return clip_err_set(err, EIO, "layer %s: file data ends early (%zd of %zu bytes)",
				    l->info.digest, n, len);
	CLIP_COUNT(c->counters.reads, 1);
	CLIP_COUNT(c->counters.read_bytes, n);
	CLIP_COUNT(l->reads, 1);
	CLIP_COUNT(l->read_bytes, n);
	if (fell_back) {
		CLIP_COUNT(c->counters.whole_layer_reads[l->fallback], 1);
		CLIP_COUNT(l->whole_layer_reads, 1);
	}
	return n;
}

void clip_content_start(struct clip_content *c)
{
	content_engine_replay_start(c);
}

int clip_content_prefetch(struct clip_content *c, const atomic_bool *stop, struct clip_err *err)
{
	if (c->cache == NULL)
		return clip_err_set(err, ENOTSUP, "prefetch needs a disk cache");
	for (uint32_t i = 0; i < c->nlayers && !atomic_load(stop); i++) {
		struct layer_state *l = &c->layers[i];
		int rc = content_layer_prepare(c, l, err);
		if (rc < 0)
			return clip_err_prefix(err, "layer %s", l->info.digest);
		if (content_ranges_vouched(c, l)) {
			content_engine_hydrate(c, l);
			continue;
		}
		/* One whole-layer fetch brings in every chunk. */
		const struct extent whole = { 0, l->info.uncompressed_size };
		if (!content_chunk_cached(c, l, 0) &&
		    content_chunk_fetch(c, l, 0, &whole, NULL, false, err) < 0)
			return clip_err_prefix(err, "layer %s", l->info.digest);
	}
	content_engine_wait(c, stop);
	/* "Every layer is in the disk cache" would be untrue after a
	 * hydration that the source stopped. */
	int rc = 0;
	pthread_mutex_lock(&c->lock);
	for (uint32_t i = 0; i < c->nlayers && rc == 0 && !atomic_load(stop); i++)
		if (c->layers[i].hydrate_failed)
			rc = clip_err_set(err, c->hydrate_err.code, "%s", c->hydrate_err.msg);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

void clip_content_stats(const struct clip_content *c, struct clip_content_stats *out)
{
	struct content_counters *k = (struct content_counters *)&c->counters;
	*out = (struct clip_content_stats){
		.reads = CLIP_COUNTER_LOAD(k->reads),
		.read_bytes = CLIP_COUNTER_LOAD(k->read_bytes),
		.coalesced = CLIP_COUNTER_LOAD(k->coalesced),
		.gz = { CLIP_COUNTER_LOAD(k->spans), CLIP_COUNTER_LOAD(k->compressed_bytes),
			CLIP_COUNTER_LOAD(k->inflated_bytes) },
		.remote_verify_failures = CLIP_COUNTER_LOAD(k->remote_verify_failures),
		.compressed_reused = CLIP_COUNTER_LOAD(k->compressed_reused),
		.replay_regions = c->nreplay,
		.replay_done = CLIP_COUNTER_LOAD(k->replay_done),
		.replay_errors = CLIP_COUNTER_LOAD(k->replay_errors),
	};
	for (int r = 0; r < CLIP_FALLBACK_COUNT; r++) {
		out->whole_layer_fetches[r] = CLIP_COUNTER_LOAD(k->whole_layer_fetches[r]);
		out->whole_layer_reads[r] = CLIP_COUNTER_LOAD(k->whole_layer_reads[r]);
	}
	for (int t = 0; t < CLIP_TIER_COUNT; t++) {
		struct tier_counters *tc = &k->tier[t];
		out->tier[t] = (struct clip_tier_stats){ CLIP_COUNTER_LOAD(tc->hits),
							 CLIP_COUNTER_LOAD(tc->misses),
							 CLIP_COUNTER_LOAD(tc->bytes),
							 CLIP_COUNTER_LOAD(tc->nanoseconds),
							 CLIP_COUNTER_LOAD(tc->errors) };
	}
	if (c->source.registry) {
		struct clip_registry_stats rs;
		clip_registry_stats(c->source.registry, &rs);
		out->source_requests = rs.requests;
		out->source_bytes = rs.bytes_received;
	} else {
		out->source_bytes = out->gz.compressed_bytes;
	}
}

void clip_content_layer_stats(struct clip_content *c, uint32_t index,
			      struct clip_content_layer_stats *out)
{
	struct layer_state *l = &c->layers[index];
	pthread_mutex_lock(&c->lock);
	*out = (struct clip_content_layer_stats){
		.units = l->nunits,
		.touched = l->ntouched,
		.hydrating = l->hydrating,
		.hydrated = l->hydrated,
		.hydrated_chunks = CLIP_COUNTER_LOAD(l->hydrated_chunks),
		.chunks = content_chunk_count(c, l),
		.reads = CLIP_COUNTER_LOAD(l->reads),
		.read_bytes = CLIP_COUNTER_LOAD(l->read_bytes),
		.fallback = l->fallback,
		.whole_layer_fetches = CLIP_COUNTER_LOAD(l->whole_layer_fetches),
		.whole_layer_reads = CLIP_COUNTER_LOAD(l->whole_layer_reads),
	};
	pthread_mutex_unlock(&c->lock);
}

static json_t *layers_json(struct clip_content *c)
{
	json_t *a = json_array();
	for (uint32_t i = 0; i < c->nlayers; i++) {
		struct clip_content_layer_stats ls;
		clip_content_layer_stats(c, i, &ls);
		json_t *j = json_object();
		json_object_set_new(j, "digest", json_string(c->layers[i].info.digest));
		json_object_set_new(j, "units", json_integer((json_int_t)ls.units));
		json_object_set_new(j, "touched", json_integer((json_int_t)ls.touched));
		json_object_set_new(j, "hydrating", json_boolean(ls.hydrating));
		json_object_set_new(j, "hydrated", json_boolean(ls.hydrated));
		json_object_set_new(j, "hydrated_chunks",
				    json_integer((json_int_t)ls.hydrated_chunks));
		json_object_set_new(j, "chunks", json_integer((json_int_t)ls.chunks));
		json_object_set_new(j, "reads", json_integer((json_int_t)ls.reads));
		json_object_set_new(j, "read_bytes", json_integer((json_int_t)ls.read_bytes));
		json_object_set_new(j, "fallback", json_string(clip_fallback_name(ls.fallback)));
		json_object_set_new(j, "whole_layer_fetches",
				    json_integer((json_int_t)ls.whole_layer_fetches));
		json_object_set_new(j, "whole_layer_reads",
				    json_integer((json_int_t)ls.whole_layer_reads));
		json_array_append_new(a, j);
	}
	return a;
}

const char *clip_tier_name(enum clip_tier tier)
{
	static const char *const names[] = { "disk", "memory", "remote", "span", "layer" };
	return (unsigned)tier < CLIP_ARRAY_SIZE(names) ? names[tier] : "unknown";
}

char *clip_content_stats_json(const struct clip_content *c)
{
	struct clip_content_stats s;
	clip_content_stats(c, &s);
	json_t *o = json_object();
	json_object_set_new(o, "reads", json_integer((json_int_t)s.reads));
	json_object_set_new(o, "read_bytes", json_integer((json_int_t)s.read_bytes));
	json_object_set_new(o, "coalesced", json_integer((json_int_t)s.coalesced));
	json_t *tiers = json_object();
	for (int t = 0; t < CLIP_TIER_COUNT; t++) {
		const struct clip_tier_stats *ts = &s.tier[t];
		json_t *j = json_object();
		json_object_set_new(j, "hits", json_integer((json_int_t)ts->hits));
		json_object_set_new(j, "misses", json_integer((json_int_t)ts->misses));
		json_object_set_new(j, "bytes", json_integer((json_int_t)ts->bytes));
		json_object_set_new(j, "ms", json_real((double)ts->nanoseconds / 1e6));
		json_object_set_new(j, "errors", json_integer((json_int_t)ts->errors));
		json_object_set_new(tiers, clip_tier_name((enum clip_tier)t), j);
	}
	json_object_set_new(o, "tiers", tiers);
	json_object_set_new(o, "spans_inflated", json_integer((json_int_t)s.gz.spans));
	json_object_set_new(o, "compressed_bytes", json_integer((json_int_t)s.gz.compressed_bytes));
	json_object_set_new(o, "inflated_bytes", json_integer((json_int_t)s.gz.inflated_bytes));
	json_object_set_new(o, "compressed_reused", json_integer((json_int_t)s.compressed_reused));
	json_object_set_new(o, "source_requests", json_integer((json_int_t)s.source_requests));
	json_object_set_new(o, "source_bytes", json_integer((json_int_t)s.source_bytes));
	json_object_set_new(o, "remote_verify_failures",
			    json_integer((json_int_t)s.remote_verify_failures));
	json_object_set_new(o, "hydrate_errors",
			    json_integer((json_int_t)CLIP_COUNTER_LOAD(
				    ((struct clip_content *)c)->counters.hydrate_errors)));
	json_t *fetches = json_object();
	for (int r = CLIP_FALLBACK_NONE + 1; r < CLIP_FALLBACK_COUNT; r++)
		json_object_set_new(fetches, clip_fallback_name((enum clip_fallback)r),
				    json_integer((json_int_t)s.whole_layer_fetches[r]));
	json_object_set_new(o, "whole_layer_fetches", fetches);
	json_t *fell = json_object();
	for (int r = CLIP_FALLBACK_NONE + 1; r < CLIP_FALLBACK_COUNT; r++)
		json_object_set_new(fell, clip_fallback_name((enum clip_fallback)r),
				    json_integer((json_int_t)s.whole_layer_reads[r]));
	json_object_set_new(o, "whole_layer_reads", fell);
	json_object_set_new(o, "layers", layers_json((struct clip_content *)c));
	json_object_set_new(o, "replay",
			    json_pack("{s:I,s:I,s:I}", "regions", (json_int_t)s.replay_regions,
				      "done", (json_int_t)s.replay_done, "errors",
				      (json_int_t)s.replay_errors));
	if (c->rcache) {
		struct clip_rcache_stats r;
		c->rcache->ops->stats(c->rcache->self, &r);
		json_t *j = json_object();
		json_object_set_new(j, "usable", json_boolean(c->archive_hashes));
		json_object_set_new(j, "hits", json_integer((json_int_t)r.hits));
		json_object_set_new(j, "misses", json_integer((json_int_t)r.misses));
		json_object_set_new(j, "bytes_read", json_integer((json_int_t)r.bytes_read));
		json_object_set_new(j, "errors", json_integer((json_int_t)r.errors));
		json_object_set_new(j, "stores", json_integer((json_int_t)r.stores));
		json_object_set_new(j, "stores_skipped",
				    json_integer((json_int_t)r.stores_skipped));
		json_object_set_new(j, "stores_dropped",
				    json_integer((json_int_t)r.stores_dropped));
		json_object_set_new(j, "redirects", json_integer((json_int_t)r.redirects));
		json_object_set_new(o, "remote_cache", j);
	}
	if (c->cache) {
		struct clip_diskcache_stats d;
		clip_diskcache_stats(c->cache, &d);
		json_t *j = json_object();
		json_object_set_new(j, "usage", json_integer((json_int_t)d.usage));
		json_object_set_new(j, "corrupt", json_integer((json_int_t)d.corrupt));
		json_object_set_new(j, "evicted", json_integer((json_int_t)d.evicted));
		json_object_set_new(j, "bytes_written", json_integer((json_int_t)d.bytes_written));
		json_object_set_new(j, "declined", json_integer((json_int_t)d.declined));
		json_object_set_new(j, "full", json_boolean(clip_diskcache_full(c->cache)));
		json_object_set_new(o, "disk_cache", j);
	}
	if (c->memcache) {
		struct clip_memcache_stats m;
		clip_memcache_stats(c->memcache, &m);
		json_t *j = json_object();
		json_object_set_new(j, "usage", json_integer((json_int_t)m.usage));
		json_object_set_new(j, "max", json_integer((json_int_t)m.max_bytes));
		json_object_set_new(j, "chunks", json_integer((json_int_t)m.chunks));
		json_object_set_new(j, "stores", json_integer((json_int_t)m.stores));
		json_object_set_new(j, "evicted", json_integer((json_int_t)m.evicted));
		json_object_set_new(o, "memory_cache", j);
	}
	char *text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return text;
}

void clip_content_cancel(struct clip_content *c)
{
	/* Only a registry can stall; the transfers check this between their
	 * waits on the network, of a second at most. */
	if (c->source.registry)
		clip_registry_cancel(c->source.registry);
}

void clip_content_close(struct clip_content *c)
{
	if (c == NULL)
		return;
	/* Nothing reads through c again: the engine's runs under way are
	 * cancelled, not waited for (a stalled registry would hold each for
	 * up to its low-speed timeout times its attempts). */
	clip_content_cancel(c);
	content_engine_stop(c);
	pthread_cond_destroy(&c->engine_wake);
	pthread_cond_destroy(&c->engine_idle);
	for (uint32_t i = 0; c->layers && i < c->nlayers; i++) {
		clip_source_blob_close(&c->layers[i].blob);
		free(c->layers[i].touched);
		clip_gz_index_free(c->layers[i].gz);
		pthread_cond_destroy(&c->layers[i].streamed);
	}
	free(c->layers);
	free(c->replay);
	clip_source_clear(&c->source);
	clip_diskcache_close(c->cache);
	clip_memcache_close(c->memcache);
	clip_rcache_close(c->rcache);
	content_pieces_free(c->pieces);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

bool clip_content_remote_usable(const struct clip_content *c)
{
	return c->rcache != NULL && c->archive_hashes;
}
