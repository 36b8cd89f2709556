/* clip_content_read through a fault-injecting source: whatever the source
 * does (a flipped byte, a blob cut short, errors, slowness under concurrent
 * readers), every read returns the image's bytes or fails cleanly, never a
 * wrong byte, and nothing wrong is left in a cache for the next reader.
 *
 * The image is written here as an OCI layout: a gzip layer (read through
 * checkpoint spans, or whole with no_checkpoints), a zstd layer (whole-layer
 * tier) and a plain tar layer (ranges checked on the archive's chunk grid).
 * It is indexed with a 256 KiB chunk grid, and read with caches on that grid,
 * on smaller and larger grids that do not line up with it, and with none. An
 * archive of format 1 (no chunk hashes) covers the staging of whole layers
 * until their blob digest is known. A disk cache that keeps nothing covers
 * the memory tier: what it saves, and that it holds only verified chunks.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <cmocka.h>

#include "clip/archive.h"
#include "clip/content.h"
#include "clip/image.h"
#include "clip/indexer.h"
#include "clip/profile.h"
#include "clip/source.h"
#include "sha256.h"
#include "testutil.h"

#define GRID (256u << 10) /* the archive's chunk hashes */

enum { LAYER_GZIP, LAYER_ZSTD, LAYER_PLAIN, NLAYERS };

struct file {
	const char *path;
	unsigned char *data;
	size_t size;
	int layer;
};

/* The image: its files, its layers' digests, the layout and the archive. */
static struct file files[] = {
	{ "/g/small", NULL, 5000, LAYER_GZIP },	  { "/g/big", NULL, 1300000, LAYER_GZIP },
	{ "/g/big2", NULL, 900000, LAYER_GZIP },  { "/z/small", NULL, 7000, LAYER_ZSTD },
	{ "/z/big", NULL, 1100000, LAYER_ZSTD },  { "/p/small", NULL, 3000, LAYER_PLAIN },
	{ "/p/big", NULL, 1200000, LAYER_PLAIN }, { "/p/big2", NULL, 700000, LAYER_PLAIN },
};
#define NFILES (sizeof(files) / sizeof(files[0]))

static char *workdir;
static char layout[4096];
static char archive_path[4096];
static char layer_digest[NLAYERS][72];
static uint64_t layer_size[NLAYERS];
static struct tt_buf layer_tar[NLAYERS]; /* each layer's uncompressed tar */
static struct clip_archive *archive;

/* ---- the fault-injecting source -------------------------------------------- */

struct faults {
	const char *dir;       /* the layout the blobs come from */
	const char *digest;    /* the blob the faults below apply to; NULL: none */
	int64_t flip_at;       /* a byte XORed with 0x20 on its way out; -1: none */
	int64_t ends_at;       /* the blob looks this long; -1: its real size */
	atomic_int fail_after; /* every call fails with -EIO once this reaches 0; -1: never */
	unsigned delay_us;     /* each call sleeps this long */
	/* Another blob served in place of the target one: valid data that
	 * decodes to other bytes, as a rogue mirror could serve. */
	const struct tt_buf *replace;
	atomic_uint calls, flipped; /* calls made, flipped bytes handed out */
	struct clip_source_ops ops; /* fault_pread on this */
};

static ssize_t fault_pread(void *opaque, const char *digest, void *buf, size_t len, uint64_t offset,
			   struct clip_err *err)
{
	struct faults *f = opaque;
	atomic_fetch_add(&f->calls, 1);
	if (f->delay_us)
		usleep(f->delay_us);
	if (atomic_load(&f->fail_after) == 0)
		return clip_err_set(err, EIO, "injected source error");
	if (atomic_load(&f->fail_after) > 0)
		atomic_fetch_sub(&f->fail_after, 1);
	bool target = f->digest && strcmp(f->digest, digest) == 0;
	if (target && f->replace) {
		size_t n = offset >= f->replace->len ? 0 : f->replace->len - (size_t)offset;
		n = n < len ? n : len;
		memcpy(buf, f->replace->data + offset, n);
		return (ssize_t)n;
	}
	char path[8192];
	snprintf(path, sizeof(path), "%s/blobs/sha256/%s", f->dir, digest + 7);
	FILE *fp = fopen(path, "rb");
	if (fp == NULL)
		return clip_err_set(err, ENOENT, "%s: no such blob", digest);
	if (target && f->ends_at >= 0 && offset + len > (uint64_t)f->ends_at)
		len = offset >= (uint64_t)f->ends_at ? 0 : (size_t)((uint64_t)f->ends_at - offset);
	size_t n = 0;
	if (len && fseeko(fp, (off_t)offset, SEEK_SET) == 0)
		n = fread(buf, 1, len, fp);
	fclose(fp);
	if (target && f->flip_at >= 0 && (uint64_t)f->flip_at >= offset &&
	    (uint64_t)f->flip_at < offset + n) {
		((unsigned char *)buf)[f->flip_at - (int64_t)offset] ^= 0x20;
		atomic_fetch_add(&f->flipped, 1);
	}
	return (ssize_t)n;
}

static void faults_init(struct faults *f, const char *dir)
{
	memset(f, 0, sizeof(*f));
	f->dir = dir;
	f->flip_at = f->ends_at = -1;
	atomic_init(&f->fail_after, -1);
	f->ops = (struct clip_source_ops){ fault_pread, f };
}

/* ---- the image --------------------------------------------------------------- */

