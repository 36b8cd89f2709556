/* The memory tier: verified chunks in a hash table with an LRU list.
 *
 * Each chunk is one allocation (its bookkeeping and its bytes together),
 * found through a chained hash table keyed by layer and index, and linked in
 * a list from the most to the least recently used. The table doubles when
 * it holds more chunks than buckets, so chains stay short whatever the chunk
 * size (4 KiB chunks make sixteen thousand of them in 64 MiB).
 *
 * A put copies the chunk before taking the lock, and what eviction unlinks
 * is freed after releasing it: a thread reading a hit never waits for a
 * megabyte to be copied or returned to the allocator.
 */
#include "clip/memcache.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define LAYER_HEX_LEN	64
#define INITIAL_BUCKETS 64

struct entry {
	struct entry *hash_next;     /* chain of the bucket; the free list once evicted */
	struct entry *newer, *older; /* LRU list */
	char layer[LAYER_HEX_LEN];
	uint64_t chunk;
	size_t len;
	unsigned char data[];
};

struct clip_memcache {
	uint64_t max_bytes;
	pthread_mutex_t lock; /* guards everything below but the counters */
	struct entry **buckets;
	size_t nbuckets, nchunks;
	uint64_t usage;
	struct entry *newest, *oldest;
	_Atomic uint64_t hits, misses, bytes_read, stores, evicted;
};

/* What a chunk of `len` bytes costs against the bound. */
static uint64_t charge(size_t len)
{
	return sizeof(struct entry) + (uint64_t)len;
}

static int check_layer(const char *layer_hex, struct clip_err *err)
{
	if (layer_hex == NULL || strnlen(layer_hex, LAYER_HEX_LEN + 1) != LAYER_HEX_LEN)
		return clip_err_set(err, EINVAL,
				    "memory cache: layer \"%.80s\" is not 64 hex digits",
				    layer_hex ? layer_hex : "(null)");
	return 0;
}

static size_t bucket_of(size_t nbuckets, const char *layer, uint64_t chunk)
{
	uint64_t h = clip_fnv1a(CLIP_FNV1A_SEED, layer, LAYER_HEX_LEN);
	h = clip_fnv1a(h, &chunk, sizeof(chunk));
	return (size_t)(h & (nbuckets - 1));
}

/* The link pointing at the entry for (layer, chunk), or at the NULL ending
 * its chain. Under c->lock. */
static struct entry **find(struct clip_memcache *c, const char *layer, uint64_t chunk)
{
	struct entry **pp = &c->buckets[bucket_of(c->nbuckets, layer, chunk)];
	while (*pp && ((*pp)->chunk != chunk || memcmp((*pp)->layer, layer, LAYER_HEX_LEN) != 0))
		pp = &(*pp)->hash_next;
	return pp;
}

/* LRU list operations, under c->lock. */
static void lru_unlink(struct clip_memcache *c, struct entry *e)
{
	if (e->newer)
		e->newer->older = e->older;
	else
		c->newest = e->older;
	if (e->older)
		e->older->newer = e->newer;
	else
		c->oldest = e->newer;
	e->newer = e->older = NULL;
}

static void lru_push_newest(struct clip_memcache *c, struct entry *e)
{
	e->older = c->newest;
	e->newer = NULL;
	if (c->newest)
		c->newest->newer = e;
	c->newest = e;
	if (c->oldest == NULL)
		c->oldest = e;
}

/* Take entry *pp out of the table and the list, onto `*freed` (freed by the
 * caller once the lock is released). Under c->lock. */
static void drop(struct clip_memcache *c, struct entry **pp, struct entry **freed)
{
	struct entry *e = *pp;
	*pp = e->hash_next;
	lru_unlink(c, e);
	c->nchunks--;
	c->usage -= charge(e->len);
	e->hash_next = *freed;
	*freed = e;
}

static void free_list(struct entry *e)
{
	while (e) {
		struct entry *next = e->hash_next;
		free(e);
		e = next;
	}
}

/* Double the table. Under c->lock; out of memory only makes chains longer,
 * so it is not an error. */
static void grow(struct clip_memcache *c)
{
	size_t n = c->nbuckets * 2;
	struct entry **b = calloc(n, sizeof(*b));
	if (b == NULL)
		return;
	for (size_t i = 0; i < c->nbuckets; i++) {
		struct entry *e = c->buckets[i];
		while (e) {
			struct entry *next = e->hash_next;
			size_t j = bucket_of(n, e->layer, e->chunk);
			e->hash_next = b[j];
			b[j] = e;
			e = next;
		}
	}
	free(c->buckets);
	c->buckets = b;
	c->nbuckets = n;
}

int clip_memcache_open(uint64_t max_bytes, struct clip_memcache **out, struct clip_err *err)
{
	if (max_bytes == 0)
		return clip_err_set(err, EINVAL, "memory cache: a bound of 0 bytes");
	struct clip_memcache *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return clip_err_nomem(err);
	c->nbuckets = INITIAL_BUCKETS;
	c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
	if (c->buckets == NULL) {
		free(c);
		return clip_err_nomem(err);
	}
	c->max_bytes = max_bytes;
	pthread_mutex_init(&c->lock, NULL);
	*out = c;
	return 0;
}

