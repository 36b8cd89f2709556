/* The Redis backend, talking to the servers: hiredis underneath.
 *
 * I/O. hiredis makes each connection (name resolution, a non-blocking
 * connect bounded by the time left) and parses replies (its redisReader);
 * commands are formatted with redisFormatCommandArgv and the bytes are moved
 * here: send(MSG_NOSIGNAL), so that a server that went away cannot raise
 * SIGPIPE in the process using the library, and ppoll() against one deadline
 * per operation, so that a get is bounded end to end (a socket timeout bounds
 * each system call, not their sum, and a reply of a chunk takes many).
 *
 * Connections. Every server ("node") has a pool of at most `connections`
 * connections, so that FUSE threads do not queue behind one socket. A
 * connection that fails is dropped. One that fails after sitting in the pool
 * is replaced once by a fresh one before the server is blamed: the server
 * may have restarted or closed it for idleness, and every other pooled
 * connection is then dropped too. Otherwise a failure (refused, reset,
 * timed out) marks the node down: for RETRY_MS every operation on it fails at
 * once, without a system call, then the next one to come tries to reconnect
 * (alone: the others keep failing fast meanwhile). A dead Redis thus costs a
 * read nothing, and one attempt per second finds it when it is back.
 *
 * Cluster. The first operation asks the URL's server for CLUSTER SLOTS; the
 * error "cluster support disabled" (or an unknown command) means a standalone
 * server, for good. In a cluster a key is sent to the master of its slot,
 * CRC16(key or its {hash tag}) mod 16384, from a map of the 16384 slots. A
 * MOVED reply updates the map for that slot, is followed at once, and asks
 * for a refresh of the whole map (CLUSTER SLOTS, at most once per REFRESH_MS,
 * by the next operation that has time left); an ASK reply is followed with
 * ASKING on the target, without touching the map. At most MAX_REDIRECTS hops.
 * Nodes learned from the map or from redirections are kept until close.
 *
 * rcache_redis.c builds the cache on top of redis_exec(); the locks are
 * described in rcache_redis_internal.h.
 */
#include "rcache_redis_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "util.h"

#define MAX_REDIRECTS	5
#define RETRY_MS	1000 /* a down node is tried again after this */
#define REFRESH_MS	1000 /* slot map refreshed at most this often */
#define RECV_CHUNK	(64u << 10)
#define CUTOFF_SLICE_MS 20 /* how soon a store notices close() */

static struct timespec us_to_timespec(uint64_t us)
{
	struct timespec ts = { .tv_sec = (time_t)(us / 1000000u),
			       .tv_nsec = (long)(us % 1000000u) * 1000 };
	return ts;
}

static uint64_t op_end(const struct op *op)
{
	uint64_t cutoff = op->cutoff ? atomic_load(op->cutoff) : UINT64_MAX;
	return cutoff < op->deadline ? cutoff : op->deadline;
}

/* How long to sleep waiting for something before op_end() is checked again:
 * a cutoff may come nearer meanwhile. */
static uint64_t op_wait_until(const struct op *op, uint64_t now)
{
	uint64_t end = op_end(op);
	if (op->cutoff != NULL && end - now > CUTOFF_SLICE_MS * 1000u)
		end = now + CUTOFF_SLICE_MS * 1000u;
	return end;
}

/* ---- key slots ----------------------------------------------------------- */

/* CRC16-CCITT as Redis Cluster uses it (XMODEM: polynomial 0x1021, initial
 * value 0, no reflection, no final xor). */
static uint16_t crc16_xmodem(const char *buf, size_t len)
{
	uint16_t crc = 0;
	for (size_t i = 0; i < len; i++) {
		crc ^= (uint16_t)((unsigned char)buf[i] << 8);
		for (int bit = 0; bit < 8; bit++)
			crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021)
					     : (uint16_t)(crc << 1);
	}
	return crc;
}

/* The cluster slot of a key: only the part between the first '{' and the
 * next '}' counts when it is not empty (a "hash tag"). */