static void sha256_hex(const void *data, size_t len, char out[72])
{
	unsigned char md[32];
	clip_sha256_once(data, len, md);
	strcpy(out, "sha256:");
	for (int i = 0; i < 32; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
}

static void put_blob(const void *data, size_t len, char digest[72])
{
	sha256_hex(data, len, digest);
	char path[8192];
	snprintf(path, sizeof(path), "%s/blobs/sha256/%s", layout, digest + 7);
	tt_write_file(path, data, len);
}

/* Bytes that compress somewhat, as files do: runs of text with random
 * stretches between them. */
static unsigned char *file_bytes(size_t size, uint64_t seed)
{
	unsigned char *p = malloc(size);
	assert_non_null(p);
	uint64_t st = seed;
	for (size_t i = 0; i < size;) {
		size_t run = 64 + tt_rand(&st) % 4096;
		if (run > size - i)
			run = size - i;
		if (tt_rand(&st) % 2)
			tt_fill_random(p + i, run, tt_rand(&st));
		else
			for (size_t j = 0; j < run; j++)
				p[i + j] = "clip reads what it checks\n"[j % 26];
		i += run;
	}
	return p;
}

static void layer_blob(int layer, struct tt_buf *tar, struct tt_buf *blob, const char **mt)
{
	switch (layer) {
	case LAYER_GZIP:
		tt_gzip(tar->data, tar->len, 6, blob);
		*mt = "application/vnd.oci.image.layer.v1.tar+gzip";
		break;
	case LAYER_ZSTD: {
		size_t cap = ZSTD_compressBound(tar->len);
		unsigned char *z = malloc(cap);
		assert_non_null(z);
		size_t n = ZSTD_compress(z, cap, tar->data, tar->len, 3);
		assert_false(ZSTD_isError(n));
		tt_buf_append(blob, z, n);
		free(z);
		*mt = "application/vnd.oci.image.layer.v1.tar+zstd";
		break;
	}
	default:
		tt_buf_append(blob, tar->data, tar->len);
		*mt = "application/vnd.oci.image.layer.v1.tar";
	}
}

static void write_image(void)
{
	char path[8192];
	snprintf(layout, sizeof(layout), "%s/layout", workdir);
	snprintf(path, sizeof(path), "%s/blobs/sha256", layout);
	assert_int_equal(mkdir(layout, 0755), 0);
	snprintf(path, sizeof(path), "%s/blobs", layout);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/blobs/sha256", layout);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/oci-layout", layout);
	tt_write_file(path, "{\"imageLayoutVersion\":\"1.0.0\"}", 30);

	struct tt_buf diff_ids = { 0 }, layers = { 0 };
	for (int layer = 0; layer < NLAYERS; layer++) {
		struct tt_buf tar = { 0 }, blob = { 0 };
		static const char *const dirs[] = { "g", "z", "p" };
		tt_tar_add(&tar,
			   &(struct tt_member){ .type = '5', .path = dirs[layer], .mode = 0755 });
		for (size_t i = 0; i < NFILES; i++) {
			if (files[i].layer != layer)
				continue;
			files[i].data = file_bytes(files[i].size, 1000 + i);
			tt_tar_add(&tar, &(struct tt_member){ .path = files[i].path + 1,
							      .mode = 0644,
							      .data = files[i].data,
							      .size = files[i].size });
		}
		tt_tar_finish(&tar);
		const char *mt;
		layer_blob(layer, &tar, &blob, &mt);
		char diff_id[72];
		sha256_hex(tar.data, tar.len, diff_id);
		put_blob(blob.data, blob.len, layer_digest[layer]);
		layer_size[layer] = blob.len;
		tt_buf_printf(&diff_ids, "%s\"%s\"", layer ? "," : "", diff_id);
		tt_buf_printf(&layers, "%s{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu}",
			      layer ? "," : "", mt, layer_digest[layer], blob.len);
		layer_tar[layer] = tar;
		tt_buf_free(&blob);
	}
	struct clip_platform host;
	clip_platform_host(&host);
	struct tt_buf config = { 0 }, manifest = { 0 }, index = { 0 };
	tt_buf_printf(&config,
		      "{\"architecture\":\"%s\",\"os\":\"%s\",\"config\":{},"
		      "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[%.*s]}}",
		      host.architecture, host.os, (int)diff_ids.len, (char *)diff_ids.data);
	char config_digest[72], manifest_digest[72];
	put_blob(config.data, config.len, config_digest);
	tt_buf_printf(&manifest,
		      "{\"schemaVersion\":2,\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\","
		      "\"config\":{\"mediaType\":\"" CLIP_MT_OCI_CONFIG "\",\"digest\":\"%s\","
		      "\"size\":%zu},\"layers\":[%.*s]}",
		      config_digest, config.len, (int)layers.len, (char *)layers.data);
	put_blob(manifest.data, manifest.len, manifest_digest);
	tt_buf_printf(&index,
		      "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" CLIP_MT_OCI_MANIFEST
		      "\",\"digest\":\"%s\",\"size\":%zu}]}",
		      manifest_digest, manifest.len);
	snprintf(path, sizeof(path), "%s/index.json", layout);
	tt_write_file(path, index.data, index.len);
	tt_buf_free(&diff_ids);
	tt_buf_free(&layers);
	tt_buf_free(&config);
	tt_buf_free(&manifest);
	tt_buf_free(&index);
}

static int setup_image(void **state)
{
	(void)state;
	workdir = tt_tmpdir();
	write_image();
	char ref[8192];
	snprintf(ref, sizeof(ref), "oci:%s", layout);
	snprintf(archive_path, sizeof(archive_path), "%s/image.clip", workdir);
	/* Checkpoints every 256 KiB, so that the gzip layer has several spans. */
	struct clip_index_options o = { .image_ref = ref,
					.output = archive_path,
					.span_bytes = 256u << 10,
					.chunk_bytes = GRID,
					.jobs = 1 };
	struct clip_err err = { 0 };
	struct clip_index_summary summary;
	int rc = clip_index_image(&o, &summary, &err);
	if (rc < 0)
		fail_msg("index: %s", err.msg);
	rc = clip_archive_open(archive_path, &archive, &err);
	if (rc < 0)
		fail_msg("open: %s", err.msg);
	return 0;
}

