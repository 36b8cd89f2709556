/* Indexing: layers streamed once through a reader/consumer pipeline, then
 * merged into one tree and written as an archive.
 *
 * Why three threads per layer: inflate is inherently serial and is the
 * bottleneck (zlib with Z_BLOCK, the only inflater that can stop at block
 * boundaries). Everything else runs beside it: a reader thread pulls the
 * stream (read() of a local blob, or curl receiving from a registry) into
 * buffers ahead of the inflater, and the consumer thread does the SHA-256 of
 * both streams, tar parsing, window snapshots and their compression, and the
 * piece digests, so that the inflating core never waits for either. The
 * stages exchange work through small bounded queues: the reader's are
 * megabyte buffers of the stream, the inflater's batches (a run of compressed
 * input, the uncompressed output it produced, and the block boundaries inside
 * it).
 */
#include "clip/indexer.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clip/archive.h"
#include "clip/decoder.h"
#include "clip/ocilayout.h"
#include "clip/ref.h"
#include "clip/registry.h"
#include "clip/source.h"
#include "clip/tar.h"
#include "sha256.h"
#include "util.h"

#define IN_CHUNK    (1u << 20)
#define OUT_CHUNK   (1u << 20)
#define MAX_BOUNDS  4096
#define QUEUE_DEPTH 8

/* ---- buffers ----------------------------------------------------------- */

/* Buffers go round between the two threads through a small pool: freshly
 * malloc'ed megabyte buffers are fresh mmaps, and their page faults cost the
 * inflating thread about a tenth of its time. */
#define POOL_MAX (2 * QUEUE_DEPTH + 4)

struct pool {
	pthread_mutex_t lock;
	void *in[POOL_MAX], *out[POOL_MAX];
	size_t nin, nout;
};

static void *pool_get(struct pool *p, void **list, size_t *n, size_t size)
{
	void *b = NULL;
	pthread_mutex_lock(&p->lock);
	if (*n)
		b = list[--*n];
	pthread_mutex_unlock(&p->lock);
	return b ? b : malloc(size);
}

static void pool_put(struct pool *p, void **list, size_t *n, void *b)
{
	if (b == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	if (*n < POOL_MAX) {
		list[(*n)++] = b;
		b = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	free(b);
}

static void pool_destroy(struct pool *p)
{
	for (size_t i = 0; i < p->nin; i++)
		free(p->in[i]);
	for (size_t i = 0; i < p->nout; i++)
		free(p->out[i]);
	pthread_mutex_destroy(&p->lock);
}

struct inbuf {
	atomic_int refs;
	struct pool *pool;
	size_t len;
	unsigned char data[];
};

static struct inbuf *inbuf_get(struct pool *p)
{
	struct inbuf *b = pool_get(p, p->in, &p->nin, sizeof(struct inbuf) + IN_CHUNK);
	if (b) {
		atomic_init(&b->refs, 1);
		b->pool = p;
		b->len = 0;
	}
	return b;
}

static void inbuf_unref(struct inbuf *b)
{
	if (b && atomic_fetch_sub(&b->refs, 1) == 1)
		pool_put(b->pool, b->pool->in, &b->pool->nin, b);
}

static unsigned char *outbuf_get(struct pool *p)
{
	return pool_get(p, p->out, &p->nout, OUT_CHUNK);
}

static void outbuf_put(struct pool *p, unsigned char *b)
{
	pool_put(p, p->out, &p->nout, b);
}

/* ---- batches and the queue --------------------------------------------- */

struct batch {
	struct pool *pool;
	struct inbuf *in;      /* reference held */
	size_t in_off, in_len; /* compressed bytes of this batch within in->data */
	unsigned char *out;    /* uncompressed bytes: owned, or in->data for plain tar */
	size_t out_len;
	bool out_owned;
	struct clip_gz_boundary *bounds;
	size_t nbounds;
	bool end;  /* no more batches after this one */
	int error; /* producer failed: negative errno, message in msg */
	char msg[CLIP_ERR_MSG_MAX];
};

static void batch_free(struct batch *b)
{
	if (b == NULL)
		return;
	inbuf_unref(b->in);
	if (b->out_owned)
		outbuf_put(b->pool, b->out);
	free(b->bounds);
	free(b);
}

struct queue {
	pthread_mutex_t lock;
	pthread_cond_t not_empty, not_full;
	struct batch *items[QUEUE_DEPTH];
	size_t head, count;
	bool cancelled; /* the consumer gave up: the producer stops */
};

static void queue_init(struct queue *q)
{
	memset(q, 0, sizeof(*q));
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->not_empty, NULL);
	pthread_cond_init(&q->not_full, NULL);
}

static void queue_destroy(struct queue *q)
{
	for (size_t i = 0; i < q->count; i++)
		batch_free(q->items[(q->head + i) % QUEUE_DEPTH]);
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->not_empty);
	pthread_cond_destroy(&q->not_full);
}

