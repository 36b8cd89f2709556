/* The memory cache: round trips and partial reads, the bound and its LRU
 * order (reads count as uses), chunks too large to keep, duplicate puts, a
 * table grown past its first size, and many threads putting and reading at
 * once under a bound that makes them evict each other's chunks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip/memcache.h"
#include "testutil.h"

#define LEN   4096
#define SLACK 200 /* more than a chunk's bookkeeping */
#define THREE (3 * (LEN + SLACK))

/* Layer number `n`'s digest, and the bytes of its chunk `idx` (testutil). */
static void layer_name(char out[65], unsigned n)
{
	tt_layer_hex(out, 0x3e3 + n);
}

static void chunk_data(unsigned layer, uint64_t idx, void *buf, size_t len)
{
	tt_chunk_bytes(buf, len, layer, idx, 0x5eed);
}

static struct clip_memcache *open_cache(uint64_t max)
{
	struct clip_err err = { 0 };
	struct clip_memcache *c = NULL;
	if (clip_memcache_open(max, &c, &err) < 0)
		fail_msg("open: %s", err.msg);
	return c;
}

static void put_chunk(struct clip_memcache *c, unsigned layer, uint64_t idx, size_t len)
{
	char name[65];
	layer_name(name, layer);
	unsigned char *data = malloc(len ? len : 1);
	assert_non_null(data);
	chunk_data(layer, idx, data, len);
	struct clip_err err = { 0 };
	if (clip_memcache_put(c, name, idx, data, len, &err) != 0)
		fail_msg("put: %s", err.msg);
	free(data);
}

/* Read [off, off+n) of a chunk of `len` bytes; on a hit, check the bytes.
 * Returns what clip_memcache_read() returned. */
static ssize_t read_check(struct clip_memcache *c, unsigned layer, uint64_t idx, size_t len,
			  size_t off, size_t n)
{
	char name[65];
	layer_name(name, layer);
	unsigned char *want = malloc(len + 1), *got = malloc(n + 1);
	assert_non_null(want);
	assert_non_null(got);
	chunk_data(layer, idx, want, len);
	struct clip_err err = { 0 };
	ssize_t r = clip_memcache_read(c, name, idx, len, got, n, off, &err);
	if (r >= 0) {
		assert_int_equal(r, n);
		assert_memory_equal(got, want + off, n);
	} else {
		assert_int_equal(err.code, r);
		assert_true(err.msg[0] != '\0');
	}
	free(want);
	free(got);
	return r;
}

static bool holds(struct clip_memcache *c, unsigned layer, uint64_t idx, size_t len)
{
	char name[65];
	layer_name(name, layer);
	return clip_memcache_contains(c, name, idx, len);
}

static struct clip_memcache_stats stats_of(struct clip_memcache *c)
{
	struct clip_memcache_stats s;
	clip_memcache_stats(c, &s);
	return s;
}

static void test_round_trip(void **state)
{
	(void)state;
	struct clip_memcache *c = open_cache(1 << 20);
	assert_int_equal(read_check(c, 0, 7, LEN, 0, LEN), -ENOENT);
	put_chunk(c, 0, 7, LEN);
	put_chunk(c, 1, 7, LEN - 1); /* same index, another layer */
	put_chunk(c, 0, 0, 0);	     /* an empty chunk is a chunk too */
	assert_int_equal(read_check(c, 0, 7, LEN, 0, LEN), LEN);
	assert_int_equal(read_check(c, 0, 7, LEN, 100, 1000), 1000);
	assert_int_equal(read_check(c, 0, 7, LEN, LEN, 0), 0);
	assert_int_equal(read_check(c, 1, 7, LEN - 1, 1, LEN - 2), LEN - 2);
	assert_int_equal(read_check(c, 0, 0, 0, 0, 0), 0);
	assert_int_equal(read_check(c, 0, 8, LEN, 0, 10), -ENOENT);
	assert_int_equal(read_check(c, 2, 7, LEN, 0, 10), -ENOENT);
	assert_true(holds(c, 0, 7, LEN) && holds(c, 1, 7, LEN - 1) && !holds(c, 0, 8, LEN));

	/* Past the chunk, or a malformed layer: refused, nothing dropped. */
	char name[65], buf[16];
	layer_name(name, 0);
	struct clip_err err = { 0 };
	assert_int_equal(clip_memcache_read(c, name, 7, LEN, buf, 16, LEN - 8, &err), -EINVAL);
	assert_int_equal(clip_memcache_read(c, "abc", 7, LEN, buf, 1, 0, &err), -EINVAL);
	assert_int_equal(clip_memcache_put(c, "abc", 7, buf, 1, &err), -EINVAL);
	assert_false(clip_memcache_contains(c, "abc", 7, 1));

	/* Asked for with another length (another grid's chunk): dropped. */
	assert_int_equal(read_check(c, 0, 7, LEN * 2, 0, 10), -ENOENT);
	assert_false(holds(c, 0, 7, LEN));
	struct clip_memcache_stats s = stats_of(c);
	assert_int_equal(s.chunks, 2);
	assert_int_equal(s.stores, 3);
	assert_int_equal(s.hits, 5);
	assert_int_equal(s.misses, 4);
	assert_int_equal(s.bytes_read, LEN + 1000 + LEN - 2);
	assert_int_equal(s.evicted, 0);
	assert_int_equal(s.max_bytes, 1 << 20);
	clip_memcache_close(c);

	/* A bound of nothing is a mistake, not a cache. */
	struct clip_memcache *none = NULL;
	assert_int_equal(clip_memcache_open(0, &none, &err), -EINVAL);
	assert_null(none);
	clip_memcache_close(NULL);
}