static unsigned key_slot(const char *key, size_t len)
{
	const char *open = memchr(key, '{', len);
	if (open != NULL) {
		size_t rest = len - (size_t)(open + 1 - key);
		const char *close = memchr(open + 1, '}', rest);
		if (close != NULL && close > open + 1) {
			key = open + 1;
			len = (size_t)(close - key);
		}
	}
	return crc16_xmodem(key, len) & (SLOT_COUNT - 1);
}

/* ---- socket I/O against a deadline --------------------------------------- */

/* 0 when `fd` is ready for `events`, -ETIMEDOUT at the end of `op`, -errno. */
static int wait_fd(int fd, short events, const struct op *op)
{
	for (;;) {
		uint64_t now = redis_now_us();
		if (now >= op_end(op))
			return -ETIMEDOUT;
		struct timespec left = us_to_timespec(op_wait_until(op, now) - now);
		struct pollfd pfd = { .fd = fd, .events = events };
		int r = ppoll(&pfd, 1, &left, NULL);
		if (r > 0)
			return 0; /* ready, or an error the next send/recv reports */
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

static int send_all(struct node *n, int fd, const char *buf, size_t len, bool more,
		    const struct op *op, struct clip_err *err)
{
	int flags = MSG_NOSIGNAL | MSG_DONTWAIT | (more ? MSG_MORE : 0);
	while (len > 0) {
		ssize_t sent = send(fd, buf, len, flags);
		if (sent > 0) {
			buf += sent;
			len -= (size_t)sent;
			continue;
		}
		if (sent < 0 && errno == EINTR)
			continue;
		if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return clip_err_errno(err, errno, "redis %s: send", n->name);
		int r = wait_fd(fd, POLLOUT, op);
		if (r == -ETIMEDOUT)
			return clip_err_set(err, ETIMEDOUT, "redis %s: send: timed out (%ld ms)",
					    n->name, op->budget_ms);
		if (r < 0)
			return clip_err_errno(err, r, "redis %s: poll", n->name);
	}
	return 0;
}

static int read_reply(struct node *n, redisContext *c, redisReply **out, const struct op *op,
		      struct clip_err *err)
{
	char buf[RECV_CHUNK];
	for (;;) {
		void *reply = NULL;
		if (redisReaderGetReply(c->reader, &reply) != REDIS_OK)
			return clip_err_set(err, EPROTO, "redis %s: protocol error: %s", n->name,
					    c->reader->errstr);
		if (reply != NULL) {
			*out = reply;
			return 0;
		}
		int r = wait_fd(c->fd, POLLIN, op);
		if (r == -ETIMEDOUT)
			return clip_err_set(err, ETIMEDOUT, "redis %s: no reply within %ld ms",
					    n->name, op->budget_ms);
		if (r < 0)
			return clip_err_errno(err, r, "redis %s: poll", n->name);
		ssize_t got = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (got == 0)
			return clip_err_set(err, ECONNRESET,
					    "redis %s: connection closed by the server", n->name);
		if (got < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			return clip_err_errno(err, errno, "redis %s: receive", n->name);
		}
		if (redisReaderFeed(c->reader, buf, (size_t)got) != REDIS_OK)
			return clip_err_set(err, EPROTO, "redis %s: protocol error: %s", n->name,
					    c->reader->errstr);
	}
}

/* Send `cmds` in one write burst (each preceded by ASKING when `asking`) and read
 * their replies into replies[0..ncmd). 0, or a negative errno after which the
 * connection is unusable (replies may be left unread in it). */
static int conn_roundtrip(struct node *n, redisContext *c, bool asking, const struct cmd *cmds,
			  size_t ncmd, redisReply **replies, const struct op *op,
			  struct clip_err *err)
{
	static const char asking_cmd[] = "*1\r\n$6\r\nASKING\r\n";
	char *wire[MAX_COMMANDS] = { 0 };
	size_t wire_len[MAX_COMMANDS];
	int r = 0;
	for (size_t i = 0; i < ncmd; i++) {
		/* hiredis takes a non-const array of const strings. */
		const char *argv[MAX_ARGS];
		memcpy(argv, cmds[i].argv, sizeof(argv));
		long long len = redisFormatCommandArgv(&wire[i], cmds[i].argc, argv, cmds[i].len);
		if (len < 0) {
			r = clip_err_set(err, ENOMEM, "redis %s: out of memory", n->name);
			goto out;
		}
		wire_len[i] = (size_t)len;
	}
	/* ASKING holds for the next command only: one before each. */
	for (size_t i = 0; i < ncmd && r == 0; i++) {
		if (asking)
			r = send_all(n, c->fd, asking_cmd, sizeof(asking_cmd) - 1, true, op, err);
		if (r == 0)
			r = send_all(n, c->fd, wire[i], wire_len[i], i + 1 < ncmd, op, err);
	}
	if (r < 0)
		goto out;

	for (size_t i = 0; i < ncmd; i++) {
		redisReply *ok = NULL;
		if (asking && (r = read_reply(n, c, &ok, op, err)) == 0)
			freeReplyObject(ok); /* an error shows again in the command's reply */
		if (r == 0)
			r = read_reply(n, c, &replies[i], op, err);
		if (r < 0) {
			while (i > 0)
				freeReplyObject(replies[--i]);
			goto out;
		}
	}
out:
	for (size_t i = 0; i < ncmd; i++)
		if (wire[i] != NULL)
			redisFreeCommand(wire[i]);
	return r;
}

void redis_free_replies(redisReply **replies, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		freeReplyObject(replies[i]);
		replies[i] = NULL;
	}
}

/* The errno for an error reply, by its code (its first word). */
int redis_reply_error_code(const char *s)
{
	static const struct {
		const char *prefix;
		int code;
	} codes[] = {
		{ "NOAUTH", EACCES },	{ "WRONGPASS", EACCES },   { "NOPERM", EACCES },
		{ "OOM", ENOSPC },	{ "LOADING", EAGAIN },	   { "BUSY", EAGAIN },
		{ "TRYAGAIN", EAGAIN }, { "CLUSTERDOWN", EAGAIN }, { "MASTERDOWN", EAGAIN },
	};
	for (size_t i = 0; i < CLIP_ARRAY_SIZE(codes); i++) {
		size_t len = strlen(codes[i].prefix);
		if (strncmp(s, codes[i].prefix, len) == 0 && (s[len] == ' ' || s[len] == '\0'))
			return codes[i].code;
	}
	return EIO;
}

/* ---- connections and their pools ---------------------------------------- */

/* AUTH and SELECT on a fresh connection, in one round trip. */
static int conn_handshake(struct redis_cache *rc, struct node *n, redisContext *c,
			  const struct op *op, struct clip_err *err)
{
	struct cmd cmds[2] = { 0 };
	size_t ncmd = 0;
	char db[16];
	size_t auth = SIZE_MAX, select = SIZE_MAX;
	if (rc->password != NULL) {
		auth = ncmd++;
		redis_cmd_str(&cmds[auth], "AUTH");
		if (rc->user != NULL)
			redis_cmd_str(&cmds[auth], rc->user);
		redis_cmd_str(&cmds[auth], rc->password);
	}
	if (rc->db != 0) {
		select = ncmd++;
		snprintf(db, sizeof(db), "%d", rc->db);
		redis_cmd_str(&cmds[select], "SELECT");
		redis_cmd_str(&cmds[select], db);
	}
	if (ncmd == 0)
		return 0;
	redisReply *replies[2] = { 0 };
	int r = conn_roundtrip(n, c, false, cmds, ncmd, replies, op, err);
	if (r < 0)
		return r;
	if (auth != SIZE_MAX && replies[auth]->type == REDIS_REPLY_ERROR) {
		/* The server's message names no password (WRONGPASS ..., ERR invalid
		 * password); neither does ours. */
		r = clip_err_set(err, EACCES, "redis %s: AUTH%s%s failed: %s", n->name,
				 rc->user ? " as user " : "", rc->user ? rc->user : "",
				 replies[auth]->str);
	} else if (select != SIZE_MAX && replies[select]->type == REDIS_REPLY_ERROR) {
		r = clip_err_set(err, EINVAL, "redis %s: SELECT %d failed: %s", n->name, rc->db,
				 replies[select]->str);
	}
	redis_free_replies(replies, ncmd);
	return r;
}

static int conn_open(struct redis_cache *rc, struct node *n, const struct op *op,
		     redisContext **out, struct clip_err *err)
{
	uint64_t now = redis_now_us();
	uint64_t end = op_end(op);
	uint64_t left = end > now ? end - now : 1;
	struct timeval tv = { .tv_sec = (time_t)(left / 1000000u),
			      .tv_usec = (suseconds_t)(left % 1000000u) };
	errno = 0;
	redisContext *c = n->path ? redisConnectUnixWithTimeout(n->path, tv)
				  : redisConnectWithTimeout(n->host, n->port, tv);
	int saved = errno;
	if (c == NULL)
		return clip_err_set(err, ENOMEM, "redis %s: out of memory", n->name);
	if (c->err) {
		int code = c->err == REDIS_ERR_IO && saved > 0 ? saved : EHOSTUNREACH;
		if (code == ENOENT) /* a socket path: never "no such key" */
			code = ECONNREFUSED;
		clip_err_set(err, code, "redis %s: connect: %s", n->name, c->errstr);
		redisFree(c);
		return -code;
	}
	/* Not inherited by programs the process runs. */
	(void)fcntl(c->fd, F_SETFD, FD_CLOEXEC);
	/* A pooled connection that died silently (a peer gone, a NAT
	 * forgetting it) is found while idle, not by a read timing out. */
	if (n->path == NULL)
		(void)redisEnableKeepAlive(c);
	int r = conn_handshake(rc, n, c, op, err);
	if (r < 0) {
		redisFree(c);
		return r;
	}
	*out = c;
	return 0;
}

struct node *redis_node_new(const char *host, size_t host_len, int port, const char *path,
			    unsigned connections)
{
	struct node *n = calloc(1, sizeof(*n));
	if (n == NULL)
		return NULL;
	n->port = port;
	n->capacity = connections;
	n->idle = calloc(connections, sizeof(*n->idle));
	if (path != NULL) {
		n->path = strdup(path);
		n->name = n->path ? strdup(path) : NULL;
	} else {
		n->host = clip_strdup_len(host, host_len);
		bool v6 = memchr(host, ':', host_len) != NULL;
		if (n->host != NULL &&
		    asprintf(&n->name, v6 ? "[%s]:%d" : "%s:%d", n->host, port) < 0)
			n->name = NULL;
	}
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&n->freed, &attr);
	pthread_condattr_destroy(&attr);
	pthread_mutex_init(&n->lock, NULL);
	if (n->idle == NULL || n->name == NULL) {
		redis_node_free(n);
		return NULL;
	}
	return n;
}