static int teardown_image(void **state)
{
	(void)state;
	clip_archive_close(archive);
	for (size_t i = 0; i < NFILES; i++)
		free(files[i].data);
	for (int layer = 0; layer < NLAYERS; layer++)
		tt_buf_free(&layer_tar[layer]);
	tt_rm_rf(workdir);
	free(workdir);
	return 0;
}

/* ---- reading ------------------------------------------------------------------- */

struct mode {
	const char *name;
	uint32_t chunk_size; /* 0: the archive's grid */
	bool cache;
	bool no_checkpoints;
};

static const struct mode modes[] = {
	{ "no cache", 0, false, false },
	{ "cache on the archive's grid", 0, true, false },
	{ "cache on a 64 KiB grid", 64u << 10, true, false },
	{ "cache on a 96 KiB grid (not a divisor)", 96u << 10, true, false },
	{ "cache on a 1 MiB grid (a multiple)", 1u << 20, true, false },
	{ "cache, --no-checkpoints", 0, true, true },
	{ "cache on a 96 KiB grid, --no-checkpoints", 96u << 10, true, true },
	{ "no cache, --no-checkpoints", 0, false, true },
};

static struct clip_content *open_content(const struct clip_archive *a, struct faults *f,
					 const struct mode *m, const char *cache_dir)
{
	struct clip_content_options o = {
		.source_ops = &f->ops,
		.no_checkpoints = m->no_checkpoints,
		.cache_dir = m->cache ? cache_dir : NULL,
		.chunk_size = m->chunk_size,
	};
	struct clip_content *c = NULL;
	struct clip_err err = { 0 };
	if (clip_content_open(a, &o, &c, &err) < 0)
		fail_msg("content open: %s", err.msg);
	return c;
}

/* Read a whole file in pieces of `piece` bytes: 0 when its bytes came back
 * right, a negative errno when a read failed. A wrong byte fails the test. */
static int read_file(struct clip_content *c, const struct clip_archive *a, const char *path,
		     const unsigned char *expected, size_t size, size_t piece)
{
	uint32_t ino;
	struct clip_err err = { 0 };
	if (clip_archive_resolve(a, path, &ino, &err) < 0)
		fail_msg("%s: %s", path, err.msg);
	unsigned char *buf = malloc(piece);
	assert_non_null(buf);
	int rc = 0;
	for (size_t off = 0; off < size && rc == 0; off += piece) {
		size_t want = size - off < piece ? size - off : piece;
		memset(buf, 0xa5, want);
		ssize_t n = clip_content_read(c, ino, buf, want, off, &err);
		if (n < 0) {
			if (n != -EBADMSG && n != -EIO)
				fail_msg("%s at %zu: unexpected error %zd: %s", path, off, n,
					 err.msg);
			assert_true(err.msg[0] != '\0');
			rc = (int)n;
		} else if ((size_t)n != want || memcmp(buf, expected + off, want) != 0) {
			fail_msg("%s at %zu: %zd bytes came back and they are wrong", path, off, n);
		}
	}
	free(buf);
	return rc;
}

/* Read every file once; the number of files whose read failed. */
static int read_all(struct clip_content *c, int *failed_by_layer)
{
	int failed = 0;
	for (size_t i = 0; i < NFILES; i++) {
		if (read_file(c, archive, files[i].path, files[i].data, files[i].size, 100000) <
		    0) {
			failed++;
			if (failed_by_layer)
				failed_by_layer[files[i].layer]++;
		}
	}
	return failed;
}

static void fresh_cache_dir(char *out, size_t cap, const char *name)
{
	snprintf(out, cap, "%s/%s", workdir, name);
	tt_rm_rf(out);
}

static void test_clean_reads(void **state)
{
	(void)state;
	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		char cache[8192];
		fresh_cache_dir(cache, sizeof(cache), "cache-clean");
		struct faults f;
		faults_init(&f, layout);
		/* Cold, then warm from the same cache. */
		for (int pass = 0; pass < 2; pass++) {
			struct clip_content *c = open_content(archive, &f, &modes[m], cache);
			if (read_all(c, NULL) != 0)
				fail_msg("%s: a clean read failed", modes[m].name);
			clip_content_close(c);
		}
	}
}

/* A fault on one layer's blob: in every mode, two contents share a cache and
 * read everything twice each; every read is right or fails, and some read
 * of that layer fails. Then a clean source reads everything right through
 * the same cache: nothing wrong was kept. */
static void check_fault(int layer, int64_t flip_at, int64_t ends_at, const struct tt_buf *replace)
{
	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		char cache[8192];
		fresh_cache_dir(cache, sizeof(cache), "cache-fault");
		struct faults f;
		faults_init(&f, layout);
		f.digest = layer_digest[layer];
		f.flip_at = flip_at;
		f.ends_at = ends_at;
		f.replace = replace;
		int failed[NLAYERS] = { 0 };
		for (int pass = 0; pass < 4; pass++) {
			struct clip_content *c = open_content(archive, &f, &modes[m], cache);
			read_all(c, failed);
			clip_content_close(c);
		}
		if (failed[layer] == 0)
			fail_msg("layer %d, %s: the fault went unnoticed", layer, modes[m].name);
		for (int other = 0; other < NLAYERS; other++)
			if (other != layer && failed[other])
				fail_msg("layer %d, %s: a read of layer %d failed", layer,
					 modes[m].name, other);
		struct faults clean;
		faults_init(&clean, layout);
		struct clip_content *c = open_content(archive, &clean, &modes[m], cache);
		if (read_all(c, NULL) != 0)
			fail_msg("layer %d, %s: a clean read after the fault failed", layer,
				 modes[m].name);
		clip_content_close(c);
	}
}

