/* File contents: from an inode to the bytes of its layer, through the tiers.
 *
 * A read of inode `ino` at `offset` is a read of its layer's uncompressed tar
 * at data_offset + offset. With a disk cache, that range is served chunk by
 * chunk (chunk i = tar bytes [i*C, (i+1)*C)), each chunk from the fastest
 * tier that has it:
 *   1. disk: the local disk cache (clip/diskcache.h);
 *   2. remote: a shared content cache (interface only until a backend lands);
 *   3. span: the chunk's range produced from the source — checkpoint spans
 *      of a gzip layer (one Range request for the spans needed), or the
 *      range itself of a plain tar;
 *   4. layer: the whole layer fetched once as a stream and inflated (zstd
 *      layers, gzip without checkpoints, --no-checkpoints), every chunk of it
 *      stored in the disk cache on the way.
 * Every chunk a slower tier produced is checked against its SHA-256 from the
 * archive (format version 2) before it is returned or stored, and then kept
 * in the disk cache. Concurrent reads of the same chunk wait for one fetch.
 *
 * Without a disk cache (`clip cat`) chunking would only cost: reads go
 * straight to the span tier (or inflate from the start of the layer), as
 * small as the request.
 *
 * No thread is started here and nothing touches the network before the first
 * read, so the FUSE front end can fork after clip_content_open.
 */
#include "clip/content.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "clip/diskcache.h"
#include "clip/indexer.h"
#include "clip/ocilayout.h"
#include "clip/rcache.h"
#include "clip/ref.h"
#include "sha256.h"
#include "util.h"

struct layer_state {
	struct clip_archive_layer info;
	uint32_t index;
	char hex[65];		      /* the blob digest without "sha256:" */
	struct clip_content *content; /* back pointer for the blob source */
	int fd;			      /* local blob, opened on first use */
	struct clip_gz_index *gz;     /* checkpoints, loaded on first use */
	bool ready;
	bool streaming;		 /* a whole-layer fetch is running */
	pthread_cond_t streamed; /* signalled when it ends */
};

/* A chunk being fetched; others wanting it wait on `done`. */
struct inflight {
	uint32_t layer;
	uint64_t chunk;
	bool finished;
	int waiters;
	pthread_cond_t done;
	struct inflight *next;
};

#define READAHEAD_THREADS 2
#define READAHEAD_BYTES	  (8u << 20) /* how far past a read's fetch to fetch */
#define READAHEAD_QUEUE	  16	     /* pending read-aheads at most; more are dropped */

struct readahead {
	uint32_t layer;
	uint64_t chunk;
	uint64_t file_start, file_end;
	uint64_t budget; /* bytes still to read ahead after this chunk's batch */
	struct readahead *next;
};

