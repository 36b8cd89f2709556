/* A small memory cache of compressed pieces of remote gzip blobs.
 *
 * A read fetches the compressed bytes of whole spans, widened to whole
 * pieces, and keeps the cache chunks that lie wholly inside them. A chunk
 * that straddles the end of the last span needs the next span too, so the
 * read of the next chunk fetches that span again, and with 1 MiB chunks and
 * 1.5 MiB spans most chunks straddle: a cold start fetched most spans twice.
 * Keeping the last pieces fetched lets the next read take them from memory.
 *
 * The pieces kept are the source's bytes, not yet checked: the reader checks
 * every piece against its digest as it hands it to the inflater
 * (gzindex_read.c), whether it came from here or from the source, so a piece
 * from here is trusted exactly as far as one fetched again would be.
 *
 * An LRU bounded in bytes, under its own lock, keyed by (layer, piece).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "content_internal.h"

struct piece {
	uint32_t layer;
	uint64_t index;
	size_t len;
	struct piece *prev, *next; /* LRU, most recent first */
	struct piece *chain;	   /* hash bucket */
	unsigned char data[];
};

struct content_pieces {
	pthread_mutex_t lock;
	size_t piece_bytes;
	size_t max, used;
	struct piece *head, *tail;
	struct piece **buckets;
	size_t nbuckets;
};

static size_t bucket_of(const struct content_pieces *p, uint32_t layer, uint64_t index)
{
	uint64_t h = (index * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)layer * 0xc2b2ae3d27d4eb4full);
	return (size_t)(h >> 17) % p->nbuckets;
}

struct content_pieces *content_pieces_new(size_t piece_bytes, size_t max)
{
	if (piece_bytes == 0 || max < piece_bytes)
		return NULL;
	struct content_pieces *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	p->piece_bytes = piece_bytes;
	p->max = max;
	p->nbuckets = 2 * (max / piece_bytes) + 1;
	p->buckets = calloc(p->nbuckets, sizeof(*p->buckets));
	if (p->buckets == NULL) {
		free(p);
		return NULL;
	}
	pthread_mutex_init(&p->lock, NULL);
	return p;
}

void content_pieces_free(struct content_pieces *p)
{
	if (p == NULL)
		return;
	for (struct piece *e = p->head, *next; e; e = next) {
		next = e->next;
		free(e);
	}
	free(p->buckets);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

static struct piece *find(struct content_pieces *p, uint32_t layer, uint64_t index)
{
	for (struct piece *e = p->buckets[bucket_of(p, layer, index)]; e; e = e->chain)
		if (e->layer == layer && e->index == index)
			return e;
	return NULL;
}

static void lru_unlink(struct content_pieces *p, struct piece *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		p->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		p->tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_front(struct content_pieces *p, struct piece *e)
{
	e->next = p->head;
	e->prev = NULL;
	if (p->head)
		p->head->prev = e;
	p->head = e;
	if (p->tail == NULL)
		p->tail = e;
}

static void drop(struct content_pieces *p, struct piece *e)
{
	struct piece **link = &p->buckets[bucket_of(p, e->layer, e->index)];
	while (*link != e)
		link = &(*link)->chain;
	*link = e->chain;
	lru_unlink(p, e);
	p->used -= e->len;
	free(e);
}

size_t content_pieces_get(struct content_pieces *p, uint32_t layer, uint64_t index, void *buf,
			  size_t len)
{
	pthread_mutex_lock(&p->lock);
	struct piece *e = find(p, layer, index);
	size_t got = 0;
	if (e && e->len == len) {
		memcpy(buf, e->data, len);
		lru_unlink(p, e);
		lru_front(p, e);
		got = len;
	}
	pthread_mutex_unlock(&p->lock);
	return got;
}

void content_pieces_put(struct content_pieces *p, uint32_t layer, uint64_t index, const void *data,
			size_t len)
{
	if (len == 0 || len > p->piece_bytes)
		return;
	pthread_mutex_lock(&p->lock);
	struct piece *e = find(p, layer, index);
	if (e == NULL && (e = malloc(sizeof(*e) + len)) != NULL) {
		*e = (struct piece){ .layer = layer, .index = index, .len = len };
		memcpy(e->data, data, len);
		size_t b = bucket_of(p, layer, index);
		e->chain = p->buckets[b];
		p->buckets[b] = e;
		lru_front(p, e);
		p->used += len;
		while (p->used > p->max && p->tail && p->tail != e)
			drop(p, p->tail);
	}
	pthread_mutex_unlock(&p->lock);
}