static void test_flipped_byte(void **state)
{
	(void)state;
	for (int layer = 0; layer < NLAYERS; layer++)
		check_fault(layer, (int64_t)layer_size[layer] / 2, -1, NULL);
}

static void test_blob_cut_short(void **state)
{
	(void)state;
	for (int layer = 0; layer < NLAYERS; layer++)
		check_fault(layer, -1, (int64_t)layer_size[layer] * 2 / 3, NULL);
}

/* Each layer's blob replaced by a valid one of the same kind whose tar has
 * one byte changed in the middle: it decodes cleanly, so only digests can
 * tell. */
static void test_substituted_blob(void **state)
{
	(void)state;
	for (int layer = 0; layer < NLAYERS; layer++) {
		struct tt_buf tar = { 0 }, blob = { 0 };
		tt_buf_append(&tar, layer_tar[layer].data, layer_tar[layer].len);
		tar.data[tar.len / 2] ^= 0x01;
		const char *mt;
		layer_blob(layer, &tar, &blob, &mt);
		check_fault(layer, -1, -1, &blob);
		tt_buf_free(&tar);
		tt_buf_free(&blob);
	}
}

static void test_source_errors(void **state)
{
	(void)state;
	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		char cache[8192];
		fresh_cache_dir(cache, sizeof(cache), "cache-errors");
		/* The source fails from its third call on: reads fail cleanly. */
		struct faults f;
		faults_init(&f, layout);
		atomic_store(&f.fail_after, 2);
		struct clip_content *c = open_content(archive, &f, &modes[m], cache);
		int failed = read_all(c, NULL);
		clip_content_close(c);
		if (failed == 0)
			fail_msg("%s: no read saw the source's errors", modes[m].name);
		/* It recovers: everything reads right through the same cache. */
		atomic_store(&f.fail_after, -1);
		c = open_content(archive, &f, &modes[m], cache);
		if (read_all(c, NULL) != 0)
			fail_msg("%s: a read after the errors failed", modes[m].name);
		clip_content_close(c);
	}
}

struct reader_arg {
	struct clip_content *content;
	const struct file *file;
	int rc;
};

static void *reader_main(void *arg)
{
	struct reader_arg *r = arg;
	r->rc = read_file(r->content, archive, r->file->path, r->file->data, r->file->size, 32768);
	return NULL;
}

/* Sixteen readers of the same file on a slow source, each layer's kind: all
 * right, and the ones that came late waited for a fetch under way instead
 * of making their own. */
static void test_concurrent_readers(void **state)
{
	(void)state;
	static const char *const paths[] = { "/g/big", "/z/big", "/p/big" };
	for (size_t p = 0; p < 3; p++) {
		const struct file *file = NULL;
		for (size_t i = 0; i < NFILES; i++)
			if (strcmp(files[i].path, paths[p]) == 0)
				file = &files[i];
		assert_non_null(file);
		char cache[8192];
		fresh_cache_dir(cache, sizeof(cache), "cache-concurrent");
		struct faults f;
		faults_init(&f, layout);
		f.delay_us = 20000;
		struct clip_content *c = open_content(archive, &f, &modes[1], cache);
		pthread_t threads[16];
		struct reader_arg args[16];
		for (int t = 0; t < 16; t++) {
			args[t] = (struct reader_arg){ c, file, -1 };
			assert_int_equal(pthread_create(&threads[t], NULL, reader_main, &args[t]),
					 0);
		}
		for (int t = 0; t < 16; t++) {
			pthread_join(threads[t], NULL);
			assert_int_equal(args[t].rc, 0);
		}
		struct clip_content_stats st;
		clip_content_stats(c, &st);
		assert_true(st.coalesced > 0);
		clip_content_close(c);
	}
}

/* ---- the span engine: hydration, prefetch, read-ahead ------------------------- */

/* Every file (of layer `layer`, or of all with -1) reads right from `cache`
 * alone: the source fails every call. */
static void assert_cached(const struct mode *m, const char *cache, int layer)
{
	struct faults dead;
	faults_init(&dead, layout);
	atomic_store(&dead.fail_after, 0);
	struct clip_content *c = open_content(archive, &dead, m, cache);
	int failed[NLAYERS] = { 0 };
	read_all(c, failed);
	for (int i = 0; i < NLAYERS; i++)
		if ((layer < 0 || layer == i) && failed[i])
			fail_msg("%s: layer %d was not all in the cache", m->name, i);
	clip_content_close(c);
}

static void test_prefetch_fills_the_cache(void **state)
{
	(void)state;
	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		if (!modes[m].cache)
			continue;
		char cache[8192];
		fresh_cache_dir(cache, sizeof(cache), "cache-prefetch");
		struct faults f;
		faults_init(&f, layout);
		struct clip_content *c = open_content(archive, &f, &modes[m], cache);
		atomic_bool stop;
		atomic_init(&stop, false);
		struct clip_err err = { 0 };
		if (clip_content_prefetch(c, &stop, &err) < 0)
			fail_msg("%s: prefetch: %s", modes[m].name, err.msg);
		clip_content_close(c);
		assert_cached(&modes[m], cache, -1);
	}
}

/* Reading one large file of the gzip layer touches a third of its spans:
 * with the threshold at a quarter, the rest of the layer is hydrated
 * without being asked for. */
