/* The Redis backend of the remote cache: get, the store queue and its
 * thread, statistics, open and close, on top of rcache_redis_conn.c (the
 * servers, their connections, the cluster) and rcache_redis_internal.h
 * (what the two share, and the locks).
 *
 * Stores. put() copies the value into a bounded queue and returns; background
 * threads, started by the first put (never at open: the FUSE daemon forks
 * after opening the cache, and a thread would not survive the fork), write
 * each with SET key value NX, so that a value that is already there is never
 * rewritten. There are several, half the connections of the pool, so that a
 * store waiting on a slow link does not hold the others up, and the other
 * half stays free for gets. A full queue makes put() wait for room as long as
 * its caller allows: background work (hydration) then goes at the pace of the
 * cache instead of losing what it fetched, and a reader a program waits on
 * (which allows no wait) drops the value, counted. close() lets the threads
 * drain the queue for at most CLOSE_DRAIN_MS, then drops the rest; a store in
 * flight then gives up too (its waits are cut in slices of CUTOFF_SLICE_MS,
 * in rcache_redis_conn.c, to notice).
 */
#include "rcache_redis.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "rcache_redis_internal.h"
#include "util.h"

#define DEFAULT_PORT	     6379
#define STORE_TIMEOUT_MIN_MS 250 /* a store moves a whole chunk and waits for no reader */
#define CLOSE_DRAIN_MS	     1000

/* A value waiting to be stored. */
struct store {
	struct store *next;
	size_t key_len, len;
	char *key;	     /* points into bytes[] */
	unsigned char *data; /* points into bytes[] */
	unsigned char bytes[];
};

/* ---- the operations ------------------------------------------------------- */

static struct op op_start(uint64_t budget_us)
{
	struct op op = { .deadline = redis_now_us() + budget_us,
			 .budget_ms = (long)(budget_us / 1000u) };
	return op;
}

static int reply_error(const struct node *n, const char *command, const char *key,
		       const redisReply *reply, struct clip_err *err)
{
	return clip_err_set(err, redis_reply_error_code(reply->str), "redis %s: %s %s: %s", n->name,
			    command, key, reply->str);
}

static ssize_t redis_get(void *self, const char *key, void *buf, size_t len, uint64_t offset,
			 struct clip_err *err)
{
	struct redis_cache *rc = self;
	struct clip_err local;
	if (err == NULL)
		err = &local;
	if (offset > INT64_MAX || len > INT64_MAX - offset)
		return clip_err_set(err, EINVAL, "redis: %s: range out of bounds", key);

	/* EXISTS first, in the same round trip: an empty range means "absent"
	 * only when the key is not there, and a key stored between the two
	 * commands then reads as present. */
	struct cmd cmds[2] = { 0 };
	char start[24], end[24];
	size_t ncmd = 1;
	redis_cmd_str(&cmds[0], "EXISTS");
	redis_cmd_str(&cmds[0], key);
	if (len > 0) {
		snprintf(start, sizeof(start), "%" PRIu64, offset);
		snprintf(end, sizeof(end), "%" PRIu64, offset + len - 1);
		redis_cmd_str(&cmds[1], "GETRANGE");
		redis_cmd_str(&cmds[1], key);
		redis_cmd_str(&cmds[1], start);
		redis_cmd_str(&cmds[1], end);
		ncmd = 2;
	}

	struct op op = op_start(rc->timeout_us);
	redisReply *replies[2] = { 0 };
	struct node *n = NULL;
	ssize_t r = redis_exec(rc, key, cmds, ncmd, replies, &op, &n, err);
	if (r < 0) {
		CLIP_COUNT(rc->stats.errors, 1);
		return r;
	}
	for (size_t i = 0; i < ncmd && r == 0; i++)
		if (replies[i]->type == REDIS_REPLY_ERROR)
			r = reply_error(n, cmds[i].argv[0], key, replies[i], err);
	if (r == 0 && (replies[0]->type != REDIS_REPLY_INTEGER ||
		       (ncmd == 2 && replies[1]->type != REDIS_REPLY_STRING)))
		r = clip_err_set(err, EPROTO, "redis %s: GETRANGE %s: unexpected reply", n->name,
				 key);
	if (r < 0) {
		CLIP_COUNT(rc->stats.errors, 1);
	} else if (ncmd == 2 && replies[1]->len > 0) {
		size_t got = replies[1]->len < len ? replies[1]->len : len;
		memcpy(buf, replies[1]->str, got);
		CLIP_COUNT(rc->stats.hits, 1);
		CLIP_COUNT(rc->stats.bytes_read, got);
		r = (ssize_t)got;
	} else if (replies[0]->integer == 0) {
		CLIP_COUNT(rc->stats.misses, 1);
		r = clip_err_set(err, ENOENT, "redis %s: %s: no such key", n->name, key);
	} else {
		CLIP_COUNT(rc->stats.hits, 1); /* there, and shorter than offset */
	}
	redis_free_replies(replies, ncmd);
	return r;
}