static void test_bound_and_lru(void **state)
{
	(void)state;
	struct clip_memcache *c = open_cache(THREE);
	for (uint64_t i = 0; i < 3; i++)
		put_chunk(c, 0, i, LEN);
	struct clip_memcache_stats s = stats_of(c);
	assert_int_equal(s.chunks, 3);
	assert_int_equal(s.evicted, 0);
	assert_true(s.usage > 3 * LEN && s.usage <= THREE);

	/* Chunk 0 is read, so chunk 1 is now the least recently used. */
	assert_int_equal(read_check(c, 0, 0, LEN, 0, 1), 1);
	put_chunk(c, 0, 3, LEN);
	assert_true(holds(c, 0, 0, LEN) && !holds(c, 0, 1, LEN));
	assert_true(holds(c, 0, 2, LEN) && holds(c, 0, 3, LEN));
	/* Putting a held chunk again is a use too: chunk 2 stays, 0 goes. */
	put_chunk(c, 0, 2, LEN);
	put_chunk(c, 0, 4, LEN);
	assert_true(!holds(c, 0, 0, LEN) && holds(c, 0, 2, LEN));
	s = stats_of(c);
	assert_int_equal(s.chunks, 3);
	assert_int_equal(s.evicted, 2);
	assert_int_equal(s.stores, 5);
	assert_true(s.usage <= THREE);

	/* One chunk worth two: the two oldest make room for it. */
	put_chunk(c, 1, 0, 2 * LEN);
	assert_true(holds(c, 1, 0, 2 * LEN) && holds(c, 0, 4, LEN));
	assert_false(holds(c, 0, 2, LEN) || holds(c, 0, 3, LEN));
	assert_int_equal(stats_of(c).chunks, 2);

	/* Larger than the whole bound: not kept, and nothing evicted for it. */
	put_chunk(c, 2, 0, THREE);
	assert_false(holds(c, 2, 0, THREE));
	s = stats_of(c);
	assert_int_equal(s.chunks, 2);
	assert_int_equal(s.evicted, 4);
	assert_true(s.usage <= THREE);
	clip_memcache_close(c);
}

static void test_many_small_chunks(void **state)
{
	(void)state;
	/* Far more chunks than the table's first size: it grows, and every
	 * chunk is still found. */
	struct clip_memcache *c = open_cache(64 << 20);
	for (uint64_t i = 0; i < 5000; i++)
		put_chunk(c, (unsigned)(i % 3), i, 32);
	for (uint64_t i = 0; i < 5000; i++)
		assert_int_equal(read_check(c, (unsigned)(i % 3), i, 32, 0, 32), 32);
	assert_int_equal(read_check(c, 1, 0, 32, 0, 32), -ENOENT);
	struct clip_memcache_stats s = stats_of(c);
	assert_int_equal(s.chunks, 5000);
	assert_int_equal(s.evicted, 0);
	clip_memcache_close(c);
}

/* ---- threads -------------------------------------------------------------- */

#define THREADS	    8
#define OPS	    4000
#define KEYS	    64 /* chunks over 4 layers, far more than the bound holds */
#define SMALL_BOUND (10 * (LEN + SLACK))

struct worker {
	struct clip_memcache *cache;
	unsigned seed;
	unsigned hits, wrong;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	unsigned char want[LEN], got[LEN];
	uint64_t rnd = w->seed;
	for (int i = 0; i < OPS; i++) {
		rnd = rnd * 6364136223846793005ull + 1442695040888963407ull;
		unsigned key = (unsigned)(rnd >> 33) % KEYS, layer = key % 4;
		uint64_t idx = key / 4;
		char name[65];
		layer_name(name, layer);
		chunk_data(layer, idx, want, LEN);
		struct clip_err err = { 0 };
		if ((rnd >> 20) & 1) {
			if (clip_memcache_put(w->cache, name, idx, want, LEN, &err) != 0)
				w->wrong++;
			continue;
		}
		size_t off = (size_t)(rnd >> 40) % LEN, n = LEN - off;
		ssize_t r = clip_memcache_read(w->cache, name, idx, LEN, got, n, off, &err);
		if (r == (ssize_t)n && memcmp(got, want + off, n) == 0)
			w->hits++;
		else if (r != -ENOENT)
			w->wrong++;
	}
	return NULL;
}

static void test_threads(void **state)
{
	(void)state;
	struct clip_memcache *c = open_cache(SMALL_BOUND);
	pthread_t t[THREADS];
	struct worker w[THREADS];
	for (unsigned i = 0; i < THREADS; i++) {
		w[i] = (struct worker){ c, 17 + i * 7919, 0, 0 };
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	unsigned hits = 0;
	for (unsigned i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].wrong, 0);
		hits += w[i].hits;
	}
	struct clip_memcache_stats s = stats_of(c);
	assert_int_equal(s.hits, hits);
	assert_true(hits > 0);
	assert_true(s.evicted > 0);
	assert_true(s.usage <= SMALL_BOUND);
	assert_true(s.chunks <= 10);
	assert_int_equal(s.stores - s.evicted, s.chunks);
	clip_memcache_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_bound_and_lru),
		cmocka_unit_test(test_many_small_chunks),
		cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
