/* clip: a bounded in-memory cache of uncompressed layer chunks (read tier 2,
 * between the disk cache and the remote cache).
 *
 * It holds what the disk cache could not keep: chunks whose put failed or
 * was declined, or that were put while the disk cache was full and so may be
 * evicted from it before anybody reads them (clip_diskcache_full). Without
 * it a full disk makes every read of a chunk produce that chunk again: its
 * whole gzip span inflated once per 128 KiB that FUSE asks for.
 *
 * Chunks are keyed as in the disk cache (clip/diskcache.h): the layer's hex
 * digest and the chunk's index on the caller's grid. Only chunks the caller
 * has verified go in, and nothing is checked on the way out but the chunk's
 * length: this process's memory is as trusted as the buffer the chunk was
 * verified in.
 *
 * Bound: max_bytes, counting each chunk's bytes and its bookkeeping. Putting
 * a chunk evicts the least recently used ones (a read counts as a use) until
 * the total fits; a chunk larger than the whole bound is not kept.
 *
 * Threads: any call may run concurrently with any other except close. One
 * mutex guards the table; it is held while a hit is copied out (a read's
 * worth: 128 KiB for FUSE), never while a chunk is copied in or freed.
 */
#ifndef CLIP_MEMCACHE_H
#define CLIP_MEMCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "clip/err.h"

struct clip_memcache_stats {
	uint64_t hits, misses;
	uint64_t bytes_read; /* copied out by hits */
	uint64_t stores;     /* chunks put and kept */
	uint64_t evicted;    /* chunks dropped to stay under the bound */
	uint64_t usage;	     /* bytes held now, bookkeeping included */
	uint64_t chunks;     /* chunks held now */
	uint64_t max_bytes;
};

struct clip_memcache;

/* A cache of at most `max_bytes` (> 0). *out is owned by the caller. */
int clip_memcache_open(uint64_t max_bytes, struct clip_memcache **out, struct clip_err *err);

/* Copy `len` bytes at `offset` within chunk `chunk` of `layer_hex` (64 hex
 * digits) into buf. `chunk_len` is the chunk's full length: a chunk held
 * with another length (another grid's) is dropped and reported absent.
 * Returns `len`, -ENOENT when the chunk is absent, -EINVAL for a range past
 * chunk_len or a malformed layer. */
ssize_t clip_memcache_read(struct clip_memcache *cache, const char *layer_hex, uint64_t chunk,
			   size_t chunk_len, void *buf, size_t len, size_t offset,
			   struct clip_err *err);

/* Keep a copy of chunk `chunk` of `layer_hex`: `len` bytes the caller has
 * verified. Already held: it only becomes the most recently used. 0 (also
 * when the chunk is larger than the bound and so not kept), -ENOMEM, or
 * -EINVAL for a malformed layer. */
int clip_memcache_put(struct clip_memcache *cache, const char *layer_hex, uint64_t chunk,
		      const void *data, size_t len, struct clip_err *err);

/* Whether chunk `chunk` of `layer_hex` is held with length `chunk_len`;
 * neither a use nor counted as a hit or a miss. */
bool clip_memcache_contains(struct clip_memcache *cache, const char *layer_hex, uint64_t chunk,
			    size_t chunk_len);

void clip_memcache_stats(const struct clip_memcache *cache, struct clip_memcache_stats *out);

/* Free every chunk and the cache; NULL is a no-op. */
void clip_memcache_close(struct clip_memcache *cache);

#endif