void redis_node_free(struct node *n)
{
	for (unsigned i = 0; i < n->nidle; i++)
		redisFree(n->idle[i]);
	pthread_cond_destroy(&n->freed);
	pthread_mutex_destroy(&n->lock);
	free(n->idle);
	free(n->host);
	free(n->path);
	free(n->name);
	free(n);
}

static void node_drop_idle_locked(struct node *n)
{
	while (n->nidle > 0) {
		redisFree(n->idle[--n->nidle]);
		n->open--;
	}
	pthread_cond_broadcast(&n->freed);
}

static void node_mark_down_locked(struct redis_cache *rc, struct node *n, int code,
				  const char *message)
{
	n->down = true;
	n->retry_at = redis_now_us() + RETRY_MS * 1000u;
	n->last_code = code;
	snprintf(n->last_error, sizeof(n->last_error), "%s", message);
	node_drop_idle_locked(n);
	/* In a cluster a master that is gone may have been replaced. */
	if (atomic_load(&rc->topology) == TOPOLOGY_CLUSTER)
		atomic_store(&rc->refresh_wanted, true);
}

static void node_mark_down(struct redis_cache *rc, struct node *n, int code, const char *message)
{
	pthread_mutex_lock(&n->lock);
	node_mark_down_locked(rc, n, code, message);
	pthread_mutex_unlock(&n->lock);
}