/* SET key value NX, for the store thread. */
static void store_one(struct redis_cache *rc, const struct store *s)
{
	struct cmd cmd = { 0 };
	redis_cmd_str(&cmd, "SET");
	redis_cmd_arg(&cmd, s->key, s->key_len);
	redis_cmd_arg(&cmd, s->data, s->len);
	redis_cmd_str(&cmd, "NX");
	struct op op = { .deadline = redis_now_us() + rc->store_timeout_us,
			 .cutoff = &rc->close_deadline,
			 .budget_ms = (long)(rc->store_timeout_us / 1000u) };
	struct clip_err err = { 0 };
	redisReply *reply = NULL;
	struct node *n = NULL;
	if (redis_exec(rc, s->key, &cmd, 1, &reply, &op, &n, &err) < 0) {
		if (op.unavailable)
			CLIP_COUNT(rc->stats.stores_dropped, 1);
		else
			CLIP_COUNT(rc->stats.errors, 1);
		return;
	}
	if (reply->type == REDIS_REPLY_STATUS)
		CLIP_COUNT(rc->stats.stores, 1);
	else if (reply->type == REDIS_REPLY_NIL)
		CLIP_COUNT(rc->stats.stores_skipped, 1);
	else /* OOM (full, no eviction), a read-only replica... */
		CLIP_COUNT(rc->stats.errors, 1);
	freeReplyObject(reply);
}

static void *writer_main(void *arg)
{
	struct redis_cache *rc = arg;
	pthread_mutex_lock(&rc->queue_lock);
	for (;;) {
		while (rc->head == NULL && !rc->stopping)
			pthread_cond_wait(&rc->queue_cond, &rc->queue_lock);
		struct store *s = rc->head;
		if (s == NULL || redis_now_us() >= atomic_load(&rc->close_deadline))
			break;
		rc->head = s->next;
		if (rc->head == NULL)
			rc->tail = NULL;
		rc->queued--;
		pthread_cond_signal(&rc->room);
		pthread_mutex_unlock(&rc->queue_lock);
		store_one(rc, s);
		free(s);
		pthread_mutex_lock(&rc->queue_lock);
	}
	pthread_mutex_unlock(&rc->queue_lock);
	return NULL;
}

/* Start the store threads (queue_lock held) with every signal blocked: the
 * process's signals are for its own threads (libfuse waits for SIGINT/SIGTERM
 * in its main thread). At least one started is enough. */
static int start_writers_locked(struct redis_cache *rc)
{
	unsigned want = (rc->connections + 1) / 2;
	want = want < 1 ? 1 : want > MAX_WRITERS ? MAX_WRITERS : want;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int r = 0;
	while (rc->nwriters < want &&
	       (r = pthread_create(&rc->writers[rc->nwriters], NULL, writer_main, rc)) == 0)
		rc->nwriters++;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc->nwriters > 0 ? 0 : -r;
}

/* Wait (queue_lock held) until the queue has room, the cache closes or
 * `wait_ms` passes; true when there is room. A put that may wait is
 * background work, which could keep the queue full all the time: it leaves
 * the last quarter of the queue to the puts that may not wait. */
static bool wait_room_locked(struct redis_cache *rc, long wait_ms)
{
	size_t limit = wait_ms > 0 ? rc->queue_max - rc->queue_max / 4 : rc->queue_max;
	if (rc->queued < limit || wait_ms <= 0)
		return rc->queued < limit;
	uint64_t end = redis_now_us() + (uint64_t)wait_ms * 1000u;
	struct timespec ts = { .tv_sec = (time_t)(end / 1000000u),
			       .tv_nsec = (long)(end % 1000000u) * 1000 };
	while (rc->queued >= limit && !rc->stopping &&
	       pthread_cond_timedwait(&rc->room, &rc->queue_lock, &ts) == 0)
		;
	return rc->queued < limit;
}