/* Returns false (and frees the batch) if the consumer has cancelled. */
static bool queue_push(struct queue *q, struct batch *b)
{
	pthread_mutex_lock(&q->lock);
	while (q->count == QUEUE_DEPTH && !q->cancelled)
		pthread_cond_wait(&q->not_full, &q->lock);
	bool ok = !q->cancelled;
	if (ok) {
		q->items[(q->head + q->count) % QUEUE_DEPTH] = b;
		q->count++;
		pthread_cond_signal(&q->not_empty);
	}
	pthread_mutex_unlock(&q->lock);
	if (!ok)
		batch_free(b);
	return ok;
}

static struct batch *queue_pop(struct queue *q)
{
	pthread_mutex_lock(&q->lock);
	while (q->count == 0)
		pthread_cond_wait(&q->not_empty, &q->lock);
	struct batch *b = q->items[q->head];
	q->head = (q->head + 1) % QUEUE_DEPTH;
	q->count--;
	pthread_cond_signal(&q->not_full);
	pthread_mutex_unlock(&q->lock);
	return b;
}

static void queue_cancel(struct queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->cancelled = true;
	pthread_cond_broadcast(&q->not_full);
	pthread_mutex_unlock(&q->lock);
}

/* ---- the producer: read and decompress --------------------------------- */

struct reader;

struct producer {
	struct pool *pool;
	struct clip_stream *stream;
	struct reader *reader; /* set while producing */
	enum clip_compression compression;
	struct queue *queue;
	/* Allocated before the thread starts, so that the consumer always gets
	 * its final batch, even when memory runs out. */
	struct batch *end;
};

/* Read until `len` bytes or the end of the stream. */
static ssize_t read_full(struct clip_stream *s, void *buf, size_t len, struct clip_err *err)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = s->read(s->opaque, (unsigned char *)buf + got, len - got, err);
		if (n < 0)
			return n;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* ---- the reader: the stream, ahead of the inflater ------------------------ */

/* Reading costs the inflating thread its copy out of the page cache, and for
 * a registry all of curl's receiving: 2 % and more of the one serial stage,
 * so a thread of its own does it, up to READ_AHEAD buffers ahead. */
#define READ_AHEAD 4

struct reader {
	struct pool *pool;
	struct clip_stream *stream;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t changed;
	struct inbuf *items[READ_AHEAD];
	size_t head, count;
	bool done;	/* the reader stopped: end of stream, or error */
	bool cancelled; /* the inflater stopped taking buffers */
	int error;	/* negative errno when the stream failed, message in err */
	struct clip_err err;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct clip_err err = { 0 };
	int rc = 0;
	for (;;) {
		pthread_mutex_lock(&r->lock);
		while (r->count == READ_AHEAD && !r->cancelled)
			pthread_cond_wait(&r->changed, &r->lock);
		bool stop = r->cancelled;
		pthread_mutex_unlock(&r->lock);
		if (stop)
			break;
		struct inbuf *in = inbuf_get(r->pool);
		if (in == NULL) {
			rc = clip_err_set(&err, ENOMEM, "out of memory");
			break;
		}
		ssize_t n = read_full(r->stream, in->data, IN_CHUNK, &err);
		if (n <= 0) {
			inbuf_unref(in);
			rc = (int)n;
			break;
		}
		in->len = (size_t)n;
		pthread_mutex_lock(&r->lock);
		r->items[(r->head + r->count) % READ_AHEAD] = in;
		r->count++;
		pthread_cond_broadcast(&r->changed);
		pthread_mutex_unlock(&r->lock);
	}
	pthread_mutex_lock(&r->lock);
	r->done = true;
	r->error = rc;
	if (rc < 0)
		r->err = err;
	pthread_cond_broadcast(&r->changed);
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

static int reader_start(struct reader *r, struct pool *pool, struct clip_stream *stream,
			struct clip_err *err)
{
	memset(r, 0, sizeof(*r));
	r->pool = pool;
	r->stream = stream;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->changed, NULL);
	int terr = pthread_create(&r->thread, NULL, reader_main, r);
	if (terr) {
		pthread_mutex_destroy(&r->lock);
		pthread_cond_destroy(&r->changed);
		return clip_err_errno(err, terr, "cannot start a thread");
	}
	return 0;
}