ssize_t clip_memcache_read(struct clip_memcache *c, const char *layer_hex, uint64_t chunk,
			   size_t chunk_len, void *buf, size_t len, size_t offset,
			   struct clip_err *err)
{
	int rc = check_layer(layer_hex, err);
	if (rc < 0)
		return rc;
	if (offset > chunk_len || len > chunk_len - offset)
		return clip_err_set(err, EINVAL,
				    "memory cache: read of %zu bytes at %zu past chunk length %zu",
				    len, offset, chunk_len);
	struct entry *freed = NULL;
	pthread_mutex_lock(&c->lock);
	struct entry **pp = find(c, layer_hex, chunk);
	struct entry *e = *pp;
	if (e && e->len != chunk_len) {
		drop(c, pp, &freed);
		e = NULL;
	}
	if (e) {
		memcpy(buf, e->data + offset, len);
		lru_unlink(c, e);
		lru_push_newest(c, e);
	}
	pthread_mutex_unlock(&c->lock);
	free_list(freed);
	if (e == NULL) {
		CLIP_COUNT(c->misses, 1);
		return clip_err_set(err, ENOENT, "memory cache: chunk %llu of layer %.12s not held",
				    (unsigned long long)chunk, layer_hex);
	}
	CLIP_COUNT(c->hits, 1);
	CLIP_COUNT(c->bytes_read, len);
	return (ssize_t)len;
}

/* Make `e` the newest entry (it is not in the table yet), and evict the
 * oldest ones until the bound holds again. Under c->lock. */
static void insert(struct clip_memcache *c, struct entry **slot, struct entry *e,
		   struct entry **freed)
{
	e->hash_next = NULL;
	*slot = e;
	lru_push_newest(c, e);
	c->nchunks++;
	c->usage += charge(e->len);
	while (c->usage > c->max_bytes && c->oldest != e) {
		struct entry *old = c->oldest;
		drop(c, find(c, old->layer, old->chunk), freed);
		CLIP_COUNT(c->evicted, 1);
	}
	if (c->nchunks > c->nbuckets)
		grow(c);
}

/* Under c->lock: when (layer, chunk) is held already, make it the newest
 * and say so. */
static bool touch(struct clip_memcache *c, const char *layer, uint64_t chunk)
{
	struct entry *e = *find(c, layer, chunk);
	if (e) {
		lru_unlink(c, e);
		lru_push_newest(c, e);
	}
	return e != NULL;
}

int clip_memcache_put(struct clip_memcache *c, const char *layer_hex, uint64_t chunk,
		      const void *data, size_t len, struct clip_err *err)
{
	int rc = check_layer(layer_hex, err);
	if (rc < 0)
		return rc;
	if (charge(len) > c->max_bytes)
		return 0;
	pthread_mutex_lock(&c->lock);
	bool held = touch(c, layer_hex, chunk);
	pthread_mutex_unlock(&c->lock);
	if (held)
		return 0;
	struct entry *e = malloc(sizeof(*e) + len);
	if (e == NULL)
		return clip_err_nomem(err);
	memcpy(e->layer, layer_hex, LAYER_HEX_LEN);
	e->chunk = chunk;
	e->len = len;
	memcpy(e->data, data, len);
	struct entry *freed = NULL;
	pthread_mutex_lock(&c->lock);
	/* Another thread may have put the same chunk meanwhile: its bytes are
	 * these bytes, so that copy stays and this one goes. */
	struct entry **slot = find(c, layer_hex, chunk);
	if (*slot == NULL) {
		insert(c, slot, e, &freed);
		CLIP_COUNT(c->stores, 1);
	} else {
		touch(c, layer_hex, chunk);
		e->hash_next = freed;
		freed = e;
	}
	pthread_mutex_unlock(&c->lock);
	free_list(freed);
	return 0;
}

bool clip_memcache_contains(struct clip_memcache *c, const char *layer_hex, uint64_t chunk,
			    size_t chunk_len)
{
	if (check_layer(layer_hex, NULL) < 0)
		return false;
	pthread_mutex_lock(&c->lock);
	struct entry *e = *find(c, layer_hex, chunk);
	bool held = e && e->len == chunk_len;
	pthread_mutex_unlock(&c->lock);
	return held;
}

void clip_memcache_stats(const struct clip_memcache *cc, struct clip_memcache_stats *out)
{
	/* The lock is the cache's own business, not part of what const
	 * promises the caller. */
	struct clip_memcache *c = (struct clip_memcache *)cc;
	*out = (struct clip_memcache_stats){
		.hits = CLIP_COUNTER_LOAD(c->hits),
		.misses = CLIP_COUNTER_LOAD(c->misses),
		.bytes_read = CLIP_COUNTER_LOAD(c->bytes_read),
		.stores = CLIP_COUNTER_LOAD(c->stores),
		.evicted = CLIP_COUNTER_LOAD(c->evicted),
		.max_bytes = c->max_bytes,
	};
	pthread_mutex_lock(&c->lock);
	out->usage = c->usage;
	out->chunks = c->nchunks;
	pthread_mutex_unlock(&c->lock);
}

void clip_memcache_close(struct clip_memcache *c)
{
	if (c == NULL)
		return;
	struct entry *e = c->newest;
	while (e) {
		struct entry *older = e->older;
		free(e);
		e = older;
	}
	free(c->buckets);
	pthread_mutex_destroy(&c->lock);
	free(c);
}