static bool node_is_down(struct node *n)
{
	pthread_mutex_lock(&n->lock);
	bool down = n->down && redis_now_us() < n->retry_at;
	pthread_mutex_unlock(&n->lock);
	return down;
}

/* Make a connection for a slot already counted in n->open (and n->probing
 * set when the node is down). */
static int node_connect(struct redis_cache *rc, struct node *n, struct op *op, redisContext **out,
			struct clip_err *err)
{
	redisContext *c = NULL;
	int r = conn_open(rc, n, op, &c, err);
	pthread_mutex_lock(&n->lock);
	n->probing = false;
	if (r < 0) {
		n->open--;
		node_mark_down_locked(rc, n, r, err->msg);
	} else {
		n->down = false;
	}
	pthread_mutex_unlock(&n->lock);
	*out = c;
	return r;
}

/* A connection to `n`: a pooled one (*reused), a new one, or one freed by
 * another thread before the deadline. Fails at once while `n` is down. */
static int node_acquire(struct redis_cache *rc, struct node *n, struct op *op, redisContext **out,
			bool *reused, struct clip_err *err)
{
	*reused = false;
	pthread_mutex_lock(&n->lock);
	for (;;) {
		uint64_t now = redis_now_us();
		if (n->down && (n->probing || now < n->retry_at)) {
			uint64_t wait_ms =
				n->retry_at > now ? (n->retry_at - now + 999u) / 1000u : 0u;
			int code = n->last_code;
			clip_err_set(err, code,
				     "%s (server marked down; next attempt in %" PRIu64 " ms)",
				     n->last_error, wait_ms);
			pthread_mutex_unlock(&n->lock);
			op->unavailable = true;
			return code;
		}
		if (now >= op_end(op))
			break;
		if (n->down) {
			/* The one attempt to reconnect, until it is over. */
			n->probing = true;
			n->open++;
			pthread_mutex_unlock(&n->lock);
			return node_connect(rc, n, op, out, err);
		}
		if (n->nidle > 0) {
			*out = n->idle[--n->nidle];
			*reused = true;
			pthread_mutex_unlock(&n->lock);
			return 0;
		}
		if (n->open < rc->connections) {
			n->open++;
			pthread_mutex_unlock(&n->lock);
			return node_connect(rc, n, op, out, err);
		}
		struct timespec until = us_to_timespec(op_wait_until(op, now));
		pthread_cond_timedwait(&n->freed, &n->lock, &until);
	}
	pthread_mutex_unlock(&n->lock);
	return clip_err_set(err, ETIMEDOUT, "redis %s: no connection free within %ld ms", n->name,
			    op->budget_ms);
}