/* Stop the reader (it finishes the read it is in) and drop what it read. */
static void reader_stop(struct reader *r)
{
	pthread_mutex_lock(&r->lock);
	r->cancelled = true;
	pthread_cond_broadcast(&r->changed);
	pthread_mutex_unlock(&r->lock);
	pthread_join(r->thread, NULL);
	for (size_t i = 0; i < r->count; i++)
		inbuf_unref(r->items[(r->head + i) % READ_AHEAD]);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->changed);
}

/* The next chunk of the stream in a pool buffer: *out is set and its length
 * returned, or 0 at the end of the stream (nothing set), or a negative errno. */
static ssize_t read_chunk(struct producer *p, struct inbuf **out, struct clip_err *err)
{
	struct reader *r = p->reader;
	pthread_mutex_lock(&r->lock);
	while (r->count == 0 && !r->done)
		pthread_cond_wait(&r->changed, &r->lock);
	ssize_t n = 0;
	if (r->count > 0) {
		*out = r->items[r->head];
		r->head = (r->head + 1) % READ_AHEAD;
		r->count--;
		n = (ssize_t)(*out)->len;
		pthread_cond_broadcast(&r->changed);
	} else if (r->error < 0) {
		n = clip_err_set(err, r->error, "%s", r->err.msg);
	}
	pthread_mutex_unlock(&r->lock);
	return n;
}

static struct batch *batch_new(struct pool *pool)
{
	struct batch *b = calloc(1, sizeof(struct batch));
	if (b)
		b->pool = pool;
	return b;
}

/* A batch owning an output buffer from the pool (batch_free returns it), or
 * NULL when out of memory. */
static struct batch *batch_with_output(struct pool *pool)
{
	struct batch *b = batch_new(pool);
	if (b == NULL)
		return NULL;
	b->out = outbuf_get(pool);
	if (b->out == NULL) {
		free(b);
		return NULL;
	}
	b->out_owned = true;
	return b;
}

/* Push the final batch carrying the outcome (0 or an error). */
static void push_end(struct producer *p, int rc, const struct clip_err *err)
{
	struct batch *b = clip_steal(p->end);
	b->end = true;
	b->error = rc;
	if (rc < 0)
		snprintf(b->msg, sizeof(b->msg), "%s", err->msg);
	queue_push(p->queue, b);
}

/* gzip and zstd: each block of the stream through the decoder, as batches
 * of output (with the gzip block boundaries inside them). */
static int produce_decoded(struct producer *p, struct clip_err *err)
{
	struct clip_decoder *d = NULL;
	int rc = clip_decoder_new(p->compression, &d, err);
	if (rc < 0)
		return rc;
	struct clip_gz_boundary *bounds = malloc(MAX_BOUNDS * sizeof(*bounds));
	if (bounds == NULL) {
		clip_decoder_free(d);
		return clip_err_nomem(err);
	}
	for (;;) {
		struct inbuf *in = NULL;
		ssize_t n = read_chunk(p, &in, err);
		if (n <= 0) {
			rc = n < 0 ? (int)n : clip_decoder_finish(d, err);
			break;
		}
		/* Go on while input is left, or while the decoder still holds
		 * output for what it consumed. */
		size_t pos = 0, out_len = 1;
		while (rc == 0 && (pos < in->len || out_len > 0)) {
			struct batch *b = batch_with_output(p->pool);
			if (b == NULL) {
				rc = clip_err_nomem(err);
				break;
			}
			size_t used = 0, nb = 0;
			rc = clip_decoder_run(d, in->data + pos, in->len - pos, &used, b->out,
					      OUT_CHUNK, &out_len, bounds, MAX_BOUNDS, &nb, err);
			if (rc == 0 && nb) {
				b->bounds = malloc(nb * sizeof(*bounds));
				if (b->bounds == NULL)
					rc = clip_err_nomem(err);
				else
					memcpy(b->bounds, bounds, nb * sizeof(*bounds));
			}
			if (rc < 0 || (used == 0 && out_len == 0 && nb == 0)) {
				batch_free(b);
				break;
			}
			atomic_fetch_add(&in->refs, 1);
			b->in = in;
			b->in_off = pos;
			b->in_len = used;
			b->out_len = out_len;
			b->nbounds = nb;
			pos += used;
			if (!queue_push(p->queue, b))
				rc = -ECANCELED;
		}
		inbuf_unref(in);
		if (rc < 0)
			break;
	}
	clip_decoder_free(d);
	free(bounds);
	return rc;
}