struct clip_content {
	const struct clip_archive *archive;
	struct clip_oci_layout *layout; /* one of these two is the source */
	struct clip_registry *registry;
	bool no_checkpoints;
	struct clip_diskcache *cache; /* tier 1; NULL: none */
	struct clip_rcache *rcache;   /* tier 2; NULL: none */
	uint64_t chunk_bytes;
	bool archive_hashes;  /* chunk_bytes is the archive's: its hashes apply */
	pthread_mutex_t lock; /* guards layer set-up, the in-flight list and stats */
	struct layer_state *layers;
	uint32_t nlayers;
	struct inflight *inflight;
	atomic_int active_reads; /* reads in progress, which prefetch yields to */
	/* Read-ahead: fetches of the chunks after a fetched batch of a file,
	 * done by worker threads started on the first one (never before: the
	 * FUSE daemon forks after clip_content_open). */
	struct readahead *ra_queue;
	unsigned ra_queued;
	pthread_cond_t ra_wake;
	pthread_t ra_threads[READAHEAD_THREADS];
	unsigned ra_nthreads;
	bool ra_stop;
	struct clip_content_stats stats;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void count_tier(struct clip_content *c, enum clip_tier tier, int outcome, uint64_t bytes,
		       uint64_t t0)
{
	pthread_mutex_lock(&c->lock);
	struct clip_tier_stats *t = &c->stats.tier[tier];
	if (outcome > 0)
		t->hits++;
	else if (outcome == 0)
		t->misses++;
	else
		t->errors++;
	t->bytes += bytes;
	t->nanoseconds += now_ns() - t0;
	pthread_mutex_unlock(&c->lock);
}

/* ---- the source: a local layout or a registry ----------------------------- */

static int open_registry(struct clip_content *c, const char *text,
			 const struct clip_registry_options *ro, struct clip_err *err)
{
	struct clip_ref ref;
	int rc = clip_ref_parse(text, &ref, err);
	if (rc < 0)
		return rc;
	rc = clip_registry_open(&ref, ro, &c->registry, err);
	clip_ref_clear(&ref);
	return rc;
}

static int open_source(struct clip_content *c, const struct clip_content_options *o,
		       struct clip_err *err)
{
	const struct clip_registry_options *ro = o ? o->registry : NULL;
	if (o && o->source) {
		const char *s = o->source;
		struct stat st;
		if (strncmp(s, "oci:", 4) == 0)
			return clip_oci_layout_open(s + 4, &c->layout, err);
		if (stat(s, &st) == 0 && S_ISDIR(st.st_mode))
			return clip_oci_layout_open(s, &c->layout, err);
		return open_registry(c, s, ro, err);
	}
	json_error_t jerr;
	json_t *src = json_loads(clip_archive_source_json(c->archive), 0, &jerr);
	if (src == NULL)
		return clip_err_set(err, EBADMSG, "archive source record is not JSON: %s",
				    jerr.text);
	const char *type = json_string_value(json_object_get(src, "type"));
	const char *path = json_string_value(json_object_get(src, "path"));
	const char *registry = json_string_value(json_object_get(src, "registry"));
	const char *repository = json_string_value(json_object_get(src, "repository"));
	int rc;
	if (type && strcmp(type, "oci-layout") == 0 && path) {
		rc = clip_oci_layout_open(path, &c->layout, err);
	} else if (type && strcmp(type, "registry") == 0 && registry && repository) {
		size_t n = strlen(registry) + strlen(repository) + 2;
		char *text = malloc(n);
		if (text == NULL) {
			rc = clip_err_set(err, ENOMEM, "out of memory");
		} else {
			snprintf(text, n, "%s/%s", registry, repository);
			rc = open_registry(c, text, ro, err);
			free(text);
		}
	} else {
		rc = clip_err_set(err, ENOTSUP,
				  "archive source of type %s is not known; give one with --source",
				  type ? type : "missing");
	}
	json_decref(src);
	return rc;
}

static ssize_t blob_pread(void *opaque, void *buf, size_t len, uint64_t offset,
			  struct clip_err *err)
{
	const struct layer_state *l = opaque;
	struct clip_content *c = l->content;
	if (c->registry)
		return clip_registry_blob_read(c->registry, l->info.digest, buf, len, offset, err);
	size_t got = 0;
	while (got < len) {
		ssize_t n =
			pread(l->fd, (unsigned char *)buf + got, len - got, (off_t)(offset + got));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return clip_err_set(err, errno, "read at offset %llu: %s",
					    (unsigned long long)(offset + got), strerror(errno));
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* clip_blob_source.map for a local blob (gzindex.h). OCI tools never rewrite
 * a blob in place (they write a new file and rename it: the name is its
 * digest), so a mapping is not cut short under the reader; the size is
 * checked first so that a short blob is an error, never a SIGBUS. */
static int blob_map(void *opaque, uint64_t offset, size_t len, struct clip_blob_map *m,
		    struct clip_err *err)
{
	const struct layer_state *l = opaque;
	struct stat st;
	if (fstat(l->fd, &st) < 0)
		return clip_err_set(err, errno, "compressed blob: %s", strerror(errno));
	uint64_t size = (uint64_t)st.st_size;
	if (size < offset || size - offset < len)
		return clip_err_set(err, EIO,
				    "compressed blob: ends at %llu, index expects %llu bytes",
				    (unsigned long long)size, (unsigned long long)(offset + len));
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t base_off = offset - offset % page;
	size_t base_len = len + (size_t)(offset - base_off);
	void *p = mmap(NULL, base_len, PROT_READ, MAP_PRIVATE, l->fd, (off_t)base_off);
	if (p == MAP_FAILED)
		return clip_err_set(err, errno, "compressed blob: mapping %zu bytes at %llu: %s",
				    len, (unsigned long long)offset, strerror(errno));
	m->base = p;
	m->base_len = base_len;
	m->data = (const unsigned char *)p + (offset - base_off);
	return 0;
}

/* Where a layer's compressed bytes come from: the registry, or the local
 * blob (mapped for the checkpoint reader). */
static struct clip_blob_source layer_source(struct layer_state *l)
{
	struct clip_blob_source src = { .pread = blob_pread, .opaque = l };
	if (l->content->registry == NULL)
		src.map = blob_map;
	return src;
}

/* A sequential stream of a local blob. */
struct fd_stream {
	const struct layer_state *layer;
	uint64_t pos;
};

static ssize_t fd_stream_read(void *opaque, void *buf, size_t len, struct clip_err *err)
{
	struct fd_stream *s = opaque;
	ssize_t n = blob_pread((void *)s->layer, buf, len, s->pos, err);
	if (n > 0)
		s->pos += (uint64_t)n;
	return n;
}

int clip_content_open(const struct clip_archive *archive, const struct clip_content_options *o,
		      struct clip_content **out, struct clip_err *err)
{
	struct clip_content *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return clip_err_set(err, ENOMEM, "out of memory");
	c->archive = archive;
	c->no_checkpoints = o && o->no_checkpoints;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->ra_wake, NULL);
	atomic_init(&c->active_reads, 0);
	struct clip_archive_stats st;
	clip_archive_stats(archive, &st);
	c->nlayers = st.layers;
	c->layers = calloc(c->nlayers ? c->nlayers : 1, sizeof(*c->layers));
	if (c->layers == NULL) {
		free(c);
		return clip_err_set(err, ENOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < c->nlayers; i++) {
		struct layer_state *l = &c->layers[i];
		l->fd = -1;
		l->index = i;
		l->content = c;
		pthread_cond_init(&l->streamed, NULL);
		clip_archive_layer(archive, i, &l->info);
		const char *colon = strchr(l->info.digest, ':');
		snprintf(l->hex, sizeof(l->hex), "%s", colon ? colon + 1 : l->info.digest);
	}
	c->chunk_bytes = o && o->chunk_size ? o->chunk_size
			 : st.chunk_bytes   ? st.chunk_bytes
					    : CLIP_DEFAULT_CHUNK_BYTES;
	c->archive_hashes = st.chunk_bytes != 0 && c->chunk_bytes == st.chunk_bytes;
	int rc = open_source(c, o, err);
	if (rc < 0) {
		clip_content_close(c);
		return clip_err_prefix(err, "image source");
	}
	if (o && o->cache_dir) {
		struct clip_diskcache_options dco = { o->cache_dir, o->cache_max };
		rc = clip_diskcache_open(&dco, &c->cache, err);
		if (rc < 0) {
			clip_content_close(c);
			return clip_err_prefix(err, "disk cache");
		}
	}
	if (o && o->remote_cache) {
		rc = clip_rcache_open(o->remote_cache, o->remote_cache_options, &c->rcache, err);
		if (rc < 0) {
			clip_content_close(c);
			return clip_err_prefix(err, "remote cache");
		}
	}
	*out = c;
	return 0;
}

static int layer_prepare(struct clip_content *c, struct layer_state *l, struct clip_err *err)
{
	int rc = 0;
	pthread_mutex_lock(&c->lock);
	if (!l->ready) {
		if (c->layout) {
			rc = clip_oci_layout_open_blob(c->layout, l->info.digest, &l->fd, err);
			struct stat st;
			if (rc == 0 && fstat(l->fd, &st) == 0 &&
			    (uint64_t)st.st_size != l->info.compressed_size)
				rc = clip_err_set(err, EBADMSG,
						  "blob is %lld bytes, the archive expects %llu",
						  (long long)st.st_size,
						  (unsigned long long)l->info.compressed_size);
		}
		if (rc == 0 && l->info.compression == CLIP_COMPRESSION_GZIP && !c->no_checkpoints &&
		    l->info.ncheckpoints > 0)
			rc = clip_archive_layer_gzindex(c->archive, l->index, &l->gz, err);
		if (rc == 0) {
			l->ready = true;
		} else if (l->fd >= 0) {
			close(l->fd);
			l->fd = -1;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* Whether ranges of this layer can be produced without inflating it from
 * its start: plain tar, or gzip with checkpoints. */
static bool has_spans(const struct layer_state *l)
{
	return l->info.compression == CLIP_COMPRESSION_NONE || l->gz != NULL;
}

/* Tier 3: produce tar bytes [off, off+len) of a layer that has spans. */
static ssize_t span_read(struct clip_content *c, struct layer_state *l, void *buf, size_t len,
			 uint64_t off, struct clip_gz_read_stats *gz, struct clip_err *err)
{
	struct clip_blob_source src = layer_source(l);
	if (l->info.compression == CLIP_COMPRESSION_NONE) {
		ssize_t n = blob_pread(l, buf, len, off, err);
		if (n > 0)
			gz->compressed_bytes += (uint64_t)n;
		return n;
	}
	return clip_gz_index_read(l->gz, &src, buf, len, off, gz, err);
}

/* zstd without a disk cache: inflate from the start and discard. */
static ssize_t zstd_read_from_start(const struct clip_blob_source *src, void *buf, size_t len,
				    uint64_t offset, struct clip_gz_read_stats *stats,
				    struct clip_err *err)
{
	ZSTD_DCtx *dctx = ZSTD_createDCtx();
	unsigned char *in = malloc(1 << 18), *scratch = malloc(1 << 18);
	ssize_t result = 0;
	if (dctx == NULL || in == NULL || scratch == NULL) {
		result = clip_err_set(err, ENOMEM, "out of memory");
		goto out;
	}
	uint64_t cpos = 0, upos = 0;
	size_t copied = 0;
	size_t ret = 1;
	while (copied < len) {
		ssize_t n = src->pread(src->opaque, in, 1 << 18, cpos, err);
		if (n < 0) {
			result = n;
			goto out;
		}
		if (n == 0) {
			if (ret != 0) {
				result = clip_err_set(err, EBADMSG, "truncated zstd stream");
				goto out;
			}
			break;
		}
		cpos += (uint64_t)n;
		stats->compressed_bytes += (uint64_t)n;
		ZSTD_inBuffer zin = { in, (size_t)n, 0 };
		while ((zin.pos < zin.size || ret != 0) && copied < len) {
			ZSTD_outBuffer zout = { scratch, 1 << 18, 0 };
			ret = ZSTD_decompressStream(dctx, &zout, &zin);
			if (ZSTD_isError(ret)) {
				result = clip_err_set(err, EBADMSG, "invalid zstd data: %s",
						      ZSTD_getErrorName(ret));
				goto out;
			}
			stats->inflated_bytes += zout.pos;
			/* Copy the part of this output that falls in the range. */
			uint64_t ostart = upos, oend = upos + zout.pos;
			uint64_t want_start = offset + copied, want_end = offset + len;
			if (oend > want_start && ostart < want_end) {
				uint64_t from = want_start > ostart ? want_start : ostart;
				uint64_t to = want_end < oend ? want_end : oend;
				memcpy((unsigned char *)buf + copied, scratch + (from - ostart),
				       (size_t)(to - from));
				copied += (size_t)(to - from);
			}
			upos = oend;
			if (zout.pos == 0 && zin.pos == zin.size)
				break;
		}
	}
	result = (ssize_t)copied;
out:
	ZSTD_freeDCtx(dctx);
	free(in);
	free(scratch);
	return result;
}

/* Without a disk cache: the smallest read that answers the request. */
static ssize_t direct_read(struct clip_content *c, struct layer_state *l, void *buf, size_t len,
			   uint64_t off, struct clip_gz_read_stats *gz, struct clip_err *err)
{
	struct clip_blob_source src = layer_source(l);
	if (has_spans(l))
		return span_read(c, l, buf, len, off, gz, err);
	if (l->info.compression == CLIP_COMPRESSION_GZIP)
		return clip_gz_read_from_start(&src, buf, len, off, gz, err);
	return zstd_read_from_start(&src, buf, len, off, gz, err);
}

/* ---- chunks ------------------------------------------------------------- */

static uint64_t chunk_count(const struct clip_content *c, const struct layer_state *l)
{
	return (l->info.uncompressed_size + c->chunk_bytes - 1) / c->chunk_bytes;
}

static size_t chunk_len(const struct clip_content *c, const struct layer_state *l, uint64_t k)
{
	uint64_t start = k * c->chunk_bytes;
	uint64_t end = start + c->chunk_bytes;
	if (end > l->info.uncompressed_size)
		end = l->info.uncompressed_size;
	return (size_t)(end - start);
}

static const unsigned char *expected_hash(struct clip_content *c, const struct layer_state *l,
					  uint64_t k)
{
	return c->archive_hashes ? clip_archive_chunk_hash(c->archive, l->index, k) : NULL;
}

/* Hash chunk k's bytes into `hash`: true when they match the archive's hash
 * or it has none. */
static bool chunk_hash_check(struct clip_content *c, const struct layer_state *l, uint64_t k,
			     const void *data, size_t len, unsigned char hash[32])
{
	clip_sha256_once(data, len, hash);
	const unsigned char *want = expected_hash(c, l, k);
	return want == NULL || memcmp(want, hash, 32) == 0;
}

/* Check a produced chunk against the archive's hash (when it has one) and
 * return its SHA-256 in `hash`. */
static int chunk_verify(struct clip_content *c, const struct layer_state *l, uint64_t k,
			const void *data, size_t len, unsigned char hash[32], struct clip_err *err)
{
	if (!chunk_hash_check(c, l, k, data, len, hash)) {
		pthread_mutex_lock(&c->lock);
		c->stats.tier[CLIP_TIER_SPAN].errors++;
		pthread_mutex_unlock(&c->lock);
		return clip_err_set(err, EBADMSG,
				    "chunk %llu does not match its hash in the archive",
				    (unsigned long long)k);
	}
	return 0;
}

/* The part of one chunk a reader waits for: whoever produces that chunk
 * copies [off, off+len) of it to buf and sets done. */
struct chunk_want {
	uint64_t chunk;
	void *buf;
	size_t len, off;
	bool done;
};

static void want_fill(struct chunk_want *w, uint64_t k, const unsigned char *data)
{
	if (w && !w->done && w->chunk == k) {
		memcpy(w->buf, data + w->off, w->len);
		w->done = true;
	}
}

/* Store a verified chunk in the disk cache. A full or broken disk only costs
 * speed, so failures are counted, not returned. */
static void chunk_store(struct clip_content *c, const struct layer_state *l, uint64_t k,
			const void *data, size_t len, const unsigned char hash[32], bool to_remote)
{
	struct clip_err e = { 0 };
	if (c->cache && clip_diskcache_put(c->cache, l->hex, k, data, len, hash, &e) < 0) {
		pthread_mutex_lock(&c->lock);
		c->stats.tier[CLIP_TIER_DISK].errors++;
		pthread_mutex_unlock(&c->lock);
	}
	/* Only chunks the archive has a hash for are worth sharing: nobody
	 * could verify the others. The store is queued, never waited for. */
	char key[256];
	if (to_remote && c->rcache && c->archive_hashes &&
	    clip_rcache_key(c->rcache, l->hex, k, key, sizeof(key)) > 0)
		c->rcache->ops->put(c->rcache->self, key, data, len, &e);
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
	uint64_t t0 = now_ns();
	struct clip_err e = { 0 };
	ssize_t n = c->rcache->ops->get(c->rcache->self, key, data, len, 0, &e);
	if (n == -ENOENT || (n >= 0 && (size_t)n != len)) {
		count_tier(c, CLIP_TIER_REMOTE, 0, 0, t0);
		return 0;
	}
	if (n < 0) {
		count_tier(c, CLIP_TIER_REMOTE, -1, 0, t0);
		return 0;
	}
	/* Only chunks with a hash in the archive are read from here. */
	unsigned char hash[32];
	if (expected_hash(c, l, k) == NULL || !chunk_hash_check(c, l, k, data, len, hash)) {
		/* A poisoned or stale entry: count it and fall through. */
		pthread_mutex_lock(&c->lock);
		c->stats.remote_verify_failures++;
		pthread_mutex_unlock(&c->lock);
		count_tier(c, CLIP_TIER_REMOTE, -1, 0, t0);
		return 0;
	}
	count_tier(c, CLIP_TIER_REMOTE, 1, len, t0);
	chunk_store(c, l, k, data, len, hash, false);
	return 1;
}

/* Tier 4: stream the whole layer once, inflate it, and store every chunk in
 * the disk cache. */
static int layer_fetch(struct clip_content *c, struct layer_state *l, struct chunk_want *want,
		       struct clip_err *err)
{
	struct clip_stream stream = { 0 };
	struct fd_stream fs = { l, 0 };
	int rc;
	if (c->registry) {
		rc = clip_registry_blob_stream(c->registry, l->info.digest, l->info.compressed_size,
					       &stream, err);
		if (rc < 0)
			return rc;
	} else {
		stream = (struct clip_stream){ fd_stream_read, NULL, &fs };
	}
	const size_t in_cap = 1 << 18;
	size_t out_cap = (size_t)c->chunk_bytes;
	unsigned char *in = malloc(in_cap), *chunk = malloc(out_cap);
	struct clip_gz_scanner *gzs = NULL;
	ZSTD_DCtx *zs = NULL;
	enum clip_compression comp = l->info.compression;
	if (comp == CLIP_COMPRESSION_GZIP)
		gzs = clip_gz_scanner_new();
	else if (comp == CLIP_COMPRESSION_ZSTD)
		zs = ZSTD_createDCtx();
	struct clip_sha256 blob_sha;
	clip_sha256_init(&blob_sha);
	struct clip_gz_boundary bounds[64];
	size_t fill = 0;
	uint64_t k = 0, cbytes = 0, ubytes = 0;
	size_t zret = 1;
	if (in == NULL || chunk == NULL || (comp == CLIP_COMPRESSION_GZIP && gzs == NULL) ||
	    (comp == CLIP_COMPRESSION_ZSTD && zs == NULL)) {
		rc = clip_err_set(err, ENOMEM, "out of memory");
		goto out;
	}
	rc = 0;
	for (bool eof = false; !eof && rc == 0;) {
		ssize_t n = stream.read(stream.opaque, in, in_cap, err);
		if (n < 0) {
			rc = (int)n;
			break;
		}
		eof = n == 0;
		cbytes += (uint64_t)n;
		clip_sha256_update(&blob_sha, in, (size_t)n);
		size_t pos = 0;
		/* Decompress into the chunk buffer; each full chunk is stored. */
		while (rc == 0) {
			size_t produced = 0, used = 0, nb = 0;
			if (comp == CLIP_COMPRESSION_NONE) {
				used = (size_t)n - pos < out_cap - fill ? (size_t)n - pos
									: out_cap - fill;
				memcpy(chunk + fill, in + pos, used);
				produced = used;
			} else if (comp == CLIP_COMPRESSION_GZIP) {
				/* At the end, call once more with no input: inflate
				 * may still hold output that did not fit. */
				if (pos == (size_t)n && !eof)
					break;
				rc = clip_gz_scanner_run(gzs, in + pos, (size_t)n - pos, &used,
							 chunk + fill, out_cap - fill, &produced,
							 bounds, CLIP_ARRAY_SIZE(bounds), &nb, err);
			} else {
				ZSTD_inBuffer zin = { in, (size_t)n, pos };
				ZSTD_outBuffer zout = { chunk + fill, out_cap - fill, 0 };
				size_t r = ZSTD_decompressStream(zs, &zout, &zin);
				if (ZSTD_isError(r))
					rc = clip_err_set(err, EBADMSG, "invalid zstd data: %s",
							  ZSTD_getErrorName(r));
				used = zin.pos - pos;
				produced = zout.pos;
				/* A call that moved nothing says nothing about whether
				 * the last frame ended (after an end it asks for the
				 * next frame's header). */
				if (used || produced)
					zret = r;
			}
			if (rc < 0)
				break;
			pos += used;
			fill += produced;
			ubytes += produced;
			if (ubytes > l->info.uncompressed_size) {
				rc = clip_err_set(
					err, EBADMSG,
					"layer inflates to more than the %llu bytes indexed",
					(unsigned long long)l->info.uncompressed_size);
				break;
			}
			if (fill == out_cap || (fill && ubytes == l->info.uncompressed_size)) {
				unsigned char hash[32];
				rc = chunk_verify(c, l, k, chunk, fill, hash, err);
				if (rc < 0)
					break;
				chunk_store(c, l, k, chunk, fill, hash, true);
				want_fill(want, k, chunk);
				pthread_mutex_lock(&c->lock);
				c->stats.tier[CLIP_TIER_LAYER].bytes += fill;
				pthread_mutex_unlock(&c->lock);
				k++;
				fill = 0;
			}
			if (used == 0 && produced == 0 && nb == 0)
				break;
			if (comp == CLIP_COMPRESSION_NONE && pos == (size_t)n)
				break;
		}
	}
	if (rc == 0 && gzs)
		rc = clip_gz_scanner_finish(gzs, err);
	if (rc == 0 && zs && zret != 0)
		rc = clip_err_set(err, EBADMSG, "truncated zstd stream");
	if (rc == 0 && (ubytes != l->info.uncompressed_size || k != chunk_count(c, l)))
		rc = clip_err_set(
			err, EBADMSG, "layer inflates to %llu bytes, the archive says %llu",
			(unsigned long long)ubytes, (unsigned long long)l->info.uncompressed_size);
	if (rc == 0) {
		/* Without chunk hashes in the archive (version 1) the blob digest is
		 * what vouches for the data. */
		char digest[72] = "sha256:";
		unsigned char md[32];
		clip_sha256_final(&blob_sha, md);
		for (int i = 0; i < 32; i++)
			snprintf(digest + 7 + 2 * i, 3, "%02x", md[i]);
		if (strcmp(digest, l->info.digest) != 0)
			rc = clip_err_set(err, EBADMSG, "digest mismatch: the blob hashes to %s",
					  digest);
	}
	pthread_mutex_lock(&c->lock);
	c->stats.gz.compressed_bytes += cbytes;
	c->stats.gz.inflated_bytes += ubytes;
	pthread_mutex_unlock(&c->lock);
out:
	if (stream.close)
		stream.close(stream.opaque);
	free(in);
	free(chunk);
	clip_gz_scanner_free(gzs);
	ZSTD_freeDCtx(zs);
	return rc;
}

/* A byte range of a layer's tar: the file a read is for. */
struct extent {
	uint64_t start, end;
};

/* The chunks [*first, *last] one fetch for chunk k should produce. A gzip
 * span is inflated from its start whatever part of it is wanted, and chunks
 * are smaller than spans, so every chunk lying wholly inside the spans that
 * chunk k needs comes at no extra fetch and little extra inflate: producing
 * them now saves fetching and inflating the same span again for the next
 * chunk. Bounded so that pathological spans (hundreds of MiB in one deflate
 * block) do not become huge buffers. */
#define SPAN_BATCH_MAX (16u << 20)
static void span_batch(const struct clip_content *c, const struct layer_state *l, uint64_t k,
		       const struct extent *file, uint64_t *first, uint64_t *last)
{
	*first = *last = k;
	if (l->gz == NULL || l->gz->count == 0)
		return;
	uint64_t start = k * c->chunk_bytes;
	uint64_t end = start + chunk_len(c, l, k);
	ssize_t i = clip_gz_index_find(l->gz, start);
	ssize_t j = clip_gz_index_find(l->gz, end - 1);
	if (i < 0 || j < 0)
		return;
	uint64_t span_start = l->gz->points[i].out;
	uint64_t span_end =
		(size_t)j + 1 < l->gz->count ? l->gz->points[j + 1].out : l->info.uncompressed_size;
	uint64_t lo = (span_start + c->chunk_bytes - 1) / c->chunk_bytes;
	uint64_t hi = span_end == l->info.uncompressed_size ? chunk_count(c, l)
							    : span_end / c->chunk_bytes;
	uint64_t max_chunks = SPAN_BATCH_MAX / c->chunk_bytes;
	if (max_chunks == 0)
		max_chunks = 1;
	/* Only chunks of the file being read: the rest of a span usually
	 * holds other files that nobody may read, and inflating it for them
	 * would cost as much as the read itself (small files, scattered). */
	uint64_t file_lo = file->start / c->chunk_bytes;
	uint64_t file_hi = (file->end + c->chunk_bytes - 1) / c->chunk_bytes;
	if (lo < file_lo)
		lo = file_lo;
	if (hi > file_hi)
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

/* Make sure chunk k of layer l is in the disk cache, fetching it from the
 * fastest tier that has it. Concurrent callers for the same chunk (or, for
 * whole-layer fetches, the same layer) wait for the first. */
static int chunk_fetch(struct clip_content *c, struct layer_state *l, uint64_t k,
		       const struct extent *file, struct chunk_want *want, struct clip_err *err)
{
	pthread_mutex_lock(&c->lock);
	if (!has_spans(l)) {
		/* One whole-layer fetch at a time; the others then find their
		 * chunk in the cache. */
		if (l->streaming) {
			c->stats.coalesced++;
			while (l->streaming)
				pthread_cond_wait(&l->streamed, &c->lock);
			pthread_mutex_unlock(&c->lock);
			return 1; /* look again */
		}
		l->streaming = true;
		pthread_mutex_unlock(&c->lock);
		uint64_t t0 = now_ns();
		int rc = layer_fetch(c, l, want, err);
		count_tier(c, CLIP_TIER_LAYER, rc < 0 ? -1 : 1, 0, t0);
		pthread_mutex_lock(&c->lock);
		l->streaming = false;
		pthread_cond_broadcast(&l->streamed);
		pthread_mutex_unlock(&c->lock);
		return rc;
	}
	for (struct inflight *f = c->inflight; f; f = f->next) {
		if (f->layer == l->index && f->chunk == k) {
			c->stats.coalesced++;
			f->waiters++;
			while (!f->finished)
				pthread_cond_wait(&f->done, &c->lock);
			if (--f->waiters == 0) {
				pthread_cond_destroy(&f->done);
				free(f);
			}
			pthread_mutex_unlock(&c->lock);
			return 1; /* look again */
		}
	}
	struct inflight *f = calloc(1, sizeof(*f));
	if (f == NULL) {
		pthread_mutex_unlock(&c->lock);
		return clip_err_set(err, ENOMEM, "out of memory");
	}
	f->layer = l->index;
	f->chunk = k;
	f->waiters = 1;
	pthread_cond_init(&f->done, NULL);
	f->next = c->inflight;
	c->inflight = f;
	pthread_mutex_unlock(&c->lock);

	uint64_t first, last;
	span_batch(c, l, k, file, &first, &last);
	uint64_t start = first * c->chunk_bytes;
	size_t len = (size_t)(last * c->chunk_bytes + chunk_len(c, l, last) - start);
	unsigned char *data = malloc(len ? len : 1);
	int rc;
	if (data == NULL) {
		rc = clip_err_set(err, ENOMEM, "out of memory");
	} else {
		uint64_t t0 = now_ns();
		struct clip_gz_read_stats gz = { 0 };
		ssize_t n = span_read(c, l, data, len, start, &gz, err);
		if (n >= 0 && (size_t)n != len)
			n = clip_err_set(err, EIO, "chunk %llu ends early (%zd of %zu bytes)",
					 (unsigned long long)k, n, len);
		rc = n < 0 ? (int)n : 0;
		for (uint64_t i = first; rc == 0 && i <= last; i++) {
			unsigned char hash[32];
			const unsigned char *p = data + (i - first) * c->chunk_bytes;
			rc = chunk_verify(c, l, i, p, chunk_len(c, l, i), hash, err);
			if (rc == 0) {
				chunk_store(c, l, i, p, chunk_len(c, l, i), hash, true);
				want_fill(want, i, p);
			}
		}
		count_tier(c, CLIP_TIER_SPAN, rc < 0 ? -1 : 1, rc < 0 ? 0 : len, t0);
		pthread_mutex_lock(&c->lock);
		c->stats.gz.spans += gz.spans;
		c->stats.gz.compressed_bytes += gz.compressed_bytes;
		c->stats.gz.inflated_bytes += gz.inflated_bytes;
		pthread_mutex_unlock(&c->lock);
	}
	free(data);
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

/* Queue a read-ahead of chunk k of file `file` (with `budget` bytes more
 * after its batch), starting the workers on first use. Dropped when the
 * queue is full: read-ahead only ever saves time. Called without c->lock. */
static void readahead_push(struct clip_content *c, const struct layer_state *l, uint64_t k,
			   const struct extent *file, uint64_t budget);

static void *readahead_main(void *arg)
{
	struct clip_content *c = arg;
	pthread_mutex_lock(&c->lock);
	for (;;) {
		while (c->ra_queue == NULL && !c->ra_stop)
			pthread_cond_wait(&c->ra_wake, &c->lock);
		if (c->ra_stop)
			break;
		struct readahead *r = c->ra_queue;
		c->ra_queue = r->next;
		c->ra_queued--;
		pthread_mutex_unlock(&c->lock);
		struct layer_state *l = &c->layers[r->layer];
		const struct extent file = { r->file_start, r->file_end };
		uint64_t first, last;
		span_batch(c, l, r->chunk, &file, &first, &last);
		unsigned char probe;
		struct clip_err e = { 0 };
		bool cached =
			clip_diskcache_read(c->cache, l->hex, r->chunk, chunk_len(c, l, r->chunk),
					    expected_hash(c, l, r->chunk), &probe, 1, 0, &e) >= 0;
		int rc = cached ? 0 : chunk_fetch(c, l, r->chunk, &file, NULL, &e);
		uint64_t done = (last + 1 - r->chunk) * c->chunk_bytes;
		if (rc >= 0 && r->budget > done)
			readahead_push(c, l, last + 1, &file, r->budget - done);
		free(r);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

static void readahead_push(struct clip_content *c, const struct layer_state *l, uint64_t k,
			   const struct extent *file, uint64_t budget)
{
	if (c->cache == NULL || !has_spans(l) || k * c->chunk_bytes >= file->end ||
	    k >= chunk_count(c, l))
		return;
	struct readahead *r = malloc(sizeof(*r));
	if (r == NULL)
		return;
	*r = (struct readahead){ l->index, k, file->start, file->end, budget, NULL };
	pthread_mutex_lock(&c->lock);
	if (c->ra_stop || c->ra_queued >= READAHEAD_QUEUE) {
		pthread_mutex_unlock(&c->lock);
		free(r);
		return;
	}
	while (c->ra_nthreads < READAHEAD_THREADS &&
	       pthread_create(&c->ra_threads[c->ra_nthreads], NULL, readahead_main, c) == 0)
		c->ra_nthreads++;
	if (c->ra_nthreads == 0) {
		pthread_mutex_unlock(&c->lock);
		free(r);
		return;
	}
	struct readahead **tail = &c->ra_queue;
	while (*tail)
		tail = &(*tail)->next;
	*tail = r;
	c->ra_queued++;
	pthread_cond_signal(&c->ra_wake);
	pthread_mutex_unlock(&c->lock);
}

/* Copy [off, off+len) of chunk k (off relative to the chunk) into buf from
 * the fastest tier that has the chunk: the disk cache, the remote cache, or
 * a fetch from the source (which fills the faster tiers). */
static int chunk_read(struct clip_content *c, struct layer_state *l, uint64_t k,
		      const struct extent *file, void *buf, size_t len, size_t off,
		      struct clip_err *err)
{
	size_t clen = chunk_len(c, l, k);
	/* A fetch that another reader made for us is looked for in the disk
	 * cache; a disk that cannot keep it (full) makes us fetch it ourselves,
	 * a bounded number of times. */
	for (int attempt = 0; attempt < 4; attempt++) {
		if (c->cache) {
			uint64_t t0 = now_ns();
			ssize_t n = clip_diskcache_read(c->cache, l->hex, k, clen,
							expected_hash(c, l, k), buf, len, off, err);
			if (n >= 0) {
				count_tier(c, CLIP_TIER_DISK, 1, (uint64_t)n, t0);
				return 0;
			}
			if (n != -ENOENT) {
				count_tier(c, CLIP_TIER_DISK, -1, 0, t0);
				return (int)n;
			}
			count_tier(c, CLIP_TIER_DISK, 0, 0, t0);
		}
		if (c->rcache && c->archive_hashes) {
			unsigned char *data = malloc(clen ? clen : 1);
			if (data == NULL)
				return clip_err_set(err, ENOMEM, "out of memory");
			int hit = remote_get(c, l, k, data, clen);
			if (hit)
				memcpy(buf, data + off, len);
			free(data);
			if (hit)
				return 0;
		}
		struct chunk_want want = { k, buf, len, off, false };
		int rc = chunk_fetch(c, l, k, file, &want, err);
		if (rc < 0)
			return rc;
		if (want.done) {
			/* A reader had to wait for the source: fetch what follows
			 * in its file meanwhile, on the other cores. */
			uint64_t first, last;
			span_batch(c, l, k, file, &first, &last);
			readahead_push(c, l, last + 1, file, READAHEAD_BYTES);
			return 0;
		}
	}
	return clip_err_set(err, EIO, "chunk %llu: the disk cache does not keep it",
			    (unsigned long long)k);
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
	int rc = layer_prepare(c, l, err);
	if (rc < 0)
		return clip_err_prefix(err, "layer %s", l->info.digest);
	atomic_fetch_add(&c->active_reads, 1);
	uint64_t tar_off = inode.data_offset + offset;
	ssize_t n;
	if (c->cache == NULL && c->rcache == NULL) {
		uint64_t t0 = now_ns();
		struct clip_gz_read_stats gz = { 0 };
		n = direct_read(c, l, buf, len, tar_off, &gz, err);
		count_tier(c, has_spans(l) ? CLIP_TIER_SPAN : CLIP_TIER_LAYER, n < 0 ? -1 : 1,
			   n < 0 ? 0 : (uint64_t)n, t0);
		pthread_mutex_lock(&c->lock);
		c->stats.gz.spans += gz.spans;
		c->stats.gz.compressed_bytes += gz.compressed_bytes;
		c->stats.gz.inflated_bytes += gz.inflated_bytes;
		pthread_mutex_unlock(&c->lock);
	} else {
		size_t done = 0;
		const struct extent file = { inode.data_offset, inode.data_offset + inode.size };
		n = 0;
		while (done < len) {
			uint64_t pos = tar_off + done;
			uint64_t k = pos / c->chunk_bytes;
			size_t in_chunk = (size_t)(pos - k * c->chunk_bytes);
			size_t want = (size_t)c->chunk_bytes - in_chunk;
			if (want > len - done)
				want = len - done;
			rc = chunk_read(c, l, k, &file, (unsigned char *)buf + done, want, in_chunk,
					err);
			if (rc < 0) {
				n = rc;
				break;
			}
			done += want;
		}
		if (n == 0)
			n = (ssize_t)done;
	}
	atomic_fetch_sub(&c->active_reads, 1);
	if (n < 0)
		return clip_err_prefix(err, "layer %s", l->info.digest);
	if ((size_t)n < len)
		return clip_err_set(err, EIO, "layer %s: file data ends early (%zd of %zu bytes)",
				    l->info.digest, n, len);
	pthread_mutex_lock(&c->lock);
	c->stats.reads++;
	c->stats.read_bytes += (uint64_t)n;
	pthread_mutex_unlock(&c->lock);
	return n;
}

int clip_content_prefetch(struct clip_content *c, const volatile bool *stop, struct clip_err *err)
{
	if (c->cache == NULL)
		return clip_err_set(err, ENOTSUP, "prefetch needs a disk cache");
	unsigned char probe;
	for (uint32_t i = 0; i < c->nlayers && !*stop; i++) {
		struct layer_state *l = &c->layers[i];
		int rc = layer_prepare(c, l, err);
		if (rc < 0)
			return clip_err_prefix(err, "layer %s", l->info.digest);
		uint64_t n = chunk_count(c, l);
		const struct extent whole = { 0, l->info.uncompressed_size };
		for (uint64_t k = 0; k < n && !*stop; k++) {
			/* Programs first: wait while any read is in flight. */
			while (atomic_load(&c->active_reads) > 0 && !*stop)
				usleep(2000);
			struct clip_err e = { 0 };
			ssize_t r = clip_diskcache_read(c->cache, l->hex, k, chunk_len(c, l, k),
							expected_hash(c, l, k), &probe, 1, 0, &e);
			if (r >= 0)
				continue;
			rc = chunk_fetch(c, l, k, &whole, NULL, err);
			if (rc < 0)
				return clip_err_prefix(err, "layer %s", l->info.digest);
			if (!has_spans(l))
				break; /* the whole layer was fetched at once */
		}
	}
	return 0;
}

void clip_content_stats(const struct clip_content *c, struct clip_content_stats *out)
{
	pthread_mutex_lock((pthread_mutex_t *)&c->lock);
	*out = c->stats;
	pthread_mutex_unlock((pthread_mutex_t *)&c->lock);
	if (c->registry) {
		struct clip_registry_stats rs;
		clip_registry_stats(c->registry, &rs);
		out->source_requests = rs.requests;
		out->source_bytes = rs.bytes_received;
	} else {
		out->source_bytes = out->gz.compressed_bytes;
	}
}

const char *clip_tier_name(enum clip_tier tier)
{
	static const char *const names[] = { "disk", "remote", "span", "layer" };
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
	json_object_set_new(o, "source_requests", json_integer((json_int_t)s.source_requests));
	json_object_set_new(o, "source_bytes", json_integer((json_int_t)s.source_bytes));
	json_object_set_new(o, "remote_verify_failures",
			    json_integer((json_int_t)s.remote_verify_failures));
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
		json_object_set_new(o, "disk_cache", j);
	}
	char *text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return text;
}

void clip_content_close(struct clip_content *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->lock);
	c->ra_stop = true;
	pthread_cond_broadcast(&c->ra_wake);
	pthread_mutex_unlock(&c->lock);
	for (unsigned i = 0; i < c->ra_nthreads; i++)
		pthread_join(c->ra_threads[i], NULL);
	while (c->ra_queue) {
		struct readahead *r = c->ra_queue;
		c->ra_queue = r->next;
		free(r);
	}
	pthread_cond_destroy(&c->ra_wake);
	for (uint32_t i = 0; c->layers && i < c->nlayers; i++) {
		if (c->layers[i].fd >= 0)
			close(c->layers[i].fd);
		clip_gz_index_free(c->layers[i].gz);
		pthread_cond_destroy(&c->layers[i].streamed);
	}
	free(c->layers);
	clip_oci_layout_free(c->layout);
	clip_registry_free(c->registry);
	clip_diskcache_close(c->cache);
	clip_rcache_close(c->rcache);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

bool clip_content_remote_usable(const struct clip_content *c)
{
	return c->rcache != NULL && c->archive_hashes;
}