static void node_release(struct node *n, redisContext *c, bool broken)
{
	pthread_mutex_lock(&n->lock);
	/* Over capacity when made by a reconnection attempt while others were
	 * still out. */
	if (broken || n->down || n->nidle >= n->capacity) {
		n->open--;
		redisFree(c);
	} else {
		n->idle[n->nidle++] = c;
	}
	pthread_cond_signal(&n->freed);
	pthread_mutex_unlock(&n->lock);
}

/* One round trip of `cmds` on `n`, on a pooled connection or a fresh one. */
static int node_roundtrip(struct redis_cache *rc, struct node *n, bool asking,
			  const struct cmd *cmds, size_t ncmd, redisReply **replies, struct op *op,
			  struct clip_err *err)
{
	for (int attempt = 0;; attempt++) {
		redisContext *c = NULL;
		bool reused = false;
		int r = node_acquire(rc, n, op, &c, &reused, err);
		if (r < 0)
			return r;
		if (redis_now_us() >= op_end(op)) {
			/* Spent before anything was sent: no fault of the server's. */
			node_release(n, c, false);
			return clip_err_set(err, ETIMEDOUT, "redis %s: no reply within %ld ms",
					    n->name, op->budget_ms);
		}
		r = conn_roundtrip(n, c, asking, cmds, ncmd, replies, op, err);
		node_release(n, c, r < 0);
		if (r == 0 || r == -ENOMEM)
			return r;
		if (reused && attempt == 0 && r != -ETIMEDOUT) {
			/* Died in the pool (a restart, an idle timeout): so did the
			 * others of its time. */
			pthread_mutex_lock(&n->lock);
			node_drop_idle_locked(n);
			pthread_mutex_unlock(&n->lock);
			continue;
		}
		node_mark_down(rc, n, r, err->msg);
		return r;
	}
}

