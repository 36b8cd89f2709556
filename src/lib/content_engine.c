/* The span engine: worker threads that fetch and inflate independent spans
 * while programs read, on every core.
 *
 * A program's read is served on its own thread (a FUSE worker), first: it
 * fetches the batch of chunks around what it wants and waits for nothing
 * else. The engine's workers then do, in this order:
 *   1. read-ahead: for a file read in order, the chunks after the batch its
 *      reader waited for, in a window that grows while the reads stay in
 *      order (content.c decides the window; scattered faults of mapped
 *      libraries get none);
 *   2. hydration: once programs have read a given share of a layer's spans
 *      (hydrate_percent), the rest of that layer is likely wanted soon, and
 *      fetching it in long runs on every core costs far less than fetching
 *      it span by span as faults ask: one Range request and one inflate
 *      pass per run of HYDRATE_RUN_BYTES, runs in parallel, chunks already
 *      cached or in flight skipped. --prefetch hydrates every layer.
 * A read that wants a chunk of a run under way waits for that run (the
 * in-flight ranges of content.c); any other read goes ahead of the queue.
 * Memory: each worker holds one run, HYDRATE_RUN_BYTES of tar plus its
 * compressed bytes, so at most ENGINE_MAX_WORKERS of them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "content_internal.h"
#include "util.h"

#define HYDRATE_RUN_BYTES  (32u << 20)
#define HYDRATE_SKIP_BYTES (4u << 20) /* cached chunks worth a new request */
#define READAHEAD_QUEUE	   16	      /* pending read-aheads at most; more are dropped */

struct readahead {
	uint32_t layer;
	uint64_t chunk;
	struct extent file;
	uint64_t budget; /* bytes still to read ahead after this chunk's batch */
	struct readahead *next;
};

static void *worker_main(void *arg);

/* Start the workers on the first job. Under c->lock; false when none runs. */
static bool workers_start(struct clip_content *c)
{
	if (c->nworkers == 0) {
		long cores = sysconf(_SC_NPROCESSORS_ONLN);
		unsigned want = cores < 2		     ? 2
				: cores > ENGINE_MAX_WORKERS ? ENGINE_MAX_WORKERS
							     : (unsigned)cores;
		while (c->nworkers < want &&
		       pthread_create(&c->workers[c->nworkers], NULL, worker_main, c) == 0)
			c->nworkers++;
	}
	return c->nworkers > 0;
}

void content_engine_readahead(struct clip_content *c, const struct layer_state *l, uint64_t k,
			      const struct extent *file, uint64_t budget)
{
	if (c->cache == NULL || !content_ranges_vouched(c, l) || k * c->chunk_bytes >= file->end ||
	    k >= content_chunk_count(c, l))
		return;
	/* Read-ahead that nothing can keep (a full disk, no memory tier) only
	 * holds the reader up: it waits for the run, then finds nothing. */
	if (c->memcache == NULL && clip_diskcache_full(c->cache))
		return;
	struct readahead *r = malloc(sizeof(*r));
	if (r == NULL)
		return;
	*r = (struct readahead){ l->index, k, *file, budget, NULL };
	pthread_mutex_lock(&c->lock);
	if (c->engine_stop || c->ra_queued >= READAHEAD_QUEUE || !workers_start(c)) {
		pthread_mutex_unlock(&c->lock);
		free(r);
		return;
	}
	struct readahead **tail = &c->ra_queue;
	while (*tail)
		tail = &(*tail)->next;
	*tail = r;
	c->ra_queued++;
	pthread_cond_signal(&c->engine_wake);
	pthread_mutex_unlock(&c->lock);
}

static void readahead_run(struct clip_content *c, struct readahead *r)
{
	struct layer_state *l = &c->layers[r->layer];
	uint64_t first, last;
	content_span_batch(c, l, r->chunk, &r->file, &first, &last);
	struct clip_err e = { 0 };
	int rc = content_chunk_cached(c, l, r->chunk)
			 ? 0
			 : content_chunk_fetch(c, l, r->chunk, &r->file, NULL, true, &e);
	uint64_t done = (last + 1 - r->chunk) * c->chunk_bytes;
	if (rc >= 0 && r->budget > done)
		content_engine_readahead(c, l, last + 1, &r->file, r->budget - done);
}

