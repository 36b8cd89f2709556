/* clip: the local disk cache of uncompressed layer data (read tier 1).
 *
 * Layer data is cached in fixed-size chunks: chunk i of a layer holds bytes
 * [i*chunk_size, (i+1)*chunk_size) of its uncompressed tar (the last chunk is
 * shorter). Chunks are keyed by the layer's hex digest (the blob's sha256,
 * no "sha256:" prefix) and the chunk index, so any archive of any image that
 * shares a layer shares its chunks.
 *
 * Protocol:
 *  - clip_diskcache_read() serves a chunk only when it is whole and its
 *    bytes hash to the SHA-256 recorded with it (and, when the caller knows
 *    the chunk's hash from the archive, to that too). A torn, truncated or
 *    corrupted chunk (a kill -9 mid-write, a flipped byte) is removed,
 *    counted, and reported as absent (-ENOENT), so the caller refetches it.
 *    Each chunk is verified in full on its first read by this process; later
 *    reads of it read just the bytes asked for.
 *  - clip_diskcache_put() writes a temporary file and renames it into place,
 *    so a chunk appears whole or not at all, even with several processes
 *    sharing the directory.
 *  - Size is bounded by max_bytes: least-recently-used chunks are evicted
 *    (use time kept in the file's mtime, so it is shared by processes) under
 *    an flock on the cache directory, down to 90% of the bound.
 *  - Size is bounded by the filesystem too, whatever max_bytes says: a put
 *    leaves 1% of the filesystem (at most 64 MiB) free for its other users.
 *    When statvfs shows less free than the chunk and that reserve, or a
 *    write fails with ENOSPC or EDQUOT (a quota statvfs does not show), the
 *    least-recently-used chunks are evicted the same way, down to what frees
 *    the shortfall and 10% of the cache besides, and the put is tried once
 *    more. A chunk that still does not fit is not kept (counted as
 *    declined): a cache gives way to the files it shares a disk with.
 *  - A full cache, one that recently had to evict or could not keep a chunk,
 *    may evict a chunk soon after it was put, before anybody read it; callers
 *    that will want the chunk again keep it elsewhere meanwhile
 *    (clip_diskcache_full, and clip/memcache.h).
 * Layout and chunk file format: docs/FORMAT.md, "Disk cache".
 */
#ifndef CLIP_DISKCACHE_H
#define CLIP_DISKCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "clip/err.h"

#define CLIP_DISKCACHE_DEFAULT_CHUNK (1u << 20)

struct clip_diskcache_options {
	const char *dir;    /* created if missing (and its parents) */
	uint64_t max_bytes; /* 0: unbounded */
};

struct clip_diskcache_stats {
	uint64_t hits, misses;
	uint64_t bytes_read, bytes_written;
	uint64_t corrupt; /* chunks found torn or corrupted and removed */
	uint64_t evicted; /* chunks removed to stay under max_bytes or to free space */
	uint64_t
		declined; /* puts not kept: over 90% of max_bytes, or no room even after evicting */
	uint64_t usage;	  /* bytes in the cache at the last scan or put */
};

struct clip_diskcache;

int clip_diskcache_open(const struct clip_diskcache_options *options, struct clip_diskcache **out,
			struct clip_err *err);

/* Read `len` bytes at `offset` within chunk `chunk` of layer `layer_hex` (64
 * lowercase hex) into buf. `chunk_len` is the chunk's full length and
 * `expected` its SHA-256 when known (NULL otherwise). Returns `len` (the
 * caller never asks past chunk_len), -ENOENT when the chunk is absent or was
 * found bad, another negative errno for an I/O error. */
ssize_t clip_diskcache_read(struct clip_diskcache *cache, const char *layer_hex, uint64_t chunk,
			    size_t chunk_len, const unsigned char expected[32], void *buf,
			    size_t len, size_t offset, struct clip_err *err);

/* Store chunk `chunk` of `layer_hex`: `len` bytes whose SHA-256 is `hash`.
 * Already present: nothing to do, 0. May evict, for the bound or for free
 * space. 0 too when the chunk is declined (see above); a negative errno when
 * it could not be written, even after making room. */
int clip_diskcache_put(struct clip_diskcache *cache, const char *layer_hex, uint64_t chunk,
		       const void *data, size_t len, const unsigned char hash[32],
		       struct clip_err *err);

/* Whether the cache is full: in the last 30 seconds this handle evicted
 * chunks (for max_bytes or for free space), declined a chunk, or failed to
 * write one. A chunk put now may then be evicted before it is read. */
bool clip_diskcache_full(const struct clip_diskcache *cache);

/* Staging: chunks that only a later check can vouch for, such as the chunks
 * of a whole layer whose blob digest is known only at its end. A staged
 * chunk is written like a put but kept out of sight (never served, evicted
 * or counted in usage) until clip_diskcache_stage_publish() moves every
 * chunk staged so far into place; clip_diskcache_stage_free() removes what
 * was not published, and a process killed meanwhile leaves only temporary
 * files that the next scan removes. Staged bytes are held to the cache's
 * bound: past it, further chunks are silently not kept. A staging area
 * belongs to one thread. */
struct clip_diskcache_staging;

int clip_diskcache_stage_begin(struct clip_diskcache *cache, const char *layer_hex,
			       struct clip_diskcache_staging **out, struct clip_err *err);

/* Stage chunk `chunk`: `len` bytes whose SHA-256 is `hash`. */
int clip_diskcache_stage(struct clip_diskcache_staging *staging, uint64_t chunk, const void *data,
			 size_t len, const unsigned char hash[32], struct clip_err *err);

/* Publish every chunk staged so far, as clip_diskcache_put() would. */
int clip_diskcache_stage_publish(struct clip_diskcache_staging *staging, struct clip_err *err);

/* Discard what is staged and not published, and free the staging area. */
void clip_diskcache_stage_free(struct clip_diskcache_staging *staging);

void clip_diskcache_stats(const struct clip_diskcache *cache, struct clip_diskcache_stats *out);

void clip_diskcache_close(struct clip_diskcache *cache);

#endif