/* ---- topology ------------------------------------------------------------- */

/* The node for host:port, added when new (map_lock held for writing);
 * its index in *index. NULL when out of memory. */
static struct node *node_find_or_add_locked(struct redis_cache *rc, const char *host,
					    size_t host_len, int port, size_t *index)
{
	for (size_t i = 0; i < rc->node_count; i++) {
		struct node *n = rc->nodes[i];
		if (n->host != NULL && n->port == port && strlen(n->host) == host_len &&
		    memcmp(n->host, host, host_len) == 0) {
			*index = i;
			return n;
		}
	}
	if (rc->node_count >= UINT16_MAX - 1)
		return NULL;
	if (rc->node_count == rc->node_cap) {
		size_t cap = rc->node_cap ? 2 * rc->node_cap : 8;
		struct node **nodes = realloc(rc->nodes, cap * sizeof(*nodes));
		if (nodes == NULL)
			return NULL;
		rc->nodes = nodes;
		rc->node_cap = cap;
	}
	struct node *n = redis_node_new(host, host_len, port, NULL, rc->connections);
	if (n == NULL)
		return NULL;
	*index = rc->node_count;
	rc->nodes[rc->node_count++] = n;
	return n;
}

static struct node *node_find_or_add(struct redis_cache *rc, const char *host, size_t host_len,
				     int port)
{
	size_t index;
	pthread_rwlock_wrlock(&rc->map_lock);
	struct node *n = node_find_or_add_locked(rc, host, host_len, port, &index);
	pthread_rwlock_unlock(&rc->map_lock);
	return n;
}

static struct node *node_at(struct redis_cache *rc, size_t i)
{
	pthread_rwlock_rdlock(&rc->map_lock);
	struct node *n = i < rc->node_count ? rc->nodes[i] : NULL;
	pthread_rwlock_unlock(&rc->map_lock);
	return n;
}

/* Where a command on `key` goes: the slot's master in a cluster when known,
 * else the server of the URL (which redirects if need be). */
static struct node *route(struct redis_cache *rc, const char *key, size_t key_len)
{
	pthread_rwlock_rdlock(&rc->map_lock);
	struct node *n = rc->nodes[0];
	if (atomic_load(&rc->topology) == TOPOLOGY_CLUSTER) {
		unsigned index = rc->slots[key_slot(key, key_len)];
		if (index != 0)
			n = rc->nodes[index - 1];
	}
	pthread_rwlock_unlock(&rc->map_lock);
	return n;
}

/* Replace the slot map with a CLUSTER SLOTS reply got from `asked`:
 * [[start, end, [host, port, ...], replicas...], ...]. An empty host is
 * `asked`'s own; "?" (unknown endpoint) leaves the range unmapped. */