/* ---- profile replay ------------------------------------------------------------ */

/* Under c->lock. */
static bool replay_pending(const struct clip_content *c)
{
	return c->replay_started && c->replay_next < c->nreplay;
}

int content_engine_replay_load(struct clip_content *c, const struct clip_profile *p,
			       const uint32_t *map, struct clip_err *err)
{
	if (c->cache == NULL || p->nregions == 0)
		return 0; /* nowhere to keep what a replay would fetch */
	c->replay = calloc(p->nregions, sizeof(*c->replay));
	if (c->replay == NULL)
		return clip_err_nomem(err);
	for (size_t i = 0; i < p->nregions; i++) {
		const struct clip_profile_region *r = &p->regions[i];
		c->replay[i] = (struct replay_region){ map[r->layer],
						       { r->offset, r->offset + r->length } };
	}
	c->nreplay = p->nregions;
	return 0;
}

void content_engine_replay_start(struct clip_content *c)
{
	pthread_mutex_lock(&c->lock);
	if (c->nreplay && !c->replay_started && !c->engine_stop && workers_start(c)) {
		c->replay_started = true;
		pthread_cond_broadcast(&c->engine_wake);
	}
	pthread_mutex_unlock(&c->lock);
}

/* Fetch what region r lacks: its chunks not cached yet, each with the
 * batch of its span that a program's read of that place would have
 * fetched (the region is the "file" that bounds the batch; a layer without
 * ranges, zstd, comes whole, as a read would bring it). A source error ends
 * the region; programs' reads will say why. */
static void replay_run(struct clip_content *c, const struct replay_region *r)
{
	struct layer_state *l = &c->layers[r->layer];
	struct clip_err e = { 0 };
	if (content_layer_prepare(c, l, &e) < 0) {
		CLIP_COUNT(c->counters.replay_errors, 1);
		return;
	}
	uint64_t k = r->range.start / c->chunk_bytes;
	uint64_t end = (r->range.end + c->chunk_bytes - 1) / c->chunk_bytes;
	while (k < end && k < content_chunk_count(c, l) && !c->engine_stop) {
		uint64_t first, last;
		content_span_batch(c, l, k, &r->range, &first, &last);
		if (!content_chunk_cached(c, l, k)) {
			int rc = content_chunk_fetch(c, l, k, &r->range, NULL, true, &e);
			if (rc < 0) {
				CLIP_COUNT(c->counters.replay_errors, 1);
				return;
			}
			if (rc == 1)
				continue; /* another fetch had it: look again */
		}
		k = last + 1 > k ? last + 1 : k + 1;
	}
}

/* ---- hydration --------------------------------------------------------------- */

/* Under c->lock. */
static void hydrate_start(struct clip_content *c, struct layer_state *l)
{
	if (l->hydrating || c->engine_stop || !workers_start(c))
		return;
	l->hydrating = true;
	l->hydrated = false;
	l->hydrate_next = 0;
	pthread_cond_broadcast(&c->engine_wake);
}

void content_engine_hydrate(struct clip_content *c, struct layer_state *l)
{
	if (c->cache == NULL || !content_ranges_vouched(c, l))
		return;
	pthread_mutex_lock(&c->lock);
	hydrate_start(c, l);
	pthread_mutex_unlock(&c->lock);
}

/* The units of a layer that density counts, and which one `off` is in. */
static uint64_t unit_count(const struct clip_content *c, const struct layer_state *l)
{
	if (l->gz)
		return l->gz->count;
	return (l->info.uncompressed_size + c->hash_bytes - 1) / c->hash_bytes;
}

static uint64_t unit_of(const struct clip_content *c, const struct layer_state *l, uint64_t off)
{
	if (l->gz) {
		ssize_t i = clip_gz_index_find(l->gz, off);
		return i < 0 ? 0 : (uint64_t)i;
	}
	return off / c->hash_bytes;
}