static int produce_plain(struct producer *p, struct clip_err *err)
{
	for (;;) {
		struct inbuf *in = NULL;
		ssize_t n = read_chunk(p, &in, err);
		if (n <= 0)
			return (int)n;
		struct batch *b = batch_new(p->pool);
		if (b == NULL) {
			inbuf_unref(in);
			return clip_err_nomem(err);
		}
		b->in = in;
		b->in_len = in->len;
		b->out = in->data;
		b->out_len = in->len;
		if (!queue_push(p->queue, b))
			return -ECANCELED;
	}
}

static void *producer_main(void *arg)
{
	struct producer *p = arg;
	struct clip_err err = { 0 };
	struct reader reader;
	int rc = reader_start(&reader, p->pool, p->stream, &err);
	if (rc == 0) {
		p->reader = &reader;
		rc = p->compression == CLIP_COMPRESSION_NONE ? produce_plain(p, &err)
							     : produce_decoded(p, &err);
		reader_stop(&reader);
		p->reader = NULL;
	}
	if (rc != -ECANCELED)
		push_end(p, rc, &err);
	return NULL;
}

/* ---- the consumer: hash, parse, checkpoint ----------------------------- */

struct consumer {
	struct clip_sha256 blob_sha;
	struct clip_sha256 tar_sha;
	struct clip_tar_parser *tar;
	struct clip_gz_builder *gz; /* NULL unless gzip with checkpoints */
	struct clip_tree_layer *entries;
	uint64_t cpos, upos; /* compressed and uncompressed bytes consumed */
	/* Chunk hashes: chunk_sha covers the chunk_fill bytes of the current one. */
	struct clip_sha256 chunk_sha;
	uint64_t chunk_bytes, chunk_fill;
	unsigned char (*chunks)[32];
	size_t nchunks, chunks_cap;
};

/* Close the current chunk's hash into c->chunks. */
static int chunk_finish(struct consumer *c, struct clip_err *err)
{
	if (c->nchunks == c->chunks_cap) {
		size_t cap = c->chunks_cap ? 2 * c->chunks_cap : 64;
		void *p = realloc(c->chunks, cap * sizeof(*c->chunks));
		if (p == NULL)
			return clip_err_nomem(err);
		c->chunks = p;
		c->chunks_cap = cap;
	}
	clip_sha256_final(&c->chunk_sha, c->chunks[c->nchunks]);
	clip_sha256_init(&c->chunk_sha);
	c->nchunks++;
	c->chunk_fill = 0;
	return 0;
}