/* A store dropped because the queue is full (or the cache closing). */
static int drop_full(struct redis_cache *rc, const char *key, struct clip_err *err)
{
	CLIP_COUNT(rc->stats.stores_dropped, 1);
	return clip_err_set(err, EAGAIN, "redis: store of %s dropped: %zu stores already queued",
			    key, rc->queue_max);
}

static int redis_put(void *self, const char *key, const void *data, size_t len, long wait_ms,
		     struct clip_err *err)
{
	struct redis_cache *rc = self;
	size_t key_len = strlen(key);
	int r = 0;

	/* Checked before copying too, so that a full queue costs no copy. */
	pthread_mutex_lock(&rc->queue_lock);
	bool full = !wait_room_locked(rc, wait_ms);
	pthread_mutex_unlock(&rc->queue_lock);
	if (full)
		return drop_full(rc, key, err);

	cleanup_free struct store *s = malloc(sizeof(*s) + key_len + 1 + len);
	if (s == NULL) {
		CLIP_COUNT(rc->stats.stores_dropped, 1);
		return clip_err_set(err, ENOMEM, "redis: store of %s: out of memory", key);
	}
	s->next = NULL;
	s->key_len = key_len;
	s->len = len;
	s->key = (char *)s->bytes;
	s->data = s->bytes + key_len + 1;
	memcpy(s->key, key, key_len + 1);
	if (len > 0)
		memcpy(s->data, data, len);

	pthread_mutex_lock(&rc->queue_lock);
	if (!wait_room_locked(rc, wait_ms) || rc->stopping) {
		pthread_mutex_unlock(&rc->queue_lock);
		return drop_full(rc, key, err);
	}
	if (rc->nwriters == 0 && (r = start_writers_locked(rc)) < 0) {
		pthread_mutex_unlock(&rc->queue_lock);
		CLIP_COUNT(rc->stats.stores_dropped, 1);
		return clip_err_set(err, EAGAIN, "redis: cannot start the store threads: %s",
				    strerror(-r));
	}
	struct store *queued = clip_steal(s);
	if (rc->tail != NULL)
		rc->tail->next = queued;
	else
		rc->head = queued;
	rc->tail = queued;
	rc->queued++;
	pthread_cond_signal(&rc->queue_cond);
	pthread_mutex_unlock(&rc->queue_lock);
	return 0;
}

static void redis_stats(void *self, struct clip_rcache_stats *out)
{
	struct redis_cache *rc = self;
	*out = (struct clip_rcache_stats){
		.hits = CLIP_COUNTER_LOAD(rc->stats.hits),
		.misses = CLIP_COUNTER_LOAD(rc->stats.misses),
		.bytes_read = CLIP_COUNTER_LOAD(rc->stats.bytes_read),
		.errors = CLIP_COUNTER_LOAD(rc->stats.errors),
		.stores = CLIP_COUNTER_LOAD(rc->stats.stores),
		.stores_skipped = CLIP_COUNTER_LOAD(rc->stats.stores_skipped),
		.stores_dropped = CLIP_COUNTER_LOAD(rc->stats.stores_dropped),
		.redirects = CLIP_COUNTER_LOAD(rc->stats.redirects),
	};
}

static void redis_free(struct redis_cache *rc)
{
	while (rc->head != NULL) {
		struct store *s = rc->head;
		rc->head = s->next;
		free(s);
	}
	for (size_t i = 0; i < rc->node_count; i++)
		redis_node_free(rc->nodes[i]);
	free(rc->nodes);
	pthread_rwlock_destroy(&rc->map_lock);
	pthread_cond_destroy(&rc->room);
	pthread_cond_destroy(&rc->queue_cond);
	pthread_mutex_destroy(&rc->queue_lock);
	if (rc->password != NULL) {
		explicit_bzero(rc->password, strlen(rc->password));
		free(rc->password);
	}
	free(rc->user);
	free(rc);
}

static void redis_close(void *self)
{
	struct redis_cache *rc = self;
	pthread_mutex_lock(&rc->queue_lock);
	unsigned started = rc->nwriters;
	rc->stopping = true;
	atomic_store(&rc->close_deadline, redis_now_us() + CLOSE_DRAIN_MS * 1000u);
	pthread_cond_broadcast(&rc->queue_cond);
	pthread_cond_broadcast(&rc->room);
	pthread_mutex_unlock(&rc->queue_lock);
	for (unsigned i = 0; i < started; i++)
		pthread_join(rc->writers[i], NULL);
	redis_free(rc);
}