void content_engine_touch(struct clip_content *c, struct layer_state *l, uint64_t off, uint64_t len)
{
	if (c->cache == NULL || c->hydrate_percent == 0 || len == 0 ||
	    !content_ranges_vouched(c, l))
		return;
	/* A cache that cannot hold the layer would only evict what the
	 * hydration brought in before anybody read it. */
	if (c->cache_max && l->info.uncompressed_size > c->cache_max / 2)
		return;
	uint64_t u0 = unit_of(c, l, off), u1 = unit_of(c, l, off + len - 1);
	pthread_mutex_lock(&c->lock);
	if (l->hydrating) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	if (l->touched == NULL) {
		l->nunits = unit_count(c, l);
		l->touched = calloc((l->nunits + 7) / 8, 1);
	}
	for (uint64_t u = u0; l->touched && u <= u1 && u < l->nunits; u++) {
		if (!(l->touched[u / 8] & (1u << (u % 8)))) {
			l->touched[u / 8] |= (uint8_t)(1u << (u % 8));
			l->ntouched++;
		}
	}
	if (l->ntouched * 100 >= (uint64_t)c->hydrate_percent * l->nunits)
		hydrate_start(c, l);
	pthread_mutex_unlock(&c->lock);
}

/* A layer with chunks left for a hydration run, or NULL. Under c->lock. */
static struct layer_state *hydration_pending(struct clip_content *c)
{
	for (uint32_t i = 0; i < c->nlayers; i++) {
		struct layer_state *l = &c->layers[i];
		if (l->hydrating && !l->hydrated && l->hydrate_next < content_chunk_count(c, l))
			return l;
	}
	return NULL;
}

/* Whether some layer's hydration has not ended. Under c->lock. */
static bool hydration_unfinished(struct clip_content *c)
{
	for (uint32_t i = 0; i < c->nlayers; i++)
		if (c->layers[i].hydrating && !c->layers[i].hydrated)
			return true;
	return false;
}

/* Mark layer l as looked at through (under c->lock). */
static void hydrate_done(struct clip_content *c, struct layer_state *l)
{
	l->hydrated = true;
	pthread_cond_broadcast(&c->engine_idle);
}

/* One run of layer l's hydration: the next chunks not cached and not in
 * flight, at most HYDRATE_RUN_BYTES of them, fetched in one go. Entered and
 * left with c->lock held. */