static int chunk_hash(struct consumer *c, const unsigned char *p, size_t len, struct clip_err *err)
{
	while (len) {
		size_t n =
			c->chunk_bytes - c->chunk_fill < len ? c->chunk_bytes - c->chunk_fill : len;
		clip_sha256_update(&c->chunk_sha, p, n);
		c->chunk_fill += n;
		p += n;
		len -= n;
		if (c->chunk_fill == c->chunk_bytes) {
			int rc = chunk_finish(c, err);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

static int on_tar_entry(void *opaque, const struct clip_tar_entry *entry, struct clip_err *err)
{
	struct consumer *c = opaque;
	int rc = clip_tree_layer_add(c->entries, entry, err);
	if (rc < 0)
		return rc;
	if (c->gz && entry->type == CLIP_TAR_REG)
		return clip_gz_builder_file(c->gz, entry->data_offset, entry->size, err);
	return 0;
}

static int consume_uncompressed(struct consumer *c, const unsigned char *p, size_t len,
				struct clip_err *err)
{
	if (len == 0)
		return 0;
	if (c->gz) {
		int rc = clip_gz_builder_uncompressed(c->gz, p, len, err);
		if (rc < 0)
			return rc;
	}
	clip_sha256_update(&c->tar_sha, p, len);
	c->upos += len;
	int rc = chunk_hash(c, p, len, err);
	if (rc < 0)
		return rc;
	return clip_tar_parser_feed(c->tar, p, len, err);
}

static int consume_batch(struct consumer *c, const struct batch *b, bool plain,
			 struct clip_err *err)
{
	const unsigned char *in = b->in ? b->in->data + b->in_off : NULL;
	if (!plain && b->in_len)
		clip_sha256_update(&c->blob_sha, in, b->in_len);
	if (c->gz == NULL) {
		c->cpos += b->in_len;
		return consume_uncompressed(c, b->out, b->out_len, err);
	}
	/* Replay the stream in order: at each boundary exactly b->in compressed
	 * and b->out uncompressed bytes must have reached the builder. */
	uint64_t c0 = c->cpos, u0 = c->upos;
	for (size_t i = 0; i < b->nbounds; i++) {
		const struct clip_gz_boundary *bd = &b->bounds[i];
		if (bd->in < c->cpos || bd->in > c0 + b->in_len || bd->out < c->upos ||
		    bd->out > u0 + b->out_len)
			return clip_err_set(err, EIO, "gzip boundary out of order");
		int rc = clip_gz_builder_compressed(c->gz, in + (c->cpos - c0), bd->in - c->cpos,
						    err);
		if (rc < 0)
			return rc;
		c->cpos = bd->in;
		rc = consume_uncompressed(c, b->out + (c->upos - u0), bd->out - c->upos, err);
		if (rc < 0)
			return rc;
		rc = clip_gz_builder_boundary(c->gz, bd, err);
		if (rc < 0)
			return rc;
	}
	int rc = clip_gz_builder_compressed(c->gz, in + (c->cpos - c0), c0 + b->in_len - c->cpos,
					    err);
	if (rc < 0)
		return rc;
	c->cpos = c0 + b->in_len;
	return consume_uncompressed(c, b->out + (c->upos - u0), u0 + b->out_len - c->upos, err);
}

static void digest_hex(struct clip_sha256 *ctx, char out[72])
{
	unsigned char md[32];
	clip_sha256_final(ctx, md);
	strcpy(out, "sha256:");
	for (int i = 0; i < 32; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
}

void clip_layer_result_clear(struct clip_layer_result *r)
{
	clip_tree_layer_free(r->entries);
	clip_gz_index_free(r->gz);
	free(r->chunk_hashes);
	memset(r, 0, sizeof(*r));
}

int clip_index_layer(struct clip_stream *stream, const struct clip_layer_options *o,
		     struct clip_layer_result *result, struct clip_err *err)
{
	memset(result, 0, sizeof(*result));
	struct queue q;
	queue_init(&q);
	struct pool pool = { .nin = 0 };
	pthread_mutex_init(&pool.lock, NULL);
	struct consumer c = { 0 };
	clip_sha256_init(&c.blob_sha);
	clip_sha256_init(&c.tar_sha);
	clip_sha256_init(&c.chunk_sha);
	c.chunk_bytes = o->chunk_bytes ? o->chunk_bytes : CLIP_DEFAULT_CHUNK_BYTES;
	c.entries = clip_tree_layer_new();
	c.tar = clip_tar_parser_new(on_tar_entry, &c);
	bool gzip = o->compression == CLIP_COMPRESSION_GZIP;
	if (gzip && !o->no_checkpoints) {
		struct clip_gz_builder_options go = {
			.span_bytes = o->span_bytes ? o->span_bytes : CLIP_DEFAULT_SPAN_BYTES,
			.large_file_threshold = o->large_file_threshold ? o->large_file_threshold
									: CLIP_DEFAULT_LARGE_FILE,
		};
		c.gz = clip_gz_builder_new(&go);
	}
	int rc = 0;
	if (c.entries == NULL || c.tar == NULL || (gzip && !o->no_checkpoints && c.gz == NULL)) {
		rc = clip_err_nomem(err);
		goto out;
	}

	struct producer p = { .pool = &pool,
			      .stream = stream,
			      .compression = o->compression,
			      .queue = &q,
			      .end = batch_new(&pool) };
	if (p.end == NULL) {
		rc = clip_err_nomem(err);
		goto out;
	}
	pthread_t thread;
	int terr = pthread_create(&thread, NULL, producer_main, &p);
	if (terr) {
		batch_free(p.end);
		rc = clip_err_errno(err, terr, "cannot start a thread");
		goto out;
	}
	bool plain = o->compression == CLIP_COMPRESSION_NONE;
	for (;;) {
		struct batch *b = queue_pop(&q);
		if (b->end) {
			if (b->error < 0)
				rc = clip_err_set(err, b->error, "%s", b->msg);
			batch_free(b);
			break;
		}
		rc = consume_batch(&c, b, plain, err);
		batch_free(b);
		if (rc < 0) {
			queue_cancel(&q);
			break;
		}
	}
	pthread_join(thread, NULL);
	batch_free(p.end); /* still ours if the producer was cancelled */
	if (rc < 0)
		goto out;
	rc = clip_tar_parser_finish(c.tar, err);
	if (rc < 0)
		goto out;
	if (c.gz) {
		rc = clip_gz_builder_finish(c.gz, &result->gz, err);
		if (rc < 0)
			goto out;
	}
	if (c.chunk_fill) {
		rc = chunk_finish(&c, err);
		if (rc < 0)
			goto out;
	}
	digest_hex(&c.tar_sha, result->diff_id);
	result->chunk_hashes = clip_steal(c.chunks);
	result->nchunks = c.nchunks;
	if (plain)
		memcpy(result->digest, result->diff_id, sizeof(result->digest));
	else
		digest_hex(&c.blob_sha, result->digest);
	result->compressed_size = plain ? c.upos : c.cpos;
	result->uncompressed_size = c.upos;
	result->entries = clip_steal(c.entries);
out:
	queue_destroy(&q);
	pool_destroy(&pool);
	if (stream->close)
		stream->close(stream->opaque);
	free(c.chunks);
	clip_tar_parser_free(c.tar);
	clip_gz_builder_free(c.gz);
	clip_tree_layer_free(c.entries);
	if (rc < 0) {
		clip_gz_index_free(result->gz);
		result->gz = NULL;
	}
	return rc;
}

/* ---- the image ---------------------------------------------------------- */

struct layer_job {
	const struct clip_image_layer *layer;
	size_t index;
	struct clip_layer_result result;
	struct clip_err err;
	int rc;
};

struct image_jobs {
	struct clip_source *source;
	struct layer_job *jobs;
	size_t njobs;
	atomic_size_t next;
	atomic_bool failed;
	struct clip_layer_options options;
	const struct clip_index_options *index_options;
};

/* A stream that reports progress as it is read. */
struct counting_stream {
	struct clip_stream inner;
	const struct clip_index_options *o;
	size_t layer, nlayers;
	uint64_t bytes, total;
};

static ssize_t counting_read(void *opaque, void *buf, size_t len, struct clip_err *err)
{
	struct counting_stream *cs = opaque;
	ssize_t n = cs->inner.read(cs->inner.opaque, buf, len, err);
	if (n > 0) {
		cs->bytes += (uint64_t)n;
		cs->o->progress(cs->o->progress_opaque, cs->layer, cs->nlayers, cs->bytes,
				cs->total);
	}
	return n;
}

static void counting_close(void *opaque)
{
	struct counting_stream *cs = opaque;
	if (cs->inner.close)
		cs->inner.close(cs->inner.opaque);
}

static int index_one(struct image_jobs *ij, struct layer_job *job)
{
	const struct clip_image_layer *l = job->layer;
	struct clip_err *err = &job->err;
	struct clip_source_blob blob;
	struct clip_stream stream;
	int rc = clip_source_blob_open(ij->source, l->digest, l->size, &blob, err);
	if (rc == 0) {
		rc = clip_source_blob_stream(&blob, &stream, err);
		if (rc < 0)
			clip_source_blob_close(&blob);
	}
	if (rc < 0)
		return clip_err_prefix(err, "layer %s", l->digest);
	struct counting_stream cs;
	if (ij->index_options->progress) {
		cs = (struct counting_stream){ stream, ij->index_options, job->index, ij->njobs, 0,
					       l->size };
		stream = (struct clip_stream){ counting_read, counting_close, &cs };
	}
	struct clip_layer_options o = ij->options;
	o.compression = l->compression;
	rc = clip_index_layer(&stream, &o, &job->result, err);
	clip_source_blob_close(&blob);
	if (rc < 0)
		return clip_err_prefix(err, "layer %s", l->digest);
	if (strcmp(job->result.digest, l->digest) != 0)
		return clip_err_set(err, EBADMSG,
				    "layer %s: digest mismatch: the blob hashes to %s", l->digest,
				    job->result.digest);
	if (l->size && job->result.compressed_size != l->size)
		return clip_err_set(
			err, EBADMSG,
			"layer %s: size mismatch: manifest says %llu bytes, blob has %llu",
			l->digest, (unsigned long long)l->size,
			(unsigned long long)job->result.compressed_size);
	if (l->diff_id && strcmp(job->result.diff_id, l->diff_id) != 0)
		return clip_err_set(
			err, EBADMSG,
			"layer %s: diff_id mismatch: config says %s, the tar hashes to %s",
			l->digest, l->diff_id, job->result.diff_id);
	return 0;
}

static void *layer_worker(void *arg)
{
	struct image_jobs *ij = arg;
	for (;;) {
		size_t i = atomic_fetch_add(&ij->next, 1);
		if (i >= ij->njobs || atomic_load(&ij->failed))
			return NULL;
		struct layer_job *job = &ij->jobs[i];
		job->rc = index_one(ij, job);
		if (job->rc < 0)
			atomic_store(&ij->failed, true);
	}
}

static json_t *json_strv(char **v)
{
	if (v == NULL)
		return json_null();
	json_t *a = json_array();
	for (size_t i = 0; v[i]; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static char *config_json(const struct clip_image *img)
{
	const struct clip_image_config *c = &img->config;
	json_t *o = json_object();
	json_object_set_new(o, "Entrypoint", json_strv(c->entrypoint));
	json_object_set_new(o, "Cmd", json_strv(c->cmd));
	json_object_set_new(o, "Env", json_strv(c->env));
	json_object_set_new(o, "WorkingDir",
			    c->working_dir ? json_string(c->working_dir) : json_null());
	json_object_set_new(o, "User", c->user ? json_string(c->user) : json_null());
	json_object_set_new(o, "os", c->os ? json_string(c->os) : json_null());
	json_object_set_new(o, "architecture",
			    c->architecture ? json_string(c->architecture) : json_null());
	if (c->variant)
		json_object_set_new(o, "variant", json_string(c->variant));
	if (c->runtime_json) {
		json_t *extra = json_loads(c->runtime_json, 0, NULL);
		if (extra)
			json_object_update(o, extra);
		json_decref(extra);
	}
	char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	return s;
}

static char *source_json(const char *dir, const char *tag, const struct clip_ref *ref,
			 const struct clip_image *img, const struct clip_platform *platform)
{
	char plat[100];
	snprintf(plat, sizeof(plat), "%s/%s%s%s", platform->os, platform->architecture,
		 platform->variant[0] ? "/" : "", platform->variant);
	json_t *o = json_object();
	if (ref) {
		json_object_set_new(o, "type", json_string("registry"));
		json_object_set_new(o, "registry", json_string(ref->domain));
		json_object_set_new(o, "repository", json_string(ref->repository));
		json_object_set_new(o, "tag", ref->tag ? json_string(ref->tag) : json_null());
	} else {
		char abs[PATH_MAX];
		if (realpath(dir, abs) == NULL)
			snprintf(abs, sizeof(abs), "%s", dir);
		json_object_set_new(o, "type", json_string("oci-layout"));
		json_object_set_new(o, "path", json_string(abs));
		json_object_set_new(o, "tag", tag ? json_string(tag) : json_null());
	}
	json_object_set_new(o, "manifest", json_string(img->manifest_digest));
	json_object_set_new(o, "config", json_string(img->config_digest));
	json_object_set_new(o, "platform", json_string(plat));
	char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	return s;
}

static unsigned default_jobs(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

/* Index every layer of `img` on up to o->jobs threads; the first failing
 * layer in image order is the error. */
static int index_layers(struct image_jobs *ij, struct clip_err *err)
{
	unsigned nthreads = ij->index_options->jobs ? ij->index_options->jobs : default_jobs();
	if (nthreads > ij->njobs)
		nthreads = (unsigned)ij->njobs;
	pthread_t threads[64];
	if (nthreads > CLIP_ARRAY_SIZE(threads))
		nthreads = CLIP_ARRAY_SIZE(threads);
	unsigned started = 0;
	for (; started < nthreads; started++)
		if (pthread_create(&threads[started], NULL, layer_worker, ij) != 0)
			break;
	if (started == 0 && ij->njobs)
		layer_worker(ij);
	for (unsigned t = 0; t < started; t++)
		pthread_join(threads[t], NULL);
	for (size_t i = 0; i < ij->njobs; i++) {
		if (ij->jobs[i].rc < 0) {
			*err = ij->jobs[i].err;
			return ij->jobs[i].rc;
		}
	}
	return 0;
}

/* Merge the indexed layers into `tree` and describe them in `infos` for
 * the archive; the totals go to `summary`. */
static int merge_layers(const struct clip_image *img, struct layer_job *jobs,
			struct clip_tree *tree, struct clip_archive_layer_info *infos,
			struct clip_index_summary *summary, struct clip_err *err)
{
	*summary = (struct clip_index_summary){ .layers = img->nlayers };
	for (size_t i = 0; i < img->nlayers; i++) {
		const struct clip_layer_result *r = &jobs[i].result;
		int rc = clip_tree_apply(tree, (uint32_t)i, r->entries, err);
		if (rc < 0)
			return clip_err_prefix(err, "layer %s", img->layers[i].digest);
		infos[i] = (struct clip_archive_layer_info){
			.digest = img->layers[i].digest,
			.diff_id = r->diff_id,
			.media_type = img->layers[i].media_type,
			.compression = img->layers[i].compression,
			.compressed_size = r->compressed_size,
			.uncompressed_size = r->uncompressed_size,
			.gz = r->gz,
			.chunk_hashes = (const unsigned char(*)[32])r->chunk_hashes,
			.nchunks = r->nchunks,
		};
		summary->checkpoints += r->gz ? r->gz->count : 0;
		summary->compressed_bytes += r->compressed_size;
		summary->uncompressed_bytes += r->uncompressed_size;
	}
	int rc = clip_tree_finish(tree, err);
	summary->entries = clip_tree_entry_count(tree);
	summary->inodes = clip_tree_inode_count(tree);
	return rc;
}

int clip_index_image(const struct clip_index_options *o, struct clip_index_summary *summary,
		     struct clip_err *err)
{
	cleanup_free char *tag = NULL;
	struct clip_ref ref = { 0 };
	struct clip_source source;
	int rc = clip_source_open_image(o->image_ref, o->registry, &source, &ref, &tag, err);
	if (rc < 0)
		return rc;
	struct clip_platform platform;
	if (o->platform)
		platform = *o->platform;
	else
		clip_platform_host(&platform);
	struct clip_image img = { 0 };
	struct clip_tree *tree = NULL;
	struct layer_job *jobs = NULL;
	struct clip_archive_layer_info *infos = NULL;
	char *config = NULL, *source_text = NULL;
	rc = clip_source_resolve(&source, &ref, tag, &platform, &img, err);
	if (rc < 0)
		goto out;

	jobs = calloc(img.nlayers ? img.nlayers : 1, sizeof(*jobs));
	infos = calloc(img.nlayers ? img.nlayers : 1, sizeof(*infos));
	tree = clip_tree_new();
	if (jobs == NULL || infos == NULL || tree == NULL) {
		rc = clip_err_nomem(err);
		goto out;
	}
	struct image_jobs ij = {
		.source = &source,
		.index_options = o,
		.jobs = jobs,
		.njobs = img.nlayers,
		.options = {
			.span_bytes = o->span_bytes ? o->span_bytes : CLIP_DEFAULT_SPAN_BYTES,
			.large_file_threshold = o->large_file_threshold
							? o->large_file_threshold
							: CLIP_DEFAULT_LARGE_FILE,
			.chunk_bytes = o->chunk_bytes ? o->chunk_bytes : CLIP_DEFAULT_CHUNK_BYTES,
		},
	};
	atomic_init(&ij.next, 0);
	atomic_init(&ij.failed, false);
	for (size_t i = 0; i < img.nlayers; i++) {
		jobs[i].layer = &img.layers[i];
		jobs[i].index = i;
	}
	struct clip_index_summary sum;
	rc = index_layers(&ij, err);
	if (rc == 0)
		rc = merge_layers(&img, jobs, tree, infos, &sum, err);
	if (rc < 0)
		goto out;
	config = config_json(&img);
	source_text = source_json(source.layout ? clip_oci_layout_dir(source.layout) : NULL, tag,
				  source.registry ? &ref : NULL, &img, &platform);
	if (config == NULL || source_text == NULL) {
		rc = clip_err_nomem(err);
		goto out;
	}
	struct clip_archive_write_options wo = {
		.tree = tree,
		.layers = infos,
		.nlayers = img.nlayers,
		.config_json = config,
		.source_json = source_text,
		.span_bytes = ij.options.span_bytes,
		.large_file_threshold = ij.options.large_file_threshold,
		.chunk_bytes = ij.options.chunk_bytes,
	};
	rc = clip_archive_write(o->output, &wo, err);
	if (rc == 0 && summary)
		*summary = sum;
out:
	if (jobs)
		for (size_t i = 0; i < img.nlayers; i++)
			clip_layer_result_clear(&jobs[i].result);
	free(jobs);
	free(infos);
	free(config);
	free(source_text);
	clip_tree_free(tree);
	clip_image_clear(&img);
	clip_source_clear(&source);
	clip_ref_clear(&ref);
	return rc;
}