static void test_density_hydrates_the_layer(void **state)
{
	(void)state;
	char cache[8192];
	fresh_cache_dir(cache, sizeof(cache), "cache-density");
	struct faults f;
	faults_init(&f, layout);
	struct clip_content_options quarter = { .source_ops = &f.ops,
						.cache_dir = cache,
						.hydrate_percent = 25 };
	struct clip_content *c;
	struct clip_err oerr = { 0 };
	assert_int_equal(clip_content_open(archive, &quarter, &c, &oerr), 0);
	assert_int_equal(read_file(c, archive, "/g/big", files[1].data, files[1].size, 131072), 0);
	struct clip_content_layer_stats ls;
	for (int i = 0; i < 1000; i++) {
		clip_content_layer_stats(c, LAYER_GZIP, &ls);
		if (ls.hydrated)
			break;
		usleep(10000);
	}
	assert_true(ls.units > 0);
	assert_true(ls.touched * 4 >= ls.units);
	assert_true(ls.hydrating && ls.hydrated);
	assert_true(ls.hydrated_chunks > 0);
	clip_content_close(c);
	assert_cached(&modes[1], cache, LAYER_GZIP);

	/* Below the threshold, or with hydration off, nothing more is fetched. */
	fresh_cache_dir(cache, sizeof(cache), "cache-density");
	struct clip_content_options o = { .source_ops = &f.ops,
					  .cache_dir = cache,
					  .hydrate_percent = 101 };
	struct clip_err err = { 0 };
	assert_int_equal(clip_content_open(archive, &o, &c, &err), 0);
	assert_int_equal(read_file(c, archive, "/g/big", files[1].data, files[1].size, 131072), 0);
	clip_content_layer_stats(c, LAYER_GZIP, &ls);
	assert_false(ls.hydrating);
	clip_content_close(c);
}

/* Record the reads of a few files into a profile, save and load it; a
 * fresh cache replaying it then has every byte those reads need: reading
 * them again asks the source for nothing. A profile that does not fit the
 * archive is refused at open. */
static void test_profile_record_replay(void **state)
{
	(void)state;
	static const size_t wanted[] = { 1, 3, 6 }; /* gzip, zstd, plain files */
	char cache[8192], path[8192];
	snprintf(path, sizeof(path), "%s/startup.profile", workdir);
	fresh_cache_dir(cache, sizeof(cache), "cache-record");
	struct faults f;
	faults_init(&f, layout);
	struct clip_profile_recorder *rec = NULL;
	struct clip_err err = { 0 };
	assert_int_equal(clip_profile_recorder_new(archive, 0, &rec, &err), 0);
	struct clip_content_options o = { .source_ops = &f.ops,
					  .cache_dir = cache,
					  .hydrate_percent = 101,
					  .record_profile = rec };
	struct clip_content *c;
	assert_int_equal(clip_content_open(archive, &o, &c, &err), 0);
	for (size_t i = 0; i < (sizeof(wanted) / sizeof(wanted[0])); i++) {
		const struct file *w = &files[wanted[i]];
		assert_int_equal(read_file(c, archive, w->path, w->data, w->size, 65536), 0);
	}
	clip_content_close(c);
	struct clip_profile *recorded = NULL, *loaded = NULL;
	assert_int_equal(clip_profile_recorder_profile(rec, &recorded, &err), 0);
	clip_profile_recorder_free(rec);
	/* Reads 64 KiB apart and closer merge: one region per file here. */
	assert_int_equal(recorded->nregions, (sizeof(wanted) / sizeof(wanted[0])));
	assert_int_equal(clip_profile_save(recorded, path, &err), 0);
	assert_int_equal(clip_profile_load(path, &loaded, &err), 0);
	assert_int_equal(loaded->nregions, recorded->nregions);
	assert_memory_equal(loaded->regions, recorded->regions,
			    recorded->nregions * sizeof(*recorded->regions));
	uint64_t bytes;
	size_t regions;
	clip_profile_totals(loaded, UINT32_MAX, &bytes, &regions);
	assert_int_equal(bytes, files[1].size + files[3].size + files[6].size);

	fresh_cache_dir(cache, sizeof(cache), "cache-replay");
	o.record_profile = NULL;
	o.replay_profile = loaded;
	assert_int_equal(clip_content_open(archive, &o, &c, &err), 0);
	clip_content_start(c);
	struct clip_content_stats st;
	for (int i = 0; i < 1000; i++) {
		clip_content_stats(c, &st);
		if (st.replay_done == st.replay_regions)
			break;
		usleep(10000);
	}
	assert_int_equal(st.replay_regions, loaded->nregions);
	assert_int_equal(st.replay_done, st.replay_regions);
	assert_int_equal(st.replay_errors, 0);
	unsigned calls = atomic_load(&f.calls);
	assert_true(calls > 0);
	for (size_t i = 0; i < (sizeof(wanted) / sizeof(wanted[0])); i++) {
		const struct file *w = &files[wanted[i]];
		assert_int_equal(read_file(c, archive, w->path, w->data, w->size, 65536), 0);
	}
	assert_int_equal(atomic_load(&f.calls), calls);
	clip_content_close(c);

	/* A layer the archive does not have, a region past its layer's end. */
	char *kept = loaded->layers[0];
	loaded->layers[0] =
		"sha256:0000000000000000000000000000000000000000000000000000000000000000";
	assert_int_equal(clip_content_open(archive, &o, &c, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "not in this archive"));
	loaded->layers[0] = kept;
	struct clip_archive_layer al;
	assert_int_equal(clip_archive_layer(archive, loaded->regions[0].layer, &al), 0);
	loaded->regions[0].length = al.uncompressed_size - loaded->regions[0].offset + 1;
	assert_int_equal(clip_content_open(archive, &o, &c, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "ends past layer"));
	clip_profile_free(loaded);
	clip_profile_free(recorded);
}

/* A damaged profile file is refused with the reason: cut short, edited
 * (checksum), of an unknown version. */