static int cluster_apply(struct redis_cache *rc, struct node *asked, const redisReply *reply,
			 struct clip_err *err)
{
	if (reply->type != REDIS_REPLY_ARRAY)
		goto malformed;
	for (size_t i = 0; i < reply->elements; i++) {
		const redisReply *e = reply->element[i];
		if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
		    e->element[0]->type != REDIS_REPLY_INTEGER ||
		    e->element[1]->type != REDIS_REPLY_INTEGER ||
		    e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2)
			goto malformed;
		long long start = e->element[0]->integer, end = e->element[1]->integer;
		const redisReply *host = e->element[2]->element[0];
		const redisReply *port = e->element[2]->element[1];
		if (start < 0 || end >= SLOT_COUNT || start > end ||
		    host->type != REDIS_REPLY_STRING || port->type != REDIS_REPLY_INTEGER ||
		    port->integer < 1 || port->integer > 65535)
			goto malformed;
	}

	int r = 0;
	pthread_rwlock_wrlock(&rc->map_lock);
	memset(rc->slots, 0, sizeof(rc->slots));
	for (size_t i = 0; i < reply->elements; i++) {
		const redisReply *e = reply->element[i];
		const redisReply *host = e->element[2]->element[0];
		const char *h = host->str;
		size_t h_len = host->len;
		if (h_len == 0 && asked->host != NULL) {
			h = asked->host;
			h_len = strlen(h);
		}
		if (h_len == 0 || (h_len == 1 && h[0] == '?'))
			continue;
		size_t index;
		if (node_find_or_add_locked(rc, h, h_len, (int)e->element[2]->element[1]->integer,
					    &index) == NULL) {
			r = clip_err_set(err, ENOMEM, "redis %s: out of memory", asked->name);
			break;
		}
		for (long long s = e->element[0]->integer; s <= e->element[1]->integer; s++)
			rc->slots[s] = (uint16_t)(index + 1);
	}
	pthread_rwlock_unlock(&rc->map_lock);
	return r;

malformed:
	return clip_err_set(err, EPROTO, "redis %s: CLUSTER SLOTS: unexpected reply", asked->name);
}

/* Standalone or cluster? Asked once, of the server of the URL, by the first
 * operation that reaches it. */
static int detect_topology(struct redis_cache *rc, struct op *op, struct clip_err *err)
{
	if (atomic_load(&rc->topology) != TOPOLOGY_UNKNOWN)
		return 0;
	struct node *seed = node_at(rc, 0);
	struct cmd cmd = { 0 };
	redis_cmd_str(&cmd, "CLUSTER");
	redis_cmd_str(&cmd, "SLOTS");
	redisReply *reply = NULL;
	int r = node_roundtrip(rc, seed, false, &cmd, 1, &reply, op, err);
	if (r < 0)
		return r;
	if (reply->type == REDIS_REPLY_ERROR) {
		if (strstr(reply->str, "cluster support disabled") != NULL ||
		    strncasecmp(reply->str, "ERR unknown command", 19) == 0)
			atomic_store(&rc->topology, TOPOLOGY_STANDALONE);
		else
			r = clip_err_set(err, redis_reply_error_code(reply->str),
					 "redis %s: CLUSTER SLOTS: %s", seed->name, reply->str);
	} else if ((r = cluster_apply(rc, seed, reply, err)) == 0) {
		atomic_store(&rc->refresh_last, redis_now_us());
		atomic_store(&rc->topology, TOPOLOGY_CLUSTER);
	}
	freeReplyObject(reply);
	return r;
}

/* Reload the slot map when a redirection or a lost node asked for it, at most
 * every REFRESH_MS, from the first node that answers within the deadline. */
static void maybe_refresh(struct redis_cache *rc, const struct op *op)
{
	if (!atomic_load(&rc->refresh_wanted))
		return;
	uint64_t now = redis_now_us(), last = atomic_load(&rc->refresh_last);
	if (now - last < REFRESH_MS * 1000u ||
	    !atomic_compare_exchange_strong(&rc->refresh_last, &last, now))
		return;
	struct cmd cmd = { 0 };
	redis_cmd_str(&cmd, "CLUSTER");
	redis_cmd_str(&cmd, "SLOTS");
	struct node *n;
	for (size_t i = 0; (n = node_at(rc, i)) != NULL && redis_now_us() < op_end(op); i++) {
		if (node_is_down(n))
			continue;
		struct op sub = *op;
		struct clip_err quiet = { 0 };
		redisReply *reply = NULL;
		if (node_roundtrip(rc, n, false, &cmd, 1, &reply, &sub, &quiet) < 0)
			continue;
		int r = reply->type == REDIS_REPLY_ARRAY ? cluster_apply(rc, n, reply, &quiet) : -1;
		freeReplyObject(reply);
		if (r == 0) {
			atomic_store(&rc->refresh_wanted, false);
			return;
		}
	}
}

