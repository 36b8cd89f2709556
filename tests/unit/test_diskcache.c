/* The disk cache: round trips and partial reads, detection and removal of
 * every kind of damaged chunk, leftover temporary files, the size bound and
 * LRU order measured on the real directory, eviction for free space on a
 * filesystem smaller than what is put, and concurrent writers (threads of
 * one handle, and separate processes sharing one directory). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clip/diskcache.h"
#include "testutil.h"

#define HDR 64 /* chunk file header, docs/DISKCACHE.md */

/* ---- helpers ------------------------------------------------------------- */

static void sha256(const void *data, size_t len, unsigned char out[32])
{
	unsigned int n = 0;
	if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != 32)
		fail_msg("EVP_Digest failed");
}

/* Layer number `n`'s digest, and the bytes of its chunk `idx` (testutil). */
static void layer_name(char out[65], unsigned n)
{
	tt_layer_hex(out, 0x1a7e2 + n);
}

static void chunk_data(unsigned layer, uint64_t idx, void *buf, size_t len)
{
	tt_chunk_bytes(buf, len, layer, idx, 0xc0ffee);
}

static char *chunk_file(const char *dir, const char *layer, uint64_t idx)
{
	char *p = NULL;
	if (asprintf(&p, "%s/chunks/%.2s/%s/%016llx", dir, layer, layer, (unsigned long long)idx) <
	    0)
		fail_msg("asprintf");
	return p;
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

static struct clip_diskcache *open_cache(const char *dir, uint64_t max)
{
	struct clip_err err = { 0 };
	struct clip_diskcache *c = NULL;
	int rc = clip_diskcache_open(
		&(struct clip_diskcache_options){ .dir = dir, .max_bytes = max }, &c, &err);
	if (rc < 0)
		fail_msg("open %s: %s", dir, err.msg);
	return c;
}

/* Put chunk `idx` of layer number `layer`, `len` bytes. */
static void put_chunk(struct clip_diskcache *c, unsigned layer, uint64_t idx, size_t len)
{
	char name[65];
	layer_name(name, layer);
	unsigned char *data = malloc(len ? len : 1);
	assert_non_null(data);
	chunk_data(layer, idx, data, len);
	unsigned char hash[32];
	sha256(data, len, hash);
	struct clip_err err = { 0 };
	int rc = clip_diskcache_put(c, name, idx, data, len, hash, &err);
	if (rc != 0)
		fail_msg("put: %d %s", rc, err.msg);
	free(data);
}

/* Read [off, off+n) of a chunk of length `len` and compare it with what it
 * should hold. Returns what clip_diskcache_read() returned. */
static ssize_t read_check(struct clip_diskcache *c, unsigned layer, uint64_t idx, size_t len,
			  const unsigned char *expected, size_t off, size_t n)
{
	char name[65];
	layer_name(name, layer);
	unsigned char *want = malloc(len + 1), *got = malloc(n + 1);
	assert_non_null(want);
	assert_non_null(got);
	chunk_data(layer, idx, want, len);
	struct clip_err err = { 0 };
	ssize_t r = clip_diskcache_read(c, name, idx, len, expected, got, n, off, &err);
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

/* Sum of what the cache's files cost on disk, found by walking it. */
static uint64_t walk_total;
static size_t walk_chunks;
static int walk_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	if (type == FTW_F && S_ISREG(st->st_mode) && strstr(path, "/lock") == NULL) {
		uint64_t blocks = (uint64_t)st->st_blocks * 512, size = (uint64_t)st->st_size;
		walk_total += blocks > size ? blocks : size;
		if (strstr(path, "/chunks/"))
			walk_chunks++;
	}
	return 0;
}
static uint64_t disk_usage(const char *dir)
{
	walk_total = 0;
	walk_chunks = 0;
	assert_int_equal(nftw(dir, walk_one, 16, FTW_PHYS), 0);
	return walk_total;
}

/* What one chunk file of `len` payload bytes costs on this filesystem. */
static uint64_t chunk_charge(size_t len)
{
	char *dir = tt_tmpdir();
	struct clip_diskcache *c = open_cache(dir, 0);
	put_chunk(c, 0, 0, len);
	clip_diskcache_close(c);
	uint64_t total = disk_usage(dir);
	tt_rm_rf(dir);
	free(dir);
	return total;
}

static void set_mtime(const char *path, time_t t)
{
	struct timespec ts[2] = { { t, 0 }, { t, 0 } };
	assert_int_equal(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static void flip_byte(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	unsigned char b;
	assert_int_equal(pread(fd, &b, 1, off), 1);
	b ^= 0x20;
	assert_int_equal(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

/* ---- tests --------------------------------------------------------------- */

static void test_round_trip(void **state)
{
	char *dir = tt_tmpdir();
	struct clip_diskcache *c = open_cache(dir, 0);
	const size_t sizes[] = { 100000, 65536, 777, 0 };
	for (unsigned i = 0; i < 4; i++)
		put_chunk(c, 1, i, sizes[i]);
	put_chunk(c, 2, 0, 5000);

	/* First reads through a fresh handle verify the whole chunk and copy the
	 * range from it; later ones pread just the range: check both, at many
	 * offsets, including the edges. */
	clip_diskcache_close(c);
	c = open_cache(dir, 0);
	uint64_t seed = 42;
	for (unsigned i = 0; i < 3; i++) {
		size_t len = sizes[i];
		assert_int_equal(read_check(c, 1, i, len, NULL, len / 3, len / 3 + 1), len / 3 + 1);
		assert_int_equal(read_check(c, 1, i, len, NULL, 0, len), len);
		assert_int_equal(read_check(c, 1, i, len, NULL, len, 0), 0);
		assert_int_equal(read_check(c, 1, i, len, NULL, len - 1, 1), 1);
		for (int k = 0; k < 50; k++) {
			size_t off = tt_rand(&seed) % len;
			size_t n = tt_rand(&seed) % (len - off + 1);
			assert_int_equal(read_check(c, 1, i, len, NULL, off, n), n);
		}
	}
	assert_int_equal(read_check(c, 1, 3, 0, NULL, 0, 0), 0);
	unsigned char want[32];
	unsigned char *buf = malloc(5000);
	chunk_data(2, 0, buf, 5000);
	sha256(buf, 5000, want);
	free(buf);
	assert_int_equal(read_check(c, 2, 0, 5000, want, 4000, 1000), 1000);

	/* Absent: another index, another layer. */
	assert_int_equal(read_check(c, 1, 4, 10, NULL, 0, 10), -ENOENT);
	assert_int_equal(read_check(c, 3, 0, 10, NULL, 0, 10), -ENOENT);

	struct clip_diskcache_stats st;
	clip_diskcache_stats(c, &st);
	assert_int_equal(st.hits, 3 * 54 + 2);
	assert_int_equal(st.misses, 2);
	assert_int_equal(st.corrupt, 0);
	assert_int_equal(st.bytes_written, 0);

	/* Putting a chunk that is there already writes nothing. */
	put_chunk(c, 1, 0, sizes[0]);
	clip_diskcache_stats(c, &st);
	assert_int_equal(st.bytes_written, 0);
	put_chunk(c, 1, 9, 10);
	clip_diskcache_stats(c, &st);
	assert_int_equal(st.bytes_written, 10);

	/* Bad arguments. */
	struct clip_err err = { 0 };
	unsigned char b[16];
	assert_int_equal(clip_diskcache_read(c, "abc", 0, 16, NULL, b, 16, 0, &err), -EINVAL);
	char upper[65];
	layer_name(upper, 1);
	upper[5] = 'G';
	assert_int_equal(clip_diskcache_put(c, upper, 0, b, 16, want, &err), -EINVAL);
	char name[65];
	layer_name(name, 1);
	assert_int_equal(clip_diskcache_read(c, name, 2, 777, NULL, b, 16, 770, &err), -EINVAL);

	/* No temporary file is left behind. */
	char *tmp = NULL;
	assert_true(asprintf(&tmp, "%s/tmp", dir) > 0);
	disk_usage(tmp);
	assert_int_equal(walk_total, 0);
	free(tmp);

	clip_diskcache_close(c);
	tt_rm_rf(dir);
	free(dir);
}

/* Damage chunk 0 of layer 1 with `damage`, then read it through a fresh
 * handle: it must be reported absent, counted and removed. */
static void expect_bad(const char *dir, const char *file, size_t len, size_t read_len,
		       const unsigned char *expected)
{
	struct clip_diskcache *c = open_cache(dir, 0);
	assert_int_equal(read_check(c, 1, 0, read_len, expected, 0, read_len), -ENOENT);
	struct clip_diskcache_stats st;
	clip_diskcache_stats(c, &st);
	assert_int_equal(st.corrupt, 1);
	assert_int_equal(st.misses, 1);
	assert_int_equal(st.hits, 0);
	assert_false(exists(file));
	/* Refetched and put again, it is served. */
	put_chunk(c, 1, 0, len);
	assert_int_equal(read_check(c, 1, 0, len, NULL, 0, len), len);
	clip_diskcache_close(c);
}

static void test_corruption(void **state)
{
	char *dir = tt_tmpdir();
	const size_t len = 300000;
	char name[65];
	layer_name(name, 1);
	char *file = chunk_file(dir, name, 0);
	struct clip_diskcache *c = open_cache(dir, 0);
	put_chunk(c, 1, 0, len);
	clip_diskcache_close(c);
	assert_true(exists(file));

	/* Truncated (a torn write), in the payload and in the header. */
	assert_int_equal(truncate(file, HDR + len / 2), 0);
	expect_bad(dir, file, len, len, NULL);
	assert_int_equal(truncate(file, HDR / 2), 0);
	expect_bad(dir, file, len, len, NULL);
	assert_int_equal(truncate(file, 0), 0);
	expect_bad(dir, file, len, len, NULL);

	/* A flipped payload byte: first, middle (past the first verify block),
	 * last. */
	const off_t payload_offs[] = { HDR, HDR + (off_t)len / 2 + 7, HDR + (off_t)len - 1 };
	for (unsigned i = 0; i < 3; i++) {
		flip_byte(file, payload_offs[i]);
		expect_bad(dir, file, len, len, NULL);
	}

	/* Every header byte: magic, version, header size, index, length, hash. */
	for (off_t i = 0; i < HDR; i++) {
		flip_byte(file, i);
		expect_bad(dir, file, len, len, NULL);
	}

	/* The caller's idea of the chunk's length differs from the file's. */
	expect_bad(dir, file, len, len - 1, NULL);

	/* Bytes appended after a good payload. */
	int fd = open(file, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "x", 1), 1);
	close(fd);
	expect_bad(dir, file, len, len, NULL);

	/* A good chunk whose hash differs from the archive's. */
	unsigned char wrong[32];
	memset(wrong, 0xab, sizeof(wrong));
	expect_bad(dir, file, len, len, wrong);

	/* Damage after the chunk was verified by this handle: a truncation is
	 * seen by the size check on every read, a file replaced by a bad copy
	 * (another inode) is verified again. */
	c = open_cache(dir, 0);
	assert_int_equal(read_check(c, 1, 0, len, NULL, 0, 10), 10);
	assert_int_equal(truncate(file, HDR + len - 1), 0);
	assert_int_equal(read_check(c, 1, 0, len, NULL, 0, 10), -ENOENT);
	assert_false(exists(file));
	put_chunk(c, 1, 0, len);
	assert_int_equal(read_check(c, 1, 0, len, NULL, 5, 10), 10);
	char *copy = NULL;
	assert_true(asprintf(&copy, "%s/copy", dir) > 0);
	unsigned char *bytes = malloc(HDR + len);
	FILE *f = fopen(file, "rb");
	assert_non_null(f);
	assert_int_equal(fread(bytes, 1, HDR + len, f), HDR + len);
	fclose(f);
	bytes[HDR + 12345] ^= 1;
	tt_write_file(copy, bytes, HDR + len);
	assert_int_equal(rename(copy, file), 0);
	assert_int_equal(read_check(c, 1, 0, len, NULL, 0, 10), -ENOENT);
	assert_false(exists(file));
	/* And a verified chunk read with a hash that differs from the one it was
	 * verified against. */
	put_chunk(c, 1, 0, len);
	assert_int_equal(read_check(c, 1, 0, len, NULL, 0, 10), 10);
	assert_int_equal(read_check(c, 1, 0, len, wrong, 0, 10), -ENOENT);
	assert_false(exists(file));
	struct clip_diskcache_stats st;
	clip_diskcache_stats(c, &st);
	assert_int_equal(st.corrupt, 3);

	/* Once verified, a chunk is read by range only, not hashed again: a byte
	 * changed in place (same file, same size) is not seen by this handle,
	 * only by the next one to open the cache. */
	put_chunk(c, 1, 0, len);
	assert_int_equal(read_check(c, 1, 0, len, NULL, 0, 10), 10);
	flip_byte(file, HDR + 200);
	unsigned char got[8], want8[8];
	char name1[65];
	layer_name(name1, 1);
	struct clip_err err = { 0 };
	assert_int_equal(clip_diskcache_read(c, name1, 0, len, NULL, got, 8, 196, &err), 8);
	chunk_data(1, 0, bytes, len);
	memcpy(want8, bytes + 196, 8);
	want8[4] ^= 0x20;
	assert_memory_equal(got, want8, 8);
	clip_diskcache_close(c);
	expect_bad(dir, file, len, len, NULL);

	free(bytes);
	free(copy);
	free(file);
	tt_rm_rf(dir);
	free(dir);
}

static void test_leftover_tmp(void **state)
{
	char *dir = tt_tmpdir();
	const size_t len = 4000;
	struct clip_diskcache *c = open_cache(dir, 0);
	put_chunk(c, 1, 0, len);
	clip_diskcache_close(c);

	/* A killed writer's files: one just written (maybe still live, must
	 * stay), one an hour old (must go at the next scan), one a complete
	 * chunk file that never got renamed (must not be served). */
	char name[65];
	layer_name(name, 1);
	char *fresh = NULL, *stale = NULL, *whole = NULL, *junk = NULL;
	assert_true(asprintf(&fresh, "%s/tmp/1234-1-00000000deadbeef", dir) > 0);
	assert_true(asprintf(&stale, "%s/tmp/1234-2-00000000deadbeef", dir) > 0);
	assert_true(asprintf(&whole, "%s/tmp/1234-3-00000000deadbeef", dir) > 0);
	assert_true(asprintf(&junk, "%s/chunks/%.2s/%s/notachunk", dir, name, name) > 0);
	tt_write_file(fresh, "partial", 7);
	tt_write_file(stale, "partial", 7);
	set_mtime(stale, time(NULL) - 7200);
	tt_write_file(junk, "x", 1);
	char *file = chunk_file(dir, name, 0);
	assert_int_equal(rename(file, whole), 0);

	c = open_cache(dir, 1 << 20);
	assert_false(exists(stale));
	assert_true(exists(fresh));
	assert_true(exists(junk));
	assert_int_equal(read_check(c, 1, 0, len, NULL, 0, len), -ENOENT);
	struct clip_diskcache_stats st;
	clip_diskcache_stats(c, &st);
	assert_int_equal(st.corrupt, 0);
	/* Temporary files are charged to the cache, unknown files are not. */
	uint64_t tmp_charge = st.usage;
	assert_true(tmp_charge > 0);

	put_chunk(c, 1, 0, len);
	assert_int_equal(read_check(c, 1, 0, len, NULL, 0, len), len);
	put_chunk(c, 1, 1, len);
	assert_int_equal(read_check(c, 1, 1, len, NULL, 100, 200), 200);
	clip_diskcache_close(c);
	assert_true(exists(fresh));

	free(fresh);
	free(stale);
	free(whole);
	free(junk);
	free(file);
	tt_rm_rf(dir);
	free(dir);
}

static void test_bound(void **state)
{
	const size_t len = 8000;
	const uint64_t charge = chunk_charge(len);
	const uint64_t max = 16 * charge;
	char *dir = tt_tmpdir();
	struct clip_diskcache *c = open_cache(dir, max);
	unsigned n = 0;
	uint64_t written = 0;
	while (written < 3 * max) {
		put_chunk(c, 1 + n % 3, n, len);
		written += charge;
		n++;
		/* Eviction runs within the put that crosses the bound. */
		assert_true(disk_usage(dir) <= max);
	}
	struct clip_diskcache_stats st;
	clip_diskcache_stats(c, &st);
	uint64_t total = disk_usage(dir);
	assert_int_equal(st.usage, total);
	assert_true(st.evicted >= n - 16);
	assert_int_equal(st.evicted + walk_chunks, n);
	assert_int_equal(st.bytes_written, (uint64_t)n * len);
	/* Oldest gone, newest kept. */
	assert_int_equal(read_check(c, 1, 0, len, NULL, 0, len), -ENOENT);
	assert_int_equal(read_check(c, 1 + (n - 1) % 3, n - 1, len, NULL, 0, len), len);
	clip_diskcache_close(c);

	/* A lower bound at the next open evicts at once, to 90%. */
	c = open_cache(dir, 8 * charge);
	assert_true(disk_usage(dir) <= 8 * charge * 9 / 10);
	clip_diskcache_stats(c, &st);
	assert_int_equal(st.usage, disk_usage(dir));
	/* A chunk that would fill the bound by itself is not kept. */
	put_chunk(c, 7, 0, 8 * charge);
	assert_int_equal(read_check(c, 7, 0, 8 * charge, NULL, 0, 1), -ENOENT);
	clip_diskcache_close(c);

	tt_rm_rf(dir);
	free(dir);
}

static void test_lru(void **state)
{
	const size_t len = 8000;
	const uint64_t charge = chunk_charge(len);
	char *dir = tt_tmpdir();
	char name[65];
	layer_name(name, 1);
	struct clip_diskcache *c = open_cache(dir, 10 * charge);
	/* Eight chunks used an hour ago, 0 the longest ago. */
	time_t now = time(NULL);
	for (unsigned i = 0; i < 8; i++) {
		put_chunk(c, 1, i, len);
		char *f = chunk_file(dir, name, i);
		set_mtime(f, now - 3600 + i);
		free(f);
	}
	/* Reading 0 and 3 makes them the most recent. */
	assert_int_equal(read_check(c, 1, 0, len, NULL, 0, 10), 10);
	assert_int_equal(read_check(c, 1, 3, len, NULL, 0, 10), 10);
	/* Three more: eleven chunks are over the bound of ten; eviction goes down
	 * to nine, removing the two least recently used, 1 and 2. */
	for (unsigned i = 8; i < 11; i++)
		put_chunk(c, 1, i, len);
	struct clip_diskcache_stats st;
	clip_diskcache_stats(c, &st);
	assert_int_equal(st.evicted, 2);
	for (unsigned i = 0; i < 11; i++) {
		char *f = chunk_file(dir, name, i);
		assert_int_equal(exists(f), i != 1 && i != 2);
		free(f);
	}
	/* A read does not touch a chunk used within the last minute (the LRU
	 * clock is kept cheap). */
	char *f = chunk_file(dir, name, 5);
	set_mtime(f, now - 30);
	assert_int_equal(read_check(c, 1, 5, len, NULL, 0, 10), 10);
	struct stat sb;
	assert_int_equal(stat(f, &sb), 0);
	assert_int_equal(sb.st_mtime, now - 30);
	free(f);
	clip_diskcache_close(c);
	tt_rm_rf(dir);
	free(dir);
}

/* ---- concurrency --------------------------------------------------------- */

#define WORK_LEN 65536u

struct worker {
	const char *dir;
	struct clip_diskcache *cache; /* shared handle (threads) or NULL (own) */
	uint64_t max;
	unsigned id;
	unsigned iterations;
	unsigned bad;	  /* reads that returned wrong bytes or an error */
	unsigned hits;	  /* reads served */
	uint64_t corrupt; /* chunks this worker's handle found bad */
};

/* Put and read chunks of a layer shared by all workers (same index, same
 * bytes, from every writer) and of one of its own. */
static void *work(void *arg)
{
	struct worker *w = arg;
	struct clip_diskcache *c = w->cache;
	struct clip_err err = { 0 };
	if (c == NULL &&
	    clip_diskcache_open(
		    &(struct clip_diskcache_options){ .dir = w->dir, .max_bytes = w->max }, &c,
		    &err) < 0) {
		w->bad++;
		return NULL;
	}
	unsigned char *data = malloc(WORK_LEN), *got = malloc(WORK_LEN);
	uint64_t seed = 1000 + w->id;
	for (unsigned i = 0; i < w->iterations && data && got; i++) {
		unsigned layer = tt_rand(&seed) % 2 ? 100 : 200 + w->id;
		uint64_t idx = tt_rand(&seed) % 12;
		char name[65];
		layer_name(name, layer);
		chunk_data(layer, idx, data, WORK_LEN);
		if (tt_rand(&seed) % 2) {
			unsigned char hash[32];
			unsigned int n = 0;
			EVP_Digest(data, WORK_LEN, hash, &n, EVP_sha256(), NULL);
			if (clip_diskcache_put(c, name, idx, data, WORK_LEN, hash, &err) < 0)
				w->bad++;
		}
		size_t off = tt_rand(&seed) % WORK_LEN;
		size_t len = WORK_LEN - off;
		ssize_t r = clip_diskcache_read(c, name, idx, WORK_LEN, NULL, got, len, off, &err);
		if (r == (ssize_t)len && memcmp(got, data + off, len) == 0)
			w->hits++;
		else if (r != -ENOENT)
			w->bad++;
	}
	if (data == NULL || got == NULL)
		w->bad++;
	free(data);
	free(got);
	if (w->cache == NULL) {
		struct clip_diskcache_stats st;
		clip_diskcache_stats(c, &st);
		w->corrupt = st.corrupt;
		clip_diskcache_close(c);
	}
	return NULL;
}

/* Every chunk left must be whole and correct, and the bound kept (give or
 * take one chunk per writer still finishing its put). */
static void check_after(const char *dir, uint64_t max, unsigned writers)
{
	struct clip_diskcache *c = open_cache(dir, 0);
	unsigned found = 0;
	for (unsigned layer = 100; layer < 200 + writers; layer++) {
		if (layer == 101)
			layer = 200;
		for (uint64_t idx = 0; idx < 12; idx++) {
			ssize_t r = read_check(c, layer, idx, WORK_LEN, NULL, 0, WORK_LEN);
			assert_true(r == -ENOENT || r == WORK_LEN);
			found += r == WORK_LEN;
		}
	}
	struct clip_diskcache_stats st;
	clip_diskcache_stats(c, &st);
	assert_int_equal(st.corrupt, 0);
	assert_true(found > 0);
	clip_diskcache_close(c);
	assert_true(disk_usage(dir) <= max + writers * (WORK_LEN + 4096 + HDR));
}

static void test_processes(void **state)
{
	char *dir = tt_tmpdir();
	const uint64_t max = 20 * (WORK_LEN + 4096);
	const unsigned nproc = 3;
	pid_t pids[3];
	for (unsigned p = 0; p < nproc; p++) {
		pids[p] = fork();
		assert_true(pids[p] >= 0);
		if (pids[p] == 0) {
			struct worker w = { .dir = dir, .max = max, .id = p, .iterations = 300 };
			work(&w);
			if (w.bad || w.corrupt || w.hits == 0) {
				fprintf(stderr, "process %u: %u bad, %llu corrupt, %u hits\n", p,
					w.bad, (unsigned long long)w.corrupt, w.hits);
				_exit(1);
			}
			_exit(0);
		}
	}
	for (unsigned p = 0; p < nproc; p++) {
		int status = 0;
		assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	check_after(dir, max, nproc);
	tt_rm_rf(dir);
	free(dir);
}

static void test_threads(void **state)
{
	char *dir = tt_tmpdir();
	const uint64_t max = 20 * (WORK_LEN + 4096);
	struct clip_diskcache *c = open_cache(dir, max);
	/* Four threads on one handle, two more with their own handles (like two
	 * mounts in one process). */
	struct worker w[6];
	pthread_t t[6];
	for (unsigned i = 0; i < 6; i++) {
		w[i] = (struct worker){ .dir = dir,
					.cache = i < 4 ? c : NULL,
					.max = max,
					.id = i,
					.iterations = 200 };
		assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
	}
	for (unsigned i = 0; i < 6; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(w[i].bad, 0);
		assert_int_equal(w[i].corrupt, 0);
		assert_true(w[i].hits > 0);
	}
	struct clip_diskcache_stats st;
	clip_diskcache_stats(c, &st);
	assert_int_equal(st.corrupt, 0);
	assert_true(st.evicted > 0);
	clip_diskcache_close(c);
	check_after(dir, max, 6);
	tt_rm_rf(dir);
	free(dir);
}

/* Bytes free on the filesystem holding `path`. */
static uint64_t fs_avail(const char *path)
{
	struct statvfs vfs;
	assert_int_equal(statvfs(path, &vfs), 0);
	return (uint64_t)vfs.f_bavail * vfs.f_frsize;
}

/* A cache on a 1 MiB tmpfs, with no bound of its own: puts of far more than
 * that evict the oldest chunks instead of failing, the newest stay, and the
 * cache says it is full. When files of others take the filesystem, the
 * cache gives its own chunks up and then declines, never taking the last
 * bytes. Mounting needs root: skipped without it. */
static void test_full_filesystem(void **state)
{
	(void)state;
	char *dir = tt_tmpdir();
	if (geteuid() != 0 || mount("tmpfs", dir, "tmpfs", 0, "size=1m") < 0) {
		print_message("skipped: mounting a small tmpfs needs root\n");
		tt_rm_rf(dir);
		free(dir);
		skip();
	}
	char *cdir = NULL, *foreign = NULL;
	assert_true(asprintf(&cdir, "%s/cache", dir) > 0 && asprintf(&foreign, "%s/x", dir) > 0);
	const size_t len = 60000;
	struct clip_diskcache *c = open_cache(cdir, 0);
	assert_false(clip_diskcache_full(c));
	for (uint64_t n = 0; n < 60; n++) {
		put_chunk(c, 1, n, len); /* fails the test on an error */
		assert_true(disk_usage(cdir) <= 1 << 20);
	}
	struct clip_diskcache_stats st;
	clip_diskcache_stats(c, &st);
	assert_true(st.evicted > 0);
	assert_int_equal(st.declined, 0);
	assert_true(clip_diskcache_full(c));
	assert_int_equal(st.usage, disk_usage(cdir));
	assert_int_equal(read_check(c, 1, 0, len, NULL, 0, len), -ENOENT);
	for (uint64_t n = 55; n < 60; n++)
		assert_int_equal(read_check(c, 1, n, len, NULL, 0, len), len);

	/* Another file takes all but a chunk's worth of the free space: the
	 * next put makes room from the cache's own chunks. */
	uint64_t left = fs_avail(dir);
	int fd = open(foreign, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 0), 0);
	unsigned char *fill = calloc(1, 1 << 20);
	assert_non_null(fill);
	size_t want = (size_t)(left - left % 4096);
	assert_int_equal(write(fd, fill, want), (ssize_t)want);
	put_chunk(c, 2, 0, len);
	assert_int_equal(read_check(c, 2, 0, len, NULL, 0, len), len);
	/* ... and when it takes everything the cache held too, the cache is
	 * empty and declines. */
	clip_diskcache_close(c);
	tt_rm_rf(cdir);
	c = open_cache(cdir, 0);
	want = (size_t)(fs_avail(dir) - fs_avail(dir) % 4096);
	assert_int_equal(write(fd, fill, want), (ssize_t)want);
	put_chunk(c, 3, 0, len);
	assert_int_equal(read_check(c, 3, 0, len, NULL, 0, len), -ENOENT);
	clip_diskcache_stats(c, &st);
	assert_int_equal(st.declined, 1);
	assert_true(clip_diskcache_full(c));
	/* Once the other file is gone, chunks are kept again. */
	close(fd);
	assert_int_equal(unlink(foreign), 0);
	put_chunk(c, 3, 0, len);
	assert_int_equal(read_check(c, 3, 0, len, NULL, 0, len), len);
	clip_diskcache_close(c);

	free(fill);
	free(foreign);
	free(cdir);
	assert_int_equal(umount(dir), 0);
	tt_rm_rf(dir);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),   cmocka_unit_test(test_corruption),
		cmocka_unit_test(test_leftover_tmp), cmocka_unit_test(test_bound),
		cmocka_unit_test(test_lru),	     cmocka_unit_test(test_processes),
		cmocka_unit_test(test_threads),	     cmocka_unit_test(test_full_filesystem),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