static void test_profile_damaged(void **state)
{
	(void)state;
	char path[8192];
	snprintf(path, sizeof(path), "%s/damaged.profile", workdir);
	struct clip_profile p = { 0 };
	char *layers[] = { layer_digest[0] };
	struct clip_profile_region regions[] = { { 0, 5, 1000, 200 }, { 0, 9, 500000, 7 } };
	p.layers = layers;
	p.nlayers = 1;
	p.regions = regions;
	p.nregions = 2;
	struct clip_err err = { 0 };
	assert_int_equal(clip_profile_save(&p, path, &err), 0);
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	char text[4096];
	size_t n = fread(text, 1, sizeof(text) - 1, fp);
	fclose(fp);
	text[n] = '\0';
	struct clip_profile *out = NULL;
	assert_int_equal(clip_profile_load(path, &out, &err), 0);
	clip_profile_free(out);

	tt_write_file(path, text, n / 2);
	assert_int_equal(clip_profile_load(path, &out, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "not JSON"));
	char *edit = strstr(text, "500000");
	assert_non_null(edit);
	edit[0] = '6';
	tt_write_file(path, text, n);
	assert_int_equal(clip_profile_load(path, &out, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "checksum mismatch"));
	edit[0] = '5';
	char *version = strstr(text, "\"clip_profile\":1");
	assert_non_null(version);
	version[strlen("\"clip_profile\":")] = '2';
	tt_write_file(path, text, n);
	assert_int_equal(clip_profile_load(path, &out, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "version 2"));
	snprintf(path, sizeof(path), "%s/no-such.profile", workdir);
	assert_int_equal(clip_profile_load(path, &out, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "no-such.profile"));
}

struct stress_arg {
	struct clip_content *content;
	uint64_t seed;
	int rc;
};

static void *stress_main(void *arg)
{
	struct stress_arg *a = arg;
	uint64_t st = a->seed;
	unsigned char *buf = malloc(300000);
	assert_non_null(buf);
	for (int i = 0; i < 60 && a->rc == 0; i++) {
		const struct file *f = &files[tt_rand(&st) % NFILES];
		uint64_t off = tt_rand(&st) % f->size;
		size_t len = 1 + (size_t)(tt_rand(&st) % 300000);
		if (len > f->size - off)
			len = (size_t)(f->size - off);
		uint32_t ino;
		struct clip_err err = { 0 };
		if (clip_archive_resolve(archive, f->path, &ino, &err) < 0)
			a->rc = -1;
		else if (clip_content_read(a->content, ino, buf, len, off, &err) != (ssize_t)len ||
			 memcmp(buf, f->data + off, len) != 0)
			a->rc = -2;
	}
	free(buf);
	return NULL;
}

/* Sixteen threads read random ranges while hydration and read-ahead run
 * on a slow source, and the content is closed with the hydration under way:
 * every byte right, nothing hangs (and, under the sanitizers, nothing
 * leaks or races). */
static void test_engine_stress(void **state)
{
	(void)state;
	for (size_t m = 1; m <= 3; m++) {
		char cache[8192];
		fresh_cache_dir(cache, sizeof(cache), "cache-stress");
		struct faults f;
		faults_init(&f, layout);
		f.delay_us = 2000;
		struct clip_content_options o = { .source_ops = &f.ops,
						  .cache_dir = cache,
						  .chunk_size = modes[m].chunk_size,
						  .hydrate_percent = 1 };
		struct clip_content *c;
		struct clip_err err = { 0 };
		assert_int_equal(clip_content_open(archive, &o, &c, &err), 0);
		pthread_t threads[16];
		struct stress_arg args[16];
		for (int t = 0; t < 16; t++) {
			args[t] = (struct stress_arg){ c, 77 + (uint64_t)t * 1000 + m, 0 };
			assert_int_equal(pthread_create(&threads[t], NULL, stress_main, &args[t]),
					 0);
		}
		for (int t = 0; t < 16; t++) {
			pthread_join(threads[t], NULL);
			if (args[t].rc != 0)
				fail_msg("%s: reader %d saw %d", modes[m].name, t, args[t].rc);
		}
		clip_content_close(c);
	}
}

/* ---- an archive of format 1: no chunk hashes ---------------------------------- */

static void gunzip_blob(const char *dir, const char *digest, struct tt_buf *out)
{
	char path[8300];
	snprintf(path, sizeof(path), "%s/blobs/sha256/%s", dir, digest + 7);
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	struct tt_buf in = { 0 };
	unsigned char block[65536];
	size_t n;
	while ((n = fread(block, 1, sizeof(block), fp)) > 0)
		tt_buf_append(&in, block, n);
	fclose(fp);
	z_stream zs = { 0 };
	assert_int_equal(inflateInit2(&zs, 16 + MAX_WBITS), Z_OK);
	zs.next_in = in.data;
	zs.avail_in = (uInt)in.len;
	int zrc;
	do {
		zs.next_out = block;
		zs.avail_out = sizeof(block);
		zrc = inflate(&zs, Z_NO_FLUSH);
		assert_true(zrc == Z_OK || zrc == Z_STREAM_END);
		tt_buf_append(out, block, sizeof(block) - zs.avail_out);
	} while (zrc != Z_STREAM_END);
	inflateEnd(&zs);
	tt_buf_free(&in);
}

/* ---- the memory tier ------------------------------------------------------------ */

/* A content whose disk cache keeps nothing: its bound is below a chunk, so
 * every put is declined. `memory_max` as in the options. */
static struct clip_content *open_declining(struct faults *f, const char *cache, uint64_t memory_max)
{
	struct clip_content_options o = { .source_ops = &f->ops,
					  .cache_dir = cache,
					  .cache_max = 64u << 10,
					  .hydrate_percent = 101,
					  .memory_cache_max = memory_max };
	struct clip_content *c = NULL;
	struct clip_err err = { 0 };
	if (clip_content_open(archive, &o, &c, &err) < 0)
		fail_msg("content open: %s", err.msg);
	return c;
}

