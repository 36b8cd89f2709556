/* clip: the shared remote content cache (read tier 2).
 *
 * A store of uncompressed layer chunks that every node of a cluster reads
 * and fills, so that only the first node to read a chunk pays for the
 * registry. Values are whole chunks (as the disk cache keeps them) under
 * content-addressed keys "<prefix><layer hex>:<chunk index>", built by the
 * caller (clip_rcache_key). A backend is a struct of function pointers, so
 * Redis is one implementation (src/lib/rcache_redis*.c), not a special case.
 *
 * The cache is never trusted and never in the way: the caller verifies every
 * chunk it gets against the archive's hash; a backend that is down, slow or
 * full answers quickly with an error (its timeout, default 50 ms) and
 * reconnects in the background; stores are queued and done by background
 * threads, and only written when the key is absent. A full queue pushes back:
 * a put waits for room as long as its caller allows (a reader that a program
 * waits on allows nothing, background work a while), then drops the value,
 * counted.
 *
 * Thread safety: an open cache is shared by every reading thread: get, put
 * and stats may be called concurrently (the backend's locks are its own);
 * open and close are not, and close must come after every other call.
 */
#ifndef CLIP_RCACHE_H
#define CLIP_RCACHE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "clip/err.h"

struct clip_rcache_options {
	const char *key_prefix; /* NULL: "clip:" */
	long timeout_ms;	/* bound of a whole get (connect, redirections and
				   reply included); stores take max(this, 250 ms);
				   0: 50 */
	size_t queue_max;	/* stores waiting at most; 0: 64 */
	unsigned connections;	/* connections per server (per cluster master); 0: 4;
				   half of them (rounded up) store */
};

struct clip_rcache_stats {
	uint64_t hits, misses;
	uint64_t bytes_read;
	uint64_t errors;	 /* failed or timed-out operations */
	uint64_t stores;	 /* values written */
	uint64_t stores_skipped; /* already present */
	uint64_t stores_dropped; /* queue full or backend down */
	uint64_t redirects;	 /* cluster MOVED/ASK followed */
};

struct clip_rcache_ops {
	/* Read [offset, offset+len) of the value at `key` into buf: the bytes
	 * read (fewer than len when the value is shorter, 0 when it ends before
	 * offset), -ENOENT when the key is absent and only then, another
	 * negative errno (-ETIMEDOUT, -ECONNREFUSED, -EACCES, -EIO...) when the
	 * backend failed, within timeout_ms; while the backend is known to be
	 * down it fails at once. Thread-safe. */
	ssize_t (*get)(void *self, const char *key, void *buf, size_t len, uint64_t offset,
		       struct clip_err *err);
	/* Queue storing `data` (copied) at `key` if absent. When the queue is
	 * full, wait at most `wait_ms` for room (0: not at all; a put that may
	 * wait is background work, and leaves the last quarter of the queue to
	 * the puts that may not). 0 when queued,
	 * -EAGAIN when dropped (still full, or closing). Never waits on the
	 * network itself. */
	int (*put)(void *self, const char *key, const void *data, size_t len, long wait_ms,
		   struct clip_err *err);
	/* Counters since open; each one exact, the set not a snapshot. */
	void (*stats)(void *self, struct clip_rcache_stats *out);
	/* Wait at most a short while for queued stores, then free everything. */
	void (*close)(void *self);
};

struct clip_rcache {
	const struct clip_rcache_ops *ops;
	void *self;
	char *key_prefix; /* owned */
};

/* Open the cache named by `url`:
 *   redis://[[user]:password@]host[:port][/db]   (port 6379, database 0;
 *                                                  IPv6 hosts as [::1])
 *   unix://[[user]:password@]/path/to/redis.sock[?db=N]
 * A userinfo without ':' is a password (as redis-cli reads it); user and
 * password are %-decoded. A Redis Cluster is detected by the first operation
 * (its CLUSTER SLOTS answer) and routed by key slot. Opening connects to
 * nothing and starts no thread (a daemon may fork after it; the store thread
 * starts with the first put), so no state of the server is an error here; a
 * malformed URL is -EINVAL naming it. The password never appears in
 * messages. *out owned by the caller (clip_rcache_close). */
int clip_rcache_open(const char *url, const struct clip_rcache_options *options,
		     struct clip_rcache **out, struct clip_err *err);

/* "<prefix><layer_hex>:<chunk>" into buf (at most `size` bytes, truncated
 * never: returns -ENAMETOOLONG if it does not fit, else its length). */
int clip_rcache_key(const struct clip_rcache *cache, const char *layer_hex, uint64_t chunk,
		    char *buf, size_t size);

/* Close the backend (waiting a short while for queued stores, see
 * ops->close) and free `cache`. NULL is a no-op. */
void clip_rcache_close(struct clip_rcache *cache);

#endif