/* "MOVED <slot> <host>:<port>" or "ASK ...": 1 with the parts (*host
 * malloc'd, maybe empty: the same host), 0 for any other reply, -EPROTO. */
static int parse_redirect(const redisReply *reply, bool *ask, unsigned *slot, char **host,
			  int *port)
{
	if (reply->type != REDIS_REPLY_ERROR)
		return 0;
	const char *s = reply->str;
	if (strncmp(s, "MOVED ", 6) == 0) {
		*ask = false;
		s += 6;
	} else if (strncmp(s, "ASK ", 4) == 0) {
		*ask = true;
		s += 4;
	} else {
		return 0;
	}
	char *end;
	unsigned long v = strtoul(s, &end, 10);
	if (end == s || *end != ' ' || v >= SLOT_COUNT)
		return -EPROTO;
	const char *where = end + 1;
	const char *colon = strrchr(where, ':');
	if (colon == NULL)
		return -EPROTO;
	long p = strtol(colon + 1, &end, 10);
	if (end == colon + 1 || *end != '\0' || p < 1 || p > 65535)
		return -EPROTO;
	if ((*host = clip_strdup_len(where, (size_t)(colon - where))) == NULL)
		return -ENOMEM;
	*slot = (unsigned)v;
	*port = (int)p;
	return 1;
}

/* Run `cmds`, all on `key`, on the server that holds it, following
 * redirections. replies[0..ncmd) are the caller's to free on success, and
 * *where names the server that gave them. */
int redis_exec(struct redis_cache *rc, const char *key, const struct cmd *cmds, size_t ncmd,
	       redisReply **replies, struct op *op, struct node **where, struct clip_err *err)
{
	int r = detect_topology(rc, op, err);
	if (r < 0)
		return r;
	struct node *n = route(rc, key, strlen(key));
	bool asking = false;
	for (int hops = 0;; hops++) {
		r = node_roundtrip(rc, n, asking, cmds, ncmd, replies, op, err);
		if (r < 0)
			return r;
		bool ask = false;
		unsigned slot = 0;
		int port = 0;
		cleanup_free char *host = NULL;
		for (size_t i = 0; i < ncmd && r == 0; i++)
			r = parse_redirect(replies[i], &ask, &slot, &host, &port);
		if (r == 0)
			break;
		redis_free_replies(replies, ncmd);
		if (r < 0)
			return clip_err_set(err, r, "redis %s: bad redirection", n->name);
		if (hops == MAX_REDIRECTS)
			return clip_err_set(err, EIO, "redis %s: %s: more than %d redirections",
					    n->name, key, MAX_REDIRECTS);
		struct node *target = NULL;
		if (host[0] != '\0')
			target = node_find_or_add(rc, host, strlen(host), port);
		else if (n->host != NULL)
			target = node_find_or_add(rc, n->host, strlen(n->host), port);
		if (target == NULL)
			return clip_err_set(err, ENOMEM, "redis %s: cannot follow a redirection",
					    n->name);
		CLIP_COUNT(rc->stats.redirects, 1);
		if (!ask) {
			pthread_rwlock_wrlock(&rc->map_lock);
			for (size_t i = 0; i < rc->node_count; i++)
				if (rc->nodes[i] == target)
					rc->slots[slot] = (uint16_t)(i + 1);
			pthread_rwlock_unlock(&rc->map_lock);
			atomic_store(&rc->topology, TOPOLOGY_CLUSTER);
			atomic_store(&rc->refresh_wanted, true);
		}
		asking = ask;
		n = target;
	}
	*where = n;
	maybe_refresh(rc, op);
	return 0;
}