/* With a disk cache that keeps nothing, the memory tier holds the chunks
 * instead: a file read 16 KiB at a time inflates each span about once (or
 * twice: spans as long as chunks straddle them), not once per read, and
 * every file of every layer's kind reads right. Without the memory tier the
 * same reads inflate dozens of times the file, so the check can fail. */
static void test_memory_tier(void **state)
{
	(void)state;
	const struct file *big = &files[1];
	assert_string_equal(big->path, "/g/big");
	for (int with = 1; with >= 0; with--) {
		char cache[8192];
		fresh_cache_dir(cache, sizeof(cache), "cache-memory");
		struct faults f;
		faults_init(&f, layout);
		struct clip_content *c =
			open_declining(&f, cache, with ? 0 : CLIP_MEMORY_CACHE_OFF);
		assert_int_equal(read_file(c, archive, big->path, big->data, big->size, 16384), 0);
		struct clip_content_stats st;
		clip_content_stats(c, &st);
		print_message("memory tier %s: %llu bytes inflated for %zu, %llu memory hits\n",
			      with ? "on" : "off", (unsigned long long)st.gz.inflated_bytes,
			      big->size, (unsigned long long)st.tier[CLIP_TIER_MEMORY].hits);
		if (with) {
			assert_true(st.gz.inflated_bytes <= 3 * big->size);
			assert_true(st.tier[CLIP_TIER_MEMORY].hits > 0);
			assert_int_equal(read_all(c, NULL), 0);
		} else {
			assert_true(st.gz.inflated_bytes > 4 * big->size);
			assert_int_equal(st.tier[CLIP_TIER_MEMORY].hits, 0);
		}
		char *json = clip_content_stats_json(c);
		assert_non_null(json);
		assert_true((strstr(json, "\"memory_cache\"") != NULL) == with);
		free(json);
		clip_content_close(c);
	}
}

/* Only verified chunks reach the memory tier: with a flipped byte in one
 * layer's blob, reads of that layer fail and the others are right; once the
 * source is clean, the same content (its memory tier as the faulty reads
 * left it) reads everything right. */
static void test_memory_tier_keeps_only_verified(void **state)
{
	(void)state;
	for (int layer = 0; layer < NLAYERS; layer++) {
		char cache[8192];
		fresh_cache_dir(cache, sizeof(cache), "cache-memory-fault");
		struct faults f;
		faults_init(&f, layout);
		f.digest = layer_digest[layer];
		f.flip_at = (int64_t)layer_size[layer] / 2;
		struct clip_content *c = open_declining(&f, cache, 0);
		int failed[NLAYERS] = { 0 };
		for (int pass = 0; pass < 2; pass++)
			read_all(c, failed);
		if (failed[layer] == 0)
			fail_msg("layer %d: the fault went unnoticed", layer);
		for (int other = 0; other < NLAYERS; other++)
			if (other != layer && failed[other])
				fail_msg("layer %d: a read of layer %d failed", layer, other);
		f.flip_at = -1;
		if (read_all(c, NULL) != 0)
			fail_msg("layer %d: a clean read after the fault failed", layer);
		clip_content_close(c);
	}
}

/* The whole-layer fallback is counted by reason, per layer and in all: the
 * zstd layer always, the gzip layer only under no_checkpoints, the plain tar
 * (with chunk hashes) never. With a disk cache a layer streams once however
 * often it is read, and only the read that streamed it fell back (the cache
 * answers the others); without one every read streams it again. */
