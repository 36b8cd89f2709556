/* What the two halves of the Redis backend share (not installed):
 * rcache_redis_conn.c talks to the servers (connections and their pools, the
 * wire protocol against a deadline, cluster slots and redirections) and
 * rcache_redis.c is the cache on top (get, the store queue and its thread,
 * statistics, open and close).
 *
 * Locks: map_lock (rwlock) over the node list and the slot map; each node's
 * lock over its pool and state; queue_lock over the store queue. None is held
 * across network I/O, and no two are held at once, except map_lock (read)
 * briefly around the node list while a node's lock is not taken. Counters
 * and the topology flags are atomics and need no lock.
 */
#ifndef CLIP_RCACHE_REDIS_INTERNAL_H
#define CLIP_RCACHE_REDIS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "clip/err.h"

#define SLOT_COUNT   16384
#define MAX_COMMANDS 3 /* pipelined in one round trip, besides ASKING */
#define MAX_ARGS     4
#define MAX_WRITERS  4 /* store threads, each on a connection of its own */

enum topology {
	TOPOLOGY_UNKNOWN,
	TOPOLOGY_STANDALONE,
	TOPOLOGY_CLUSTER,
};

/* One server, with its pool of connections. */
struct node {
	char *host; /* TCP; NULL for a unix socket */
	int port;
	char *path; /* unix socket; NULL for TCP */
	char *name; /* "host:port", "[v6]:port" or the socket path, for messages */

	pthread_mutex_t lock;
	pthread_cond_t freed; /* a connection went back to the pool or was closed */
	redisContext **idle;  /* `nidle` connections ready for use, at most `capacity` */
	unsigned nidle, capacity;
	unsigned open; /* connections existing or being made, idle or in use */
	bool down;     /* failed recently: fail fast until retry_at */
	bool probing;  /* one reconnection attempt in progress */
	uint64_t retry_at;
	int last_code;
	char last_error[CLIP_ERR_MSG_MAX];
};

struct store; /* a value waiting to be stored (rcache_redis.c) */

struct redis_cache {
	uint64_t timeout_us;
	uint64_t store_timeout_us;
	unsigned connections;
	size_t queue_max;
	char *user, *password; /* AUTH; password NULL: none */
	int db;

	pthread_rwlock_t map_lock;
	struct node **nodes; /* nodes[0]: the server of the URL */
	size_t node_count, node_cap;
	uint16_t slots[SLOT_COUNT]; /* 1 + index into nodes of the slot's master; 0: unknown */
	atomic_int topology;
	atomic_bool refresh_wanted;
	_Atomic uint64_t refresh_last; /* µs */

	pthread_mutex_t queue_lock;
	pthread_cond_t queue_cond; /* a store was queued, or stopping */
	pthread_cond_t room;	   /* a store left the queue, or stopping (CLOCK_MONOTONIC) */
	struct store *head, *tail;
	size_t queued;
	bool stopping;
	_Atomic uint64_t close_deadline; /* µs: when stores give up; UINT64_MAX until close */
	pthread_t writers[MAX_WRITERS];
	unsigned nwriters; /* started (with the first put) */

	/* Bumped with CLIP_COUNT, read with CLIP_COUNTER_LOAD. */
	struct {
		_Atomic uint64_t hits, misses, bytes_read, errors, stores, stores_skipped,
			stores_dropped, redirects;
	} stats;
};

/* One operation: everything it does ends by `deadline`, or by `*cutoff`
 * when that comes first (a store, when close() stops waiting). */
struct op {
	uint64_t deadline;		/* µs, CLOCK_MONOTONIC */
	const _Atomic uint64_t *cutoff; /* NULL for gets */
	long budget_ms;			/* for messages */
	bool unavailable;		/* failed without trying: the server is marked down */
};

/* One command, its arguments borrowed. */
struct cmd {
	int argc;
	const char *argv[MAX_ARGS];
	size_t len[MAX_ARGS];
};

/* Microseconds of CLOCK_MONOTONIC: the clock of every deadline. */
static inline uint64_t redis_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Append an argument of `len` bytes (borrowed) to `c`; at most MAX_ARGS. */
static inline void redis_cmd_arg(struct cmd *c, const void *arg, size_t len)
{
	c->argv[c->argc] = arg;
	c->len[c->argc] = len;
	c->argc++;
}

static inline void redis_cmd_str(struct cmd *c, const char *arg)
{
	redis_cmd_arg(c, arg, strlen(arg));
}

/* ---- rcache_redis_conn.c ------------------------------------------------- */

/* A node for a TCP server (`path` NULL; `host` need not be NUL-terminated)
 * or a unix socket (`path`), with room for `connections` pooled
 * connections; it connects to nothing yet. NULL when out of memory. Freed
 * with redis_node_free(), which closes its idle connections. */
struct node *redis_node_new(const char *host, size_t host_len, int port, const char *path,
			    unsigned connections);
void redis_node_free(struct node *n);

/* Run `cmds` (at most MAX_COMMANDS), all on `key`, on the server that holds it: learn
 * the topology first if need be, follow MOVED and ASK redirections, and end
 * by `op`'s deadline. 0 with replies[0..ncmd) the caller's to free
 * (redis_free_replies) and *where the server that gave them; or a negative
 * errno with `err` set, op->unavailable telling a server known to be down
 * (failed at once) from one that was tried. */
int redis_exec(struct redis_cache *rc, const char *key, const struct cmd *cmds, size_t ncmd,
	       redisReply **replies, struct op *op, struct node **where, struct clip_err *err);

/* Free replies[0..n) and set them to NULL. */
void redis_free_replies(redisReply **replies, size_t n);

/* The errno for an error reply's text, by its code (its first word):
 * EACCES for NOAUTH and the like, ENOSPC for OOM, EAGAIN for LOADING or a
 * cluster in transition, else EIO (positive, as clip_err_set takes it). */
int redis_reply_error_code(const char *s);

#endif