static void hydrate_run(struct clip_content *c, struct layer_state *l, struct run_buffers *bufs)
{
	uint64_t n = content_chunk_count(c, l);
	uint64_t max = HYDRATE_RUN_BYTES / c->chunk_bytes ? HYDRATE_RUN_BYTES / c->chunk_bytes : 1;
	uint64_t k = l->hydrate_next;
	for (;;) {
		for (uint64_t e; k < n && (e = content_inflight_end(c, l, k)) != k;)
			k = e;
		if (k >= n) {
			l->hydrate_next = n;
			if (l->hydrate_runs == 0)
				hydrate_done(c, l);
			return;
		}
		l->hydrate_next = k + 1; /* the other workers look further on */
		pthread_mutex_unlock(&c->lock);
		bool cached = content_chunk_cached(c, l, k);
		pthread_mutex_lock(&c->lock);
		if (!cached)
			break;
		k = l->hydrate_next > k + 1 ? l->hydrate_next : k + 1;
	}
	/* A run goes over chunks that reads brought in already (a run that
	 * stopped at each would start mid-span again and again, fetching and
	 * inflating the start of that span once more every time), and ends
	 * before a stretch of them long enough to be worth a new request. */
	uint64_t last = k, cached_streak = 0;
	pthread_mutex_unlock(&c->lock);
	for (uint64_t i = k + 1; i < n && i - k < max; i++) {
		if (!content_chunk_cached(c, l, i)) {
			last = i;
			cached_streak = 0;
		} else if (++cached_streak * c->chunk_bytes >= HYDRATE_SKIP_BYTES) {
			break;
		}
	}
	pthread_mutex_lock(&c->lock);
	if (content_inflight_end(c, l, k) != k)
		return; /* a read took it meanwhile */
	uint64_t first = k;
	content_inflight_trim(c, l, k, &first, &last);
	if (l->hydrate_next <= last)
		l->hydrate_next = last + 1;
	struct clip_err e = { 0 };
	l->hydrate_runs++;
	int rc = content_fetch_run(c, l, first, last, NULL, true, bufs, &e); /* unlocks */
	pthread_mutex_lock(&c->lock);
	l->hydrate_runs--;
	if (rc == -ECANCELED) {
		/* clip_content_cancel: the content is closing, the source is
		 * not at fault. */
		l->hydrate_next = n;
	} else if (rc < 0) {
		/* The source failed: reads will say why; stop hydrating it, and
		 * keep why for clip_content_prefetch, which must not report
		 * the layer as cached. */
		CLIP_COUNT(c->counters.hydrate_errors, 1);
		l->hydrate_next = n;
		if (c->hydrate_err.code == 0) {
			c->hydrate_err = e;
			clip_err_prefix(&c->hydrate_err, "layer %s: hydration stopped",
					l->info.digest);
		}
		l->hydrate_failed = true;
	} else {
		CLIP_COUNT(l->hydrated_chunks, last - first + 1);
	}
	if (l->hydrate_next >= n && l->hydrate_runs == 0)
		hydrate_done(c, l);
}

/* Whether the calling thread is one of the engine's workers: nobody waits on
 * what they fetch, so they may wait for room in the remote cache's queue. */
static _Thread_local bool in_worker;

bool content_engine_in_worker(void)
{
	return in_worker;
}

static void *worker_main(void *arg)
{
	struct clip_content *c = arg;
	struct run_buffers bufs = { 0 };
	in_worker = true;
	pthread_mutex_lock(&c->lock);
	for (;;) {
		struct layer_state *l = NULL;
		while (!c->engine_stop && c->ra_queue == NULL && !replay_pending(c) &&
		       (l = hydration_pending(c)) == NULL)
			pthread_cond_wait(&c->engine_wake, &c->lock);
		if (c->engine_stop)
			break;
		if (c->ra_queue) {
			struct readahead *r = c->ra_queue;
			c->ra_queue = r->next;
			c->ra_queued--;
			pthread_mutex_unlock(&c->lock);
			readahead_run(c, r);
			free(r);
			pthread_mutex_lock(&c->lock);
			continue;
		}
		if (replay_pending(c)) {
			const struct replay_region *r = &c->replay[c->replay_next++];
			pthread_mutex_unlock(&c->lock);
			replay_run(c, r);
			CLIP_COUNT(c->counters.replay_done, 1);
			pthread_mutex_lock(&c->lock);
			continue;
		}
		hydrate_run(c, l, &bufs);
	}
	pthread_mutex_unlock(&c->lock);
	free(bufs.tar.data);
	free(bufs.compressed.data);
	return NULL;
}

void content_engine_wait(struct clip_content *c, const atomic_bool *stop)
{
	pthread_mutex_lock(&c->lock);
	while (!atomic_load(stop) && !c->engine_stop && hydration_unfinished(c)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&c->engine_idle, &c->lock, &ts);
	}
	pthread_mutex_unlock(&c->lock);
}

void content_engine_stop(struct clip_content *c)
{
	pthread_mutex_lock(&c->lock);
	c->engine_stop = true;
	pthread_cond_broadcast(&c->engine_wake);
	pthread_cond_broadcast(&c->engine_idle);
	pthread_mutex_unlock(&c->lock);
	for (unsigned i = 0; i < c->nworkers; i++)
		pthread_join(c->workers[i], NULL);
	c->nworkers = 0;
	while (c->ra_queue) {
		struct readahead *r = c->ra_queue;
		c->ra_queue = r->next;
		free(r);
	}
}