static void test_whole_layer_fallback_counted(void **state)
{
	(void)state;
	static const struct {
		struct mode mode;
		int passes;
		uint64_t per_read; /* 1: every read streams (no cache); 0: once */
	} cases[] = {
		{ { "cache", 0, true, false }, 2, 0 },
		{ { "cache, no_checkpoints", 0, true, true }, 2, 0 },
		{ { "no cache, no_checkpoints", 0, false, true }, 1, 1 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct mode *m = &cases[i].mode;
		char cache[8192];
		fresh_cache_dir(cache, sizeof(cache), "cache-fallback");
		struct faults f;
		faults_init(&f, layout);
		struct clip_content *c = open_content(archive, &f, m, cache);
		for (int pass = 0; pass < cases[i].passes; pass++)
			if (read_all(c, NULL) != 0)
				fail_msg("%s: a read failed", m->name);
		struct clip_content_stats s;
		clip_content_stats(c, &s);
		const enum clip_fallback want[NLAYERS] = {
			[LAYER_GZIP] =
				m->no_checkpoints ? CLIP_FALLBACK_OPTION : CLIP_FALLBACK_NONE,
			[LAYER_ZSTD] = CLIP_FALLBACK_ZSTD,
			[LAYER_PLAIN] = CLIP_FALLBACK_NONE,
		};
		uint64_t by_reason[CLIP_FALLBACK_COUNT] = { 0 }, read_bytes = 0;
		uint64_t reads_by_reason[CLIP_FALLBACK_COUNT] = { 0 };
		for (int layer = 0; layer < NLAYERS; layer++) {
			struct clip_content_layer_stats ls;
			clip_content_layer_stats(c, (uint32_t)layer, &ls);
			assert_int_equal(ls.fallback, want[layer]);
			uint64_t reads = 0, bytes = 0;
			for (size_t k = 0; k < NFILES; k++)
				if (files[k].layer == layer) {
					reads += (files[k].size + 99999) / 100000;
					bytes += files[k].size;
				}
			assert_int_equal(ls.reads, reads * (uint64_t)cases[i].passes);
			assert_int_equal(ls.read_bytes, bytes * (uint64_t)cases[i].passes);
			read_bytes += ls.read_bytes;
			uint64_t fetches = want[layer] == CLIP_FALLBACK_NONE ? 0
					   : cases[i].per_read		     ? reads
									     : 1;
			if (ls.whole_layer_fetches != fetches)
				fail_msg("%s: layer %d streamed %llu times, not %llu", m->name,
					 layer, (unsigned long long)ls.whole_layer_fetches,
					 (unsigned long long)fetches);
			by_reason[want[layer]] += fetches;
			/* The reads that fell back are the ones that streamed. */
			if (ls.whole_layer_reads != fetches)
				fail_msg("%s: layer %d: %llu reads fell back, not %llu", m->name,
					 layer, (unsigned long long)ls.whole_layer_reads,
					 (unsigned long long)fetches);
			reads_by_reason[want[layer]] += fetches;
		}
		assert_int_equal(s.read_bytes, read_bytes);
		assert_int_equal(s.whole_layer_fetches[CLIP_FALLBACK_NONE], 0);
		assert_int_equal(s.whole_layer_reads[CLIP_FALLBACK_NONE], 0);
		for (int r = 1; r < CLIP_FALLBACK_COUNT; r++)
			if (s.whole_layer_fetches[r] != by_reason[r])
				fail_msg("%s: %llu whole-layer fetches for %s, not %llu", m->name,
					 (unsigned long long)s.whole_layer_fetches[r],
					 clip_fallback_name((enum clip_fallback)r),
					 (unsigned long long)by_reason[r]);
		for (int r = 1; r < CLIP_FALLBACK_COUNT; r++)
			assert_int_equal(s.whole_layer_reads[r], reads_by_reason[r]);
		char *json = clip_content_stats_json(c);
		assert_non_null(json);
		assert_non_null(strstr(json, "\"fallback\":\"zstd\""));
		assert_non_null(
			strstr(json, "\"whole_layer_fetches\":{\"no_checkpoints_option\":"));
		assert_non_null(strstr(json, "\"whole_layer_reads\":{\"no_checkpoints_option\":"));
		free(json);
		clip_content_close(c);
	}
}

/* tests/data/v1: numbers.txt holds "1\n" to "100000\n" in a gzip layer. With
 * no_checkpoints only the blob digest vouches for it: the whole layer's
 * chunks are staged and published once it matched. */
static void test_format1_whole_layer(void **state)
{
	(void)state;
	const char *root = getenv("CLIP_SOURCE_ROOT");
	if (root == NULL)
		skip();
	char path[4096], img[4096];
	snprintf(path, sizeof(path), "%s/tests/data/v1/v1.clip", root);
	snprintf(img, sizeof(img), "%s/tests/data/v1/img", root);
	struct clip_archive *v1;
	struct clip_err err = { 0 };
	if (clip_archive_open(path, &v1, &err) < 0)
		fail_msg("%s", err.msg);
	struct tt_buf numbers = { 0 };
	for (int i = 1; i <= 100000; i++)
		tt_buf_printf(&numbers, "%d\n", i);
	uint32_t ino;
	assert_int_equal(clip_archive_resolve(v1, "/usr/share/doc/numbers.txt", &ino, &err), 0);
	struct clip_archive_inode inode;
	assert_int_equal(clip_archive_inode(v1, ino, &inode), 0);
	struct clip_archive_layer layer;
	assert_int_equal(clip_archive_layer(v1, inode.layer, &layer), 0);

	/* The layer decoded, one byte of its tar changed, encoded again. */
	struct tt_buf tar = { 0 }, substitute = { 0 };
	gunzip_blob(img, layer.digest, &tar);
	tar.data[tar.len / 2] ^= 0x01;
	tt_gzip(tar.data, tar.len, 6, &substitute);

	static const struct mode v1_modes[] = {
		{ "cache, no_checkpoints", 64u << 10, true, true },
		{ "cache", 64u << 10, true, false },
		{ "no cache, no_checkpoints", 0, false, true },
	};
	for (size_t m = 0; m < 3; m++) {
		char cache[8192];
		fresh_cache_dir(cache, sizeof(cache), "cache-v1");
		struct faults f;
		faults_init(&f, img);
		f.digest = layer.digest;
		f.replace = &substitute;
		for (int pass = 0; pass < 2; pass++) {
			struct clip_content *c = open_content(v1, &f, &v1_modes[m], cache);
			int rc = read_file(c, v1, "/usr/share/doc/numbers.txt", numbers.data,
					   numbers.len, 4096);
			clip_content_close(c);
			if (rc == 0)
				fail_msg("%s: the substituted blob went unnoticed",
					 v1_modes[m].name);
		}
		struct faults clean;
		faults_init(&clean, img);
		struct clip_content *c = open_content(v1, &clean, &v1_modes[m], cache);
		assert_int_equal(read_file(c, v1, "/usr/share/doc/numbers.txt", numbers.data,
					   numbers.len, 4096),
				 0);
		clip_content_close(c);
	}
	tt_buf_free(&numbers);
	tt_buf_free(&tar);
	tt_buf_free(&substitute);
	clip_archive_close(v1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clean_reads),
		cmocka_unit_test(test_flipped_byte),
		cmocka_unit_test(test_blob_cut_short),
		cmocka_unit_test(test_substituted_blob),
		cmocka_unit_test(test_source_errors),
		cmocka_unit_test(test_concurrent_readers),
		cmocka_unit_test(test_prefetch_fills_the_cache),
		cmocka_unit_test(test_density_hydrates_the_layer),
		cmocka_unit_test(test_engine_stress),
		cmocka_unit_test(test_format1_whole_layer),
		cmocka_unit_test(test_whole_layer_fallback_counted),
		cmocka_unit_test(test_profile_record_replay),
		cmocka_unit_test(test_profile_damaged),
		cmocka_unit_test(test_memory_tier),
		cmocka_unit_test(test_memory_tier_keeps_only_verified),
	};
	return cmocka_run_group_tests(tests, setup_image, teardown_image);
}