static const struct clip_rcache_ops redis_ops = {
	.get = redis_get,
	.put = redis_put,
	.stats = redis_stats,
	.close = redis_close,
};

/* ---- open ------------------------------------------------------------------ */

/* A database number: digits only, at most INT_MAX. */
static int parse_db(const char *s, int *db)
{
	long long v = 0;
	if (*s == '\0')
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || (v = v * 10 + (*s - '0')) > INT_MAX)
			return -EINVAL;
	}
	*db = (int)v;
	return 0;
}

int clip_rcache_redis_open(const struct clip_rcache_url *url,
			   const struct clip_rcache_backend_options *options,
			   const struct clip_rcache_ops **ops, void **self, struct clip_err *err)
{
	int db = 0;
	const char *socket_path = NULL;
	if (strcmp(url->scheme, "unix") == 0) {
		if (url->host != NULL || url->port != -1)
			return clip_err_set(err, EINVAL,
					    "remote cache URL '%s': a unix:// URL names no host "
					    "(unix:///path/to/redis.sock)",
					    url->display);
		if (url->path == NULL || url->path[0] != '/' || url->path[1] == '\0')
			return clip_err_set(err, EINVAL,
					    "remote cache URL '%s': no socket path "
					    "(unix:///path/to/redis.sock)",
					    url->display);
		if (url->query != NULL &&
		    (strncmp(url->query, "db=", 3) != 0 || parse_db(url->query + 3, &db) < 0))
			return clip_err_set(err, EINVAL,
					    "remote cache URL '%s': the only query is ?db=N",
					    url->display);
		socket_path = url->path;
	} else {
		if (url->host == NULL)
			return clip_err_set(err, EINVAL, "remote cache URL '%s': no host",
					    url->display);
		if (url->query != NULL)
			return clip_err_set(err, EINVAL,
					    "remote cache URL '%s': unexpected query "
					    "(redis://host:port/db)",
					    url->display);
		if (url->path != NULL && strcmp(url->path, "/") != 0 &&
		    parse_db(url->path + 1, &db) < 0)
			return clip_err_set(err, EINVAL,
					    "remote cache URL '%s': the path must be a database "
					    "number",
					    url->display);
	}

	struct redis_cache *rc = calloc(1, sizeof(*rc));
	if (rc == NULL)
		return clip_err_set(err, ENOMEM, "remote cache: out of memory");
	rc->timeout_us = (uint64_t)options->timeout_ms * 1000u;
	long store_ms = options->timeout_ms > STORE_TIMEOUT_MIN_MS ? options->timeout_ms
								   : STORE_TIMEOUT_MIN_MS;
	rc->store_timeout_us = (uint64_t)store_ms * 1000u;
	rc->connections = options->connections;
	rc->queue_max = options->queue_max;
	rc->db = db;
	pthread_rwlock_init(&rc->map_lock, NULL);
	pthread_mutex_init(&rc->queue_lock, NULL);
	pthread_cond_init(&rc->queue_cond, NULL);
	pthread_condattr_t monotonic;
	pthread_condattr_init(&monotonic);
	pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
	pthread_cond_init(&rc->room, &monotonic);
	pthread_condattr_destroy(&monotonic);
	atomic_init(&rc->topology, TOPOLOGY_UNKNOWN);
	atomic_init(&rc->refresh_wanted, false);
	atomic_init(&rc->refresh_last, 0);
	atomic_init(&rc->close_deadline, UINT64_MAX);

	bool ok = (url->user == NULL || (rc->user = strdup(url->user)) != NULL) &&
		  (url->password == NULL || (rc->password = strdup(url->password)) != NULL);
	struct node *seed = NULL;
	if (ok) {
		const char *host = url->host ? url->host : "";
		seed = redis_node_new(host, strlen(host), url->port > 0 ? url->port : DEFAULT_PORT,
				      socket_path, rc->connections);
		rc->nodes = calloc(1, sizeof(*rc->nodes));
	}
	if (seed == NULL || rc->nodes == NULL) {
		if (seed != NULL)
			redis_node_free(seed);
		redis_free(rc);
		return clip_err_set(err, ENOMEM, "remote cache: out of memory");
	}
	rc->nodes[0] = seed;
	rc->node_count = rc->node_cap = 1;
	*ops = &redis_ops;
	*self = rc;
	return 0;
}
