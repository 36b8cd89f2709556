/* The remote cache against real Redis servers on 127.0.0.1, started here:
 * URL parsing and key format; round trips, absent keys, partial reads, SET NX,
 * concurrent readers on a small pool; a full store queue that drops without
 * blocking; a server killed (every call fails fast) and restarted (found
 * again), a server frozen (a get ends at its timeout); AUTH with a password
 * and with a user, wrong passwords never shown; a unix socket and database
 * numbers; a 3-shard Redis Cluster (tests/integration/tools/redis-cluster):
 * keys spread over the shards, and ASK and MOVED redirections followed while a
 * slot migrates. Exits 77 when redis-server is not installed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "clip/rcache.h"
#include "testutil.h"

#define MAX_ARGS 32

/* ---- helpers ------------------------------------------------------------- */

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Run argv with stdout and stderr to /dev/null: the exit status, -1 when it
 * could not run. */
static int run(const char *const argv[])
{
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		if (null >= 0) {
			dup2(null, 1);
			dup2(null, 2);
		}
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	int status;
	if (waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		fail_msg("free_port: %s", strerror(errno));
	close(fd);
	return ntohs(a.sin_port);
}

/* Threads of this process, from /proc/self/task. */
static int thread_count(void)
{
	DIR *d = opendir("/proc/self/task");
	if (d == NULL)
		fail_msg("/proc/self/task: %s", strerror(errno));
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* ---- servers ------------------------------------------------------------- */

struct server {
	pid_t pid;
	int port;
	char *dir; /* owned: its data, log and socket */
	char sock[512];
	const char *args[MAX_ARGS]; /* extra arguments, borrowed */
	size_t nargs;
};

/* Whether something on `port` answers a PING (PONG, or an error such as
 * NOAUTH: a server that is up either way). */
static bool answers(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };
	char buf[64];
	bool ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0 &&
		  connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
		  send(fd, "PING\r\n", 6, MSG_NOSIGNAL) == 6 && recv(fd, buf, sizeof(buf), 0) > 0 &&
		  (buf[0] == '+' || buf[0] == '-');
	if (fd >= 0)
		close(fd);
	return ok;
}

static void server_init(struct server *s)
{
	memset(s, 0, sizeof(*s));
	s->pid = -1;
	s->dir = tt_tmpdir();
	snprintf(s->sock, sizeof(s->sock), "%s/redis.sock", s->dir);
}

static void server_arg(struct server *s, const char *arg)
{
	assert_true(s->nargs < MAX_ARGS);
	s->args[s->nargs++] = arg;
}

/* Start redis-server on s->port: whether it answers within 5 s. */
static bool server_spawn(struct server *s)
{
	char port[16], log[600];
	snprintf(port, sizeof(port), "%d", s->port);
	snprintf(log, sizeof(log), "%s/redis-%d.log", s->dir, s->port);
	const char *argv[MAX_ARGS + 20] = {
		"redis-server", "--port", port,	   "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no",	  "--dir", s->dir,   "--logfile", log,	    "--daemonize",
		"no",
	};
	size_t argc = 15;
	for (size_t i = 0; i < s->nargs; i++)
		argv[argc++] = s->args[i];
	argv[argc] = NULL;

	s->pid = fork();
	if (s->pid < 0)
		fail_msg("fork: %s", strerror(errno));
	if (s->pid == 0) {
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
		}
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	for (double end = now_ms() + 5000; now_ms() < end; sleep_ms(20)) {
		int status;
		if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
			s->pid = -1;
			return false;
		}
		if (answers(s->port))
			return true;
	}
	kill(s->pid, SIGKILL);
	waitpid(s->pid, NULL, 0);
	s->pid = -1;
	return false;
}

/* Start on a free port (another one if a race took it). */
static void server_launch(struct server *s)
{
	for (int attempt = 0; attempt < 5; attempt++) {
		s->port = free_port();
		if (server_spawn(s))
			return;
	}
	fail_msg("redis-server does not start (logs in %s)", s->dir);
}

/* Kill with `sig`, reaping it unless it was only stopped or continued. */
static void server_signal(struct server *s, int sig)
{
	assert_true(s->pid > 0);
	assert_int_equal(kill(s->pid, sig), 0);
	if (sig != SIGSTOP && sig != SIGCONT) {
		waitpid(s->pid, NULL, 0);
		s->pid = -1;
	}
}

static void server_free(struct server *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGKILL);
		waitpid(s->pid, NULL, 0);
	}
	if (s->dir != NULL) {
		tt_rm_rf(s->dir);
		free(s->dir);
	}
	free(s);
}

/* A command on a server of ours, outside of the code under test. */
static redisReply *direct(int port, const char *fmt, ...)
{
	redisContext *c = redisConnect("127.0.0.1", port);
	if (c == NULL || c->err)
		fail_msg("direct connection to %d: %s", port, c ? c->errstr : "out of memory");
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(c, fmt, ap);
	va_end(ap);
	if (r == NULL)
		fail_msg("direct command on %d: %s", port, c->errstr);
	redisFree(c);
	return r;
}

static long long direct_int(int port, const char *fmt, const char *arg)
{
	redisReply *r = direct(port, fmt, arg);
	if (r->type != REDIS_REPLY_INTEGER)
		fail_msg("%s on %d: %s", fmt, port, r->type == REDIS_REPLY_ERROR ? r->str : "?");
	long long v = r->integer;
	freeReplyObject(r);
	return v;
}

static void direct_ok(int port, const char *fmt, ...)
{
	redisContext *c = redisConnect("127.0.0.1", port);
	if (c == NULL || c->err)
		fail_msg("direct connection to %d failed", port);
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(c, fmt, ap);
	va_end(ap);
	if (r == NULL || r->type == REDIS_REPLY_ERROR)
		fail_msg("'%s' on %d: %s", fmt, port, r ? r->str : c->errstr);
	freeReplyObject(r);
	redisFree(c);
}

/* ---- the cache ----------------------------------------------------------- */

static struct clip_rcache *open_cache(const char *url, const struct clip_rcache_options *options)
{
	struct clip_err err = { 0 };
	struct clip_rcache *c = NULL;
	int r = clip_rcache_open(url, options, &c, &err);
	if (r != 0)
		fail_msg("open %s: %d %s", url, r, err.msg);
	return c;
}

static struct clip_rcache *open_server(const struct server *s, const char *suffix,
				       const struct clip_rcache_options *options)
{
	char url[256];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d%s", s->port, suffix);
	return open_cache(url, options);
}

static ssize_t get(struct clip_rcache *c, const char *key, void *buf, size_t len, uint64_t off,
		   struct clip_err *err)
{
	clip_err_clear(err);
	return c->ops->get(c->self, key, buf, len, off, err);
}

static int put(struct clip_rcache *c, const char *key, const void *data, size_t len)
{
	struct clip_err err = { 0 };
	return c->ops->put(c->self, key, data, len, 0, &err);
}

static struct clip_rcache_stats stats(struct clip_rcache *c)
{
	struct clip_rcache_stats s;
	c->ops->stats(c->self, &s);
	return s;
}

/* Stores done one way or another (written, skipped, dropped, failed). */
static uint64_t stores_done(struct clip_rcache *c)
{
	struct clip_rcache_stats s = stats(c);
	return s.stores + s.stores_skipped + s.stores_dropped + s.errors;
}

/* Wait (at most 5 s) until `n` stores are done. */
static void wait_stores(struct clip_rcache *c, uint64_t n)
{
	for (double end = now_ms() + 5000; stores_done(c) < n; sleep_ms(5))
		if (now_ms() > end)
			fail_msg("only %llu of %llu stores done after 5 s",
				 (unsigned long long)stores_done(c), (unsigned long long)n);
}

/* Put and wait until the store is done; the value must then read back. */
static void put_sync(struct clip_rcache *c, const char *key, const void *data, size_t len)
{
	uint64_t before = stores_done(c);
	assert_int_equal(put(c, key, data, len), 0);
	wait_stores(c, before + 1);
}

static void assert_value(struct clip_rcache *c, const char *key, const void *data, size_t len)
{
	struct clip_err err = { 0 };
	unsigned char *buf = malloc(len + 16);
	assert_non_null(buf);
	ssize_t n = get(c, key, buf, len + 16, 0, &err);
	if (n < 0)
		fail_msg("get %s: %zd %s", key, n, err.msg);
	assert_int_equal(n, len);
	assert_memory_equal(buf, data, len);
	free(buf);
}

/* ---- fixtures ------------------------------------------------------------- */

static int setup_server(void **state)
{
	struct server *s = malloc(sizeof(*s));
	server_init(s);
	server_launch(s);
	*state = s;
	return 0;
}

static int setup_auth_server(void **state)
{
	struct server *s = malloc(sizeof(*s));
	server_init(s);
	server_arg(s, "--requirepass");
	server_arg(s, "Default-Pw-17");
	server_arg(s, "--user");
	server_arg(s, "alice");
	server_arg(s, "on");
	server_arg(s, ">Alice-Pw-23");
	server_arg(s, "~*");
	server_arg(s, "+@all");
	server_launch(s);
	*state = s;
	return 0;
}

static int setup_unix_server(void **state)
{
	struct server *s = malloc(sizeof(*s));
	server_init(s);
	server_arg(s, "--unixsocket");
	server_arg(s, s->sock);
	server_arg(s, "--unixsocketperm");
	server_arg(s, "700");
	server_launch(s);
	*state = s;
	return 0;
}

static int teardown_server(void **state)
{
	server_free(*state);
	return 0;
}

/* ---- tests without a server --------------------------------------------- */

static void test_key_format(void **state)
{
	struct clip_rcache *c = open_cache("redis://127.0.0.1:1", NULL);
	char hex[65];
	memset(hex, 'a', 64);
	hex[64] = '\0';
	char buf[128];
	int n = clip_rcache_key(c, hex, 12, buf, sizeof(buf));
	assert_int_equal(n, 5 + 64 + 3);
	assert_string_equal(buf, "clip:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				 "aaaa:12");
	/* Exactly the length does not fit (no room for the NUL); one more does. */
	assert_int_equal(clip_rcache_key(c, hex, 12, buf, (size_t)n), -ENAMETOOLONG);
	assert_int_equal(clip_rcache_key(c, hex, 12, buf, (size_t)n + 1), n);
	assert_int_equal(clip_rcache_key(c, "ab", UINT64_MAX, buf, sizeof(buf)), 28);
	assert_string_equal(buf, "clip:ab:18446744073709551615");
	clip_rcache_close(c);

	struct clip_rcache_options o = { .key_prefix = "{team}/" };
	c = open_cache("redis://127.0.0.1:1", &o);
	assert_int_equal(clip_rcache_key(c, "cd", 0, buf, sizeof(buf)), 11);
	assert_string_equal(buf, "{team}/cd:0");
	clip_rcache_close(c);
}

static void test_url_errors(void **state)
{
	static const struct {
		const char *url, *why;
	} bad[] = {
		{ "", "empty" },
		{ "localhost:6379", "scheme://" },
		{ "127.0.0.1", "scheme://" },
		{ "http://127.0.0.1:80", "unsupported scheme 'http'" },
		{ "rediss://127.0.0.1:6380", "unsupported scheme 'rediss'" },
		{ "redis://", "no host" },
		{ "redis://:6379", "no host" },
		{ "redis://127.0.0.1:0", "port" },
		{ "redis://127.0.0.1:65536", "port" },
		{ "redis://127.0.0.1:63x79", "port" },
		{ "redis://127.0.0.1:", "port" },
		{ "redis://127.0.0.1:6379/x", "database number" },
		{ "redis://127.0.0.1:6379/1/2", "database number" },
		{ "redis://127.0.0.1:6379/-1", "database number" },
		{ "redis://127.0.0.1:6379/99999999999", "database number" },
		{ "redis://127.0.0.1:6379?db=1", "unexpected query" },
		{ "redis://::1:6379", "[brackets]" },
		{ "redis://[::1:6379", "unterminated" },
		{ "redis://[::1]x:6379", "junk" },
		{ "unix://", "no socket path" },
		{ "unix:///", "no socket path" },
		{ "unix://host/tmp/redis.sock", "names no host" },
		{ "unix://:6379/tmp/redis.sock", "names no host" },
		{ "unix:///tmp/redis.sock?db=x", "?db=N" },
		{ "unix:///tmp/redis.sock?timeout=1", "?db=N" },
		{ "unix:///tmp/re%zzdis.sock", "%-escape" },
		{ "redis://u%0:pw@127.0.0.1", "%-escape" },
		{ "redis://u:p%00w@127.0.0.1", "%-escape" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct clip_err err = { 0 };
		struct clip_rcache *c = NULL;
		int r = clip_rcache_open(bad[i].url, NULL, &c, &err);
		if (r != -EINVAL || strstr(err.msg, bad[i].why) == NULL)
			fail_msg("'%s': %d '%s', expected -EINVAL with '%s'", bad[i].url, r,
				 err.msg, bad[i].why);
		assert_null(c);
	}

	/* The password never shows, even in URLs that do not parse. */
	static const char *const secret[] = {
		"redis://user:Sekr3t-77@127.0.0.1:notaport",
		"redis://:Sekr3t-77@127.0.0.1:6379/db",
		"redis://Sekr3t-77@:6379",
		"redis://user:Sekr/3t-77@127.0.0.1:6379",
		"redis://user:Sekr?3t-77@127.0.0.1:6379",
		"rediss://user:Sekr3t-77@127.0.0.1:6379",
		"user:Sekr3t-77@127.0.0.1:6379",
		"unix://:Sekr3t-77@host/tmp/sock",
	};
	for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++) {
		struct clip_err err = { 0 };
		struct clip_rcache *c = NULL;
		assert_int_equal(clip_rcache_open(secret[i], NULL, &c, &err), -EINVAL);
		if (strstr(err.msg, "Sekr") != NULL || strstr(err.msg, "3t-77") != NULL)
			fail_msg("password shown: %s", err.msg);
		assert_non_null(strstr(err.msg, "***"));
	}

	struct clip_rcache_options negative = { .timeout_ms = -1 };
	struct clip_err err = { 0 };
	struct clip_rcache *c = NULL;
	assert_int_equal(clip_rcache_open("redis://127.0.0.1", &negative, &c, &err), -EINVAL);
}

/* Valid URLs open without a server, without connecting and without starting
 * a thread (the FUSE daemon forks after opening); a get on a port where
 * nothing listens fails at once, and the next ones without trying. */
static void test_open_without_server(void **state)
{
	static const char *const good[] = {
		"redis://127.0.0.1",
		"redis://localhost:6390/",
		"REDIS://127.0.0.1:6390/15",
		"redis://[::1]:6390/2",
		"redis://:pw@127.0.0.1:6390",
		"redis://pw-only@127.0.0.1:6390",
		"redis://user:p%40ss@127.0.0.1:6390",
		"unix:///tmp/no-such-dir/redis.sock",
		"unix:///tmp/no-such-dir/redis.sock?db=3",
		"unix://:pw@/tmp/no-such-dir/redis.sock",
	};
	int threads = thread_count();
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct clip_rcache *c = open_cache(good[i], NULL);
		assert_int_equal(thread_count(), threads);
		clip_rcache_close(c);
	}

	char url[64];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d", free_port());
	struct clip_rcache *c = open_cache(url, NULL);
	struct clip_err err = { 0 };
	char buf[16];
	double t0 = now_ms();
	assert_int_equal(get(c, "k", buf, sizeof(buf), 0, &err), -ECONNREFUSED);
	assert_true(now_ms() - t0 < 100);
	assert_non_null(strstr(err.msg, "127.0.0.1"));
	assert_non_null(strstr(err.msg, "refused"));
	/* No attempt at all (a scheduling hiccup aside). */
	for (int i = 0; i < 100; i++) {
		t0 = now_ms();
		assert_int_equal(get(c, "k", buf, sizeof(buf), 0, &err), -ECONNREFUSED);
		assert_true(now_ms() - t0 < 20);
	}
	assert_non_null(strstr(err.msg, "marked down"));
	assert_int_equal(stats(c).errors, 101);
	assert_int_equal(thread_count(), threads);

	/* The first put starts the store threads (half the 4 connections); the
	 * store is dropped. */
	assert_int_equal(put(c, "k", "v", 1), 0);
	assert_int_equal(thread_count(), threads + 2);
	wait_stores(c, 101 + 1);
	assert_int_equal(stats(c).stores_dropped, 1);
	clip_rcache_close(c);
	assert_int_equal(thread_count(), threads);
}

/* ---- one standalone server ------------------------------------------------ */

/* For the tests of what comes back, not of how fast: the default 50 ms
 * bound on a get is too tight for a 1 MiB value on a loaded machine under
 * the sanitizers. The tests of timeouts below keep the default. */
static const struct clip_rcache_options patient = { .timeout_ms = 2000 };

static void test_round_trip(void **state)
{
	struct server *s = *state;
	struct clip_rcache *c = open_server(s, "", &patient);
	size_t len = 1u << 20;
	unsigned char *chunk = malloc(len);
	tt_fill_random(chunk, len, 1);
	char key[128];
	assert_true(clip_rcache_key(c, "0123abcd", 7, key, sizeof(key)) > 0);

	put_sync(c, key, chunk, len);
	struct clip_rcache_stats st = stats(c);
	assert_int_equal(st.stores, 1);
	assert_value(c, key, chunk, len);
	st = stats(c);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.bytes_read, len);
	assert_int_equal(st.errors, 0);

	/* What the server holds, read directly. */
	redisReply *r = direct(s->port, "GET %s", key);
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	assert_int_equal(r->len, len);
	assert_memory_equal(r->str, chunk, len);
	freeReplyObject(r);

	/* Binary bytes and an empty value. */
	const char bin[] = "a\0b\r\n$3\r\n";
	put_sync(c, "clip:bin", bin, sizeof(bin));
	assert_value(c, "clip:bin", bin, sizeof(bin));
	free(chunk);
	clip_rcache_close(c);
}

static void test_absent(void **state)
{
	struct server *s = *state;
	struct clip_rcache *c = open_server(s, "", &patient);
	struct clip_err err = { 0 };
	char buf[64];
	assert_int_equal(get(c, "clip:nothing:0", buf, sizeof(buf), 0, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "clip:nothing:0"));
	assert_int_equal(get(c, "clip:nothing:0", buf, sizeof(buf), 1000, &err), -ENOENT);
	assert_int_equal(get(c, "clip:nothing:0", buf, 0, 0, &err), -ENOENT);
	struct clip_rcache_stats st = stats(c);
	assert_int_equal(st.misses, 3);
	assert_int_equal(st.hits, 0);
	assert_int_equal(st.errors, 0);

	/* A key of another type is an error, not a miss. */
	direct_ok(s->port, "LPUSH clip:list x");
	assert_int_equal(get(c, "clip:list", buf, sizeof(buf), 0, &err), -EIO);
	assert_non_null(strstr(err.msg, "WRONGTYPE"));
	clip_rcache_close(c);
}

static void test_partial(void **state)
{
	struct server *s = *state;
	struct clip_rcache *c = open_server(s, "", &patient);
	unsigned char value[1000], buf[2000];
	tt_fill_random(value, sizeof(value), 2);
	put_sync(c, "clip:partial", value, sizeof(value));
	struct clip_err err = { 0 };

	assert_int_equal(get(c, "clip:partial", buf, 50, 100, &err), 50);
	assert_memory_equal(buf, value + 100, 50);
	assert_int_equal(get(c, "clip:partial", buf, 1, 0, &err), 1);
	assert_int_equal(buf[0], value[0]);
	assert_int_equal(get(c, "clip:partial", buf, 1, 999, &err), 1);
	assert_int_equal(buf[0], value[999]);
	/* Shorter than asked: fewer bytes. */
	assert_int_equal(get(c, "clip:partial", buf, 50, 990, &err), 10);
	assert_memory_equal(buf, value + 990, 10);
	assert_int_equal(get(c, "clip:partial", buf, sizeof(buf), 0, &err), 1000);
	assert_memory_equal(buf, value, 1000);
	/* Present but nothing at that offset. */
	assert_int_equal(get(c, "clip:partial", buf, 10, 1000, &err), 0);
	assert_int_equal(get(c, "clip:partial", buf, 10, 1u << 30, &err), 0);
	assert_int_equal(get(c, "clip:partial", buf, 0, 0, &err), 0);
	/* Offsets Redis cannot take. */
	assert_int_equal(get(c, "clip:partial", buf, 10, UINT64_MAX - 5, &err), -EINVAL);
	assert_int_equal(stats(c).misses, 0);
	clip_rcache_close(c);
}

static void test_nx(void **state)
{
	struct server *s = *state;
	struct clip_rcache *c = open_server(s, "", &patient);
	unsigned char a[4096], b[4096];
	tt_fill_random(a, sizeof(a), 3);
	tt_fill_random(b, sizeof(b), 4);
	put_sync(c, "clip:nx", a, sizeof(a));
	put_sync(c, "clip:nx", b, sizeof(b));
	put_sync(c, "clip:nx", b, 10);
	struct clip_rcache_stats st = stats(c);
	assert_int_equal(st.stores, 1);
	assert_int_equal(st.stores_skipped, 2);
	assert_value(c, "clip:nx", a, sizeof(a));
	clip_rcache_close(c);
}

struct reader {
	struct clip_rcache *cache;
	atomic_int *failures;
	unsigned seed;
};

#define CONCURRENT_KEYS 4
#define VALUE_LEN	(200u << 10)

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	unsigned char *want = malloc(VALUE_LEN), *buf = malloc(VALUE_LEN);
	uint64_t rng = r->seed;
	for (int i = 0; i < 60; i++) {
		unsigned k = (unsigned)(tt_rand(&rng) % CONCURRENT_KEYS);
		size_t off = (size_t)(tt_rand(&rng) % VALUE_LEN);
		size_t len = (size_t)(tt_rand(&rng) % (VALUE_LEN - off)) + 1;
		char key[32];
		snprintf(key, sizeof(key), "clip:conc:%u", k);
		tt_fill_random(want, VALUE_LEN, 100 + k);
		struct clip_err err = { 0 };
		/* A pool of two connections for eight threads: a generous
		 * timeout, since waiting for a connection counts in it. */
		ssize_t n = r->cache->ops->get(r->cache->self, key, buf, len, off, &err);
		if (n != (ssize_t)len || memcmp(buf, want + off, len) != 0) {
			fprintf(stderr, "reader: %s [%zu, +%zu): %zd %s\n", key, off, len, n,
				err.msg);
			atomic_fetch_add(r->failures, 1);
		}
	}
	free(want);
	free(buf);
	return NULL;
}

static void test_concurrent(void **state)
{
	struct server *s = *state;
	struct clip_rcache_options o = { .connections = 2, .timeout_ms = 2000 };
	struct clip_rcache *c = open_server(s, "", &o);
	unsigned char *value = malloc(VALUE_LEN);
	for (unsigned k = 0; k < CONCURRENT_KEYS; k++) {
		char key[32];
		snprintf(key, sizeof(key), "clip:conc:%u", k);
		tt_fill_random(value, VALUE_LEN, 100 + k);
		put_sync(c, key, value, VALUE_LEN);
	}
	free(value);
	atomic_int failures = 0;
	pthread_t threads[8];
	struct reader readers[8];
	for (unsigned i = 0; i < 8; i++) {
		readers[i] = (struct reader){ .cache = c, .failures = &failures, .seed = i };
		assert_int_equal(pthread_create(&threads[i], NULL, reader_main, &readers[i]), 0);
	}
	for (unsigned i = 0; i < 8; i++)
		pthread_join(threads[i], NULL);
	assert_int_equal(atomic_load(&failures), 0);
	assert_int_equal(stats(c).hits, 8 * 60);
	/* The pool holds two connections, no more (the third is ours). */
	redisReply *r = direct(s->port, "INFO clients");
	const char *clients = strstr(r->str, "connected_clients:");
	assert_non_null(clients);
	assert_int_equal(atoi(clients + strlen("connected_clients:")), 3);
	freeReplyObject(r);
	clip_rcache_close(c);
}

/* ---- servers of their own ------------------------------------------------- */

/* A frozen server: the queue fills, the extra puts are dropped at once. */
static void test_queue_full(void **state)
{
	struct server *s = *state;
	struct clip_rcache_options o = { .queue_max = 4 };
	struct clip_rcache *c = open_server(s, "", &o);
	server_signal(s, SIGSTOP);

	size_t len = 64u << 10;
	unsigned char *value = malloc(len);
	tt_fill_random(value, len, 5);
	int queued = 0, dropped = 0;
	double slowest = 0;
	for (int i = 0; i < 20; i++) {
		char key[32];
		snprintf(key, sizeof(key), "clip:q:%d", i);
		struct clip_err err = { 0 };
		double t0 = now_ms();
		int r = c->ops->put(c->self, key, value, len, 0, &err);
		double took = now_ms() - t0;
		slowest = took > slowest ? took : slowest;
		if (r == 0) {
			queued++;
		} else {
			assert_int_equal(r, -EAGAIN);
			assert_non_null(strstr(err.msg, "queued"));
			dropped++;
		}
	}
	/* Four wait; each of the two store threads may have taken one more,
	 * stuck on the server. */
	assert_in_range(queued, 4, 6);
	assert_int_equal(dropped, 20 - queued);
	assert_true(slowest < 20);
	assert_int_equal(stats(c).stores_dropped, (uint64_t)dropped);

	/* The frozen server costs the stores at most their timeout, then they
	 * are dropped without trying while it is marked down. */
	wait_stores(c, 20);
	assert_int_equal(stats(c).stores, 0);
	server_signal(s, SIGCONT);
	double t0 = now_ms();
	clip_rcache_close(c);
	assert_true(now_ms() - t0 < 1500);
	free(value);
}

struct waiting_put {
	struct clip_rcache *cache;
	const void *value;
	size_t len;
	long wait_ms;
	int result;
	atomic_bool done;
};

static void *waiting_put_main(void *arg)
{
	struct waiting_put *w = arg;
	struct clip_err err = { 0 };
	w->result = w->cache->ops->put(w->cache->self, "clip:bp:waiter", w->value, w->len,
				       w->wait_ms, &err);
	atomic_store(&w->done, true);
	return NULL;
}

/* A full queue pushes back: a put that may wait gets room once the server
 * takes stores again, one whose wait runs out is dropped then, and the last
 * quarter of the queue is kept for the puts that may not wait. */
static void test_backpressure(void **state)
{
	struct server *s = *state;
	/* Stores may take 3 s: the frozen server is not given up on meanwhile. */
	struct clip_rcache_options o = { .queue_max = 8, .timeout_ms = 3000 };
	struct clip_rcache *c = open_server(s, "", &o);
	unsigned char value[4096];
	tt_fill_random(value, sizeof(value), 11);
	server_signal(s, SIGSTOP);

	/* Background puts fill three quarters of the queue (and the two store
	 * threads, each stuck on one store), then wait in vain. */
	int background = 0, r = 0;
	for (int i = 0; i < 12 && r == 0; i++) {
		char key[32];
		snprintf(key, sizeof(key), "clip:bp:bg%d", i);
		struct clip_err err = { 0 };
		if ((r = c->ops->put(c->self, key, value, sizeof(value), 50, &err)) == 0)
			background++;
		sleep_ms(5); /* let a store thread take what it can */
	}
	assert_int_equal(r, -EAGAIN);
	assert_in_range(background, 6, 8);
	/* The rest is for puts that may not wait: two more, no more. */
	int foreground = 0;
	for (int i = 0; i < 4; i++) {
		char key[32];
		snprintf(key, sizeof(key), "clip:bp:fg%d", i);
		if (put(c, key, value, sizeof(value)) == 0)
			foreground++;
	}
	assert_int_equal(foreground, 2);

	struct clip_err err = { 0 };
	double t0 = now_ms();
	assert_int_equal(c->ops->put(c->self, "clip:bp:late", value, sizeof(value), 100, &err),
			 -EAGAIN);
	double took = now_ms() - t0;
	assert_true(took >= 95 && took < 1000);
	assert_non_null(strstr(err.msg, "dropped"));

	struct waiting_put w = {
		.cache = c, .value = value, .len = sizeof(value), .wait_ms = 10000
	};
	pthread_t thread;
	assert_int_equal(pthread_create(&thread, NULL, waiting_put_main, &w), 0);
	sleep_ms(300);
	assert_false(atomic_load(&w.done)); /* still waiting for room */
	server_signal(s, SIGCONT);
	pthread_join(thread, NULL);
	assert_int_equal(w.result, 0);
	/* The background put that waited in vain, two foreground ones, the late one. */
	assert_int_equal(stats(c).stores_dropped, 1 + 2 + 1);

	clip_rcache_close(c);
	/* Everything queued is stored, and only that. */
	assert_int_equal(direct_int(s->port, "DBSIZE", NULL), background + foreground + 1);
	redisReply *stored = direct(s->port, "GET clip:bp:waiter");
	assert_int_equal(stored->type, REDIS_REPLY_STRING);
	assert_memory_equal(stored->str, value, sizeof(value));
	freeReplyObject(stored);
}

/* close() waits for the queue, but not for ever. */
static void test_close_drains(void **state)
{
	struct server *s = *state;
	struct clip_rcache_options o = { .queue_max = 256 };
	struct clip_rcache *c = open_server(s, "", &o);
	unsigned char value[1000];
	tt_fill_random(value, sizeof(value), 6);
	for (int i = 0; i < 200; i++) {
		char key[32];
		snprintf(key, sizeof(key), "clip:drain:%d", i);
		assert_int_equal(put(c, key, value, sizeof(value)), 0);
	}
	clip_rcache_close(c);
	assert_int_equal(direct_int(s->port, "DBSIZE", NULL), 200);

	/* Frozen server: close does not hang on it (the first store times out,
	 * the server is marked down, the others are dropped). */
	c = open_server(s, "", &o);
	server_signal(s, SIGSTOP);
	for (int i = 0; i < 200; i++) {
		char key[32];
		snprintf(key, sizeof(key), "clip:drain2:%d", i);
		assert_int_equal(put(c, key, value, sizeof(value)), 0);
	}
	double t0 = now_ms();
	clip_rcache_close(c);
	double took = now_ms() - t0;
	server_signal(s, SIGCONT);
	assert_true(took < 1500);

	/* A store that could wait longer (a 3 s timeout) gives up too, about a
	 * second after close() began. */
	struct clip_rcache_options slow = { .timeout_ms = 3000 };
	c = open_server(s, "", &slow);
	server_signal(s, SIGSTOP);
	assert_int_equal(put(c, "clip:drain3", value, sizeof(value)), 0);
	sleep_ms(100);
	t0 = now_ms();
	clip_rcache_close(c);
	took = now_ms() - t0;
	server_signal(s, SIGCONT);
	print_message("close with a store stuck on a frozen server: %.0f ms\n", took);
	assert_true(took >= 900 && took < 1300);
}

static void test_server_killed(void **state)
{
	struct server *s = *state;
	struct clip_rcache *c = open_server(s, "", NULL);
	unsigned char value[5000], buf[5000];
	tt_fill_random(value, sizeof(value), 7);
	put_sync(c, "clip:kill", value, sizeof(value));
	assert_value(c, "clip:kill", value, sizeof(value));

	server_signal(s, SIGKILL);
	struct clip_err err = { 0 };
	double slowest = 0, end = now_ms() + 1500;
	int calls = 0;
	while (now_ms() < end) {
		double t0 = now_ms();
		ssize_t r = get(c, "clip:kill", buf, sizeof(buf), 0, &err);
		double took = now_ms() - t0;
		slowest = took > slowest ? took : slowest;
		if (r >= 0 || r == -ENOENT)
			fail_msg("get from a dead server: %zd", r);
		assert_true(err.msg[0] != '\0');
		/* Stores while down: queued or dropped, never waited for. */
		t0 = now_ms();
		int p = put(c, "clip:kill2", value, sizeof(value));
		assert_true(p == 0 || p == -EAGAIN);
		took = now_ms() - t0;
		slowest = took > slowest ? took : slowest;
		calls++;
		sleep_ms(2);
	}
	print_message("dead server: %d calls, slowest %.2f ms\n", calls, slowest);
	assert_true(slowest < 100);
	assert_true(calls > 100);

	/* Back (empty: no persistence): found again within the retry interval. */
	assert_true(server_spawn(s));
	double t0 = now_ms(), took = 0;
	ssize_t r;
	for (;;) {
		double t1 = now_ms();
		r = get(c, "clip:kill", buf, sizeof(buf), 0, &err);
		took = now_ms() - t1 > took ? now_ms() - t1 : took;
		if (r == -ENOENT || now_ms() - t0 > 3000)
			break;
		sleep_ms(10);
	}
	print_message("restarted server: found after %.0f ms, slowest call %.2f ms\n",
		      now_ms() - t0, took);
	assert_int_equal(r, -ENOENT);
	assert_true(took < 100);
	put_sync(c, "clip:kill", value, sizeof(value));
	assert_value(c, "clip:kill", value, sizeof(value));
	clip_rcache_close(c);
}

/* A server restarted while the cache was idle: its pooled connections are
 * dead, yet the next get succeeds (on a fresh connection). */
static void test_server_restarted(void **state)
{
	struct server *s = *state;
	struct clip_rcache *c = open_server(s, "", NULL);
	unsigned char value[100], buf[100];
	tt_fill_random(value, sizeof(value), 10);
	put_sync(c, "clip:restart", value, sizeof(value));
	assert_value(c, "clip:restart", value, sizeof(value));

	server_signal(s, SIGKILL);
	assert_true(server_spawn(s));
	struct clip_err err = { 0 };
	assert_int_equal(get(c, "clip:restart", buf, sizeof(buf), 0, &err), -ENOENT);
	put_sync(c, "clip:restart", value, sizeof(value));
	assert_int_equal(stats(c).stores, 2);
	assert_value(c, "clip:restart", value, sizeof(value));
	assert_int_equal(stats(c).errors, 0);
	clip_rcache_close(c);
}

/* A server that accepts but does not answer: a get ends at its timeout, the
 * next ones fail without waiting, and it is used again once it answers. */
static void test_server_frozen(void **state)
{
	struct server *s = *state;
	struct clip_rcache_options o = { .timeout_ms = 50 };
	struct clip_rcache *c = open_server(s, "", &o);
	unsigned char value[100], buf[100];
	tt_fill_random(value, sizeof(value), 8);
	put_sync(c, "clip:frozen", value, sizeof(value));

	server_signal(s, SIGSTOP);
	struct clip_err err = { 0 };
	double t0 = now_ms();
	assert_int_equal(get(c, "clip:frozen", buf, sizeof(buf), 0, &err), -ETIMEDOUT);
	double took = now_ms() - t0;
	print_message("frozen server: get failed after %.1f ms\n", took);
	assert_true(took >= 45 && took < 100);
	assert_non_null(strstr(err.msg, "50 ms"));
	t0 = now_ms();
	assert_int_equal(get(c, "clip:frozen", buf, sizeof(buf), 0, &err), -ETIMEDOUT);
	assert_true(now_ms() - t0 < 20);
	assert_non_null(strstr(err.msg, "marked down"));

	server_signal(s, SIGCONT);
	t0 = now_ms();
	ssize_t r;
	while ((r = get(c, "clip:frozen", buf, sizeof(buf), 0, &err)) < 0 && now_ms() - t0 < 3000)
		sleep_ms(10);
	assert_int_equal(r, sizeof(value));
	assert_memory_equal(buf, value, sizeof(value));
	clip_rcache_close(c);
}

static void expect_denied(struct server *s, const char *userinfo, const char *secret,
			  const char *why)
{
	char url[256];
	snprintf(url, sizeof(url), "redis://%s127.0.0.1:%d", userinfo, s->port);
	struct clip_rcache *c = open_cache(url, NULL);
	struct clip_err err = { 0 };
	char buf[8];
	for (int i = 0; i < 2; i++) {
		assert_int_equal(get(c, "clip:auth", buf, sizeof(buf), 0, &err), -EACCES);
		if (strstr(err.msg, why) == NULL)
			fail_msg("'%s' not in: %s", why, err.msg);
		if (secret != NULL && strstr(err.msg, secret) != NULL)
			fail_msg("password shown: %s", err.msg);
	}
	assert_int_equal(put(c, "clip:auth", "x", 1), 0);
	clip_rcache_close(c);
}

static void test_auth(void **state)
{
	struct server *s = *state;
	char url[256];
	snprintf(url, sizeof(url), "redis://:Default-Pw-17@127.0.0.1:%d", s->port);
	struct clip_rcache *c = open_cache(url, NULL);
	put_sync(c, "clip:auth", "secret data", 11);
	assert_int_equal(stats(c).stores, 1);
	assert_value(c, "clip:auth", "secret data", 11);
	clip_rcache_close(c);

	/* A user and its password (percent-escaped here: '-' is %2D). */
	snprintf(url, sizeof(url), "redis://alice:Alice%%2DPw-23@127.0.0.1:%d", s->port);
	c = open_cache(url, NULL);
	assert_value(c, "clip:auth", "secret data", 11);
	clip_rcache_close(c);

	expect_denied(s, ":Wrong-Pw-31@", "Wrong-Pw-31", "AUTH failed");
	expect_denied(s, "Wrong-Pw-31@", "Wrong-Pw-31", "AUTH failed");
	expect_denied(s, "alice:Wrong-Pw-31@", "Wrong-Pw-31", "AUTH as user alice failed");
	expect_denied(s, "", NULL, "NOAUTH");
}

static void test_unix_socket_and_db(void **state)
{
	struct server *s = *state;
	char url[700];
	snprintf(url, sizeof(url), "unix://%s?db=3", s->sock);
	struct clip_rcache *c = open_cache(url, NULL);
	unsigned char value[3000];
	tt_fill_random(value, sizeof(value), 9);
	put_sync(c, "clip:unix", value, sizeof(value));
	assert_int_equal(stats(c).stores, 1);
	assert_value(c, "clip:unix", value, sizeof(value));
	clip_rcache_close(c);

	/* In database 3, not 0. */
	redisReply *r = direct(s->port, "EXISTS clip:unix");
	assert_int_equal(r->integer, 0);
	freeReplyObject(r);
	c = open_server(s, "/3", NULL);
	assert_value(c, "clip:unix", value, sizeof(value));
	clip_rcache_close(c);
	c = open_server(s, "/", NULL);
	struct clip_err err = { 0 };
	char buf[8];
	assert_int_equal(get(c, "clip:unix", buf, sizeof(buf), 0, &err), -ENOENT);
	clip_rcache_close(c);

	/* A socket that is not there. */
	snprintf(url, sizeof(url), "unix://%s.missing", s->sock);
	c = open_cache(url, NULL);
	/* Not -ENOENT: that would read as a missing key. */
	assert_int_equal(get(c, "clip:unix", buf, sizeof(buf), 0, &err), -ECONNREFUSED);
	assert_non_null(strstr(err.msg, "connect: No such file"));
	assert_int_equal(stats(c).misses, 0);
	assert_int_equal(stats(c).errors, 1);
	clip_rcache_close(c);

	/* A database the server does not have. */
	c = open_server(s, "/999", NULL);
	assert_int_equal(get(c, "clip:unix", buf, sizeof(buf), 0, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "SELECT 999"));
	clip_rcache_close(c);
}

/* ---- cluster -------------------------------------------------------------- */

struct cluster {
	char *dir;
	char script[4096];
	int ports[3];
};

/* tests/integration/tools/redis-cluster: from $CLIP_SOURCE_ROOT, or next to
 * this file (__FILE__ is relative to the build directory, two levels above
 * $CLIP_TEST_TMPDIR, under meson). */
static void find_script(char *out, size_t size)
{
	const char *root = getenv("CLIP_SOURCE_ROOT");
	if (root != NULL) {
		snprintf(out, size, "%s/tests/integration/tools/redis-cluster", root);
		if (access(out, X_OK) == 0)
			return;
	}
	char file[4096];
	snprintf(file, sizeof(file), "%s", __FILE__);
	const char *dir = dirname(file);
	const char *tmp = getenv("CLIP_TEST_TMPDIR");
	if (dir[0] != '/' && tmp != NULL && tmp[0] != '\0')
		snprintf(out, size, "%s/../../%s/../integration/tools/redis-cluster", tmp, dir);
	else
		snprintf(out, size, "%s/../integration/tools/redis-cluster", dir);
	if (access(out, X_OK) != 0)
		fail_msg("redis-cluster script not found (set CLIP_SOURCE_ROOT): %s", out);
}

static int setup_cluster(void **state)
{
	struct cluster *cl = calloc(1, sizeof(*cl));
	find_script(cl->script, sizeof(cl->script));
	cl->dir = tt_tmpdir();
	const char *start[] = { cl->script, "start", cl->dir, NULL };
	if (run(start) != 0) {
		tt_rm_rf(cl->dir);
		fail_msg("%s start failed", cl->script);
	}
	char path[4200];
	snprintf(path, sizeof(path), "%s/ports", cl->dir);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%d %d %d", &cl->ports[0], &cl->ports[1], &cl->ports[2]), 3);
	fclose(f);
	*state = cl;
	return 0;
}

static int teardown_cluster(void **state)
{
	struct cluster *cl = *state;
	const char *stop[] = { cl->script, "stop", cl->dir, NULL };
	int r = run(stop);
	tt_rm_rf(cl->dir);
	free(cl->dir);
	free(cl);
	return r == 0 ? 0 : -1;
}

static char *node_id(int port)
{
	redisReply *r = direct(port, "CLUSTER MYID");
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	char *id = strdup(r->str);
	freeReplyObject(r);
	return id;
}

/* Index in cl->ports of the master of `slot`, from CLUSTER SLOTS. */
static int slot_owner(const struct cluster *cl, long long slot)
{
	redisReply *r = direct(cl->ports[0], "CLUSTER SLOTS");
	int owner = -1;
	for (size_t i = 0; i < r->elements; i++) {
		redisReply *e = r->element[i];
		if (e->element[0]->integer <= slot && slot <= e->element[1]->integer)
			for (int n = 0; n < 3; n++)
				if (e->element[2]->element[1]->integer == cl->ports[n])
					owner = n;
	}
	freeReplyObject(r);
	assert_true(owner >= 0);
	return owner;
}

/* Move `slot`, whose keys are `keys`, from its master to the next node. */
static void move_slot(const struct cluster *cl, long long slot, const char *const *keys,
		      size_t nkeys)
{
	int src = slot_owner(cl, slot), dst = (src + 1) % 3;
	char *src_id = node_id(cl->ports[src]), *dst_id = node_id(cl->ports[dst]);
	direct_ok(cl->ports[dst], "CLUSTER SETSLOT %lld IMPORTING %s", slot, src_id);
	direct_ok(cl->ports[src], "CLUSTER SETSLOT %lld MIGRATING %s", slot, dst_id);
	for (size_t i = 0; i < nkeys; i++)
		direct_ok(cl->ports[src], "MIGRATE 127.0.0.1 %d %s 0 5000", cl->ports[dst],
			  keys[i]);
	for (int n = 0; n < 3; n++)
		direct_ok(cl->ports[(dst + n) % 3], "CLUSTER SETSLOT %lld NODE %s", slot, dst_id);
	free(src_id);
	free(dst_id);
}

static void test_cluster(void **state)
{
	struct cluster *cl = *state;
	char url[64];
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d", cl->ports[0]);
	struct clip_rcache_options o = { .queue_max = 256 };
	struct clip_rcache *c = open_cache(url, &o);

	/* Keys as the read path makes them spread over the three shards. */
	enum { KEYS = 90, LEN = 3000 };
	unsigned char value[LEN];
	char keys[KEYS][128];
	for (int i = 0; i < KEYS; i++) {
		char hex[65];
		for (int j = 0; j < 32; j++)
			snprintf(hex + 2 * j, 3, "%02x", (unsigned)((i * 37 + j * 11) & 0xff));
		assert_true(clip_rcache_key(c, hex, (uint64_t)i, keys[i], sizeof(keys[i])) > 0);
		tt_fill_random(value, LEN, 1000 + (uint64_t)i);
		assert_int_equal(put(c, keys[i], value, LEN), 0);
	}
	wait_stores(c, KEYS);
	struct clip_rcache_stats st = stats(c);
	assert_int_equal(st.stores, KEYS);
	long long total = 0;
	for (int n = 0; n < 3; n++) {
		long long size = direct_int(cl->ports[n], "DBSIZE", NULL);
		print_message("shard %d (port %d): %lld keys\n", n, cl->ports[n], size);
		assert_true(size > KEYS / 6);
		total += size;
	}
	assert_int_equal(total, KEYS);
	for (int i = 0; i < KEYS; i++) {
		tt_fill_random(value, LEN, 1000 + (uint64_t)i);
		assert_value(c, keys[i], value, LEN);
	}
	/* Every key went straight to its master: the slots computed here are
	 * the server's (CRC16 and hash tags). */
	st = stats(c);
	assert_int_equal(st.redirects, 0);
	assert_int_equal(st.hits, KEYS);
	assert_int_equal(st.errors, 0);
	char buf[LEN];
	struct clip_err err = { 0 };
	assert_int_equal(get(c, "clip:none:0", buf, sizeof(buf), 0, &err), -ENOENT);

	/* Migrate the slot of "{mig}": ASK while it moves, MOVED after. */
	put_sync(c, "{mig}a", "value a", 7);
	put_sync(c, "{mig}b", "value b", 7);
	long long slot = direct_int(cl->ports[0], "CLUSTER KEYSLOT %s", "{mig}");
	int src = -1;
	for (int n = 0; n < 3; n++) {
		redisReply *r = direct(cl->ports[n], "CLUSTER COUNTKEYSINSLOT %lld", slot);
		if (r->integer == 2)
			src = n;
		freeReplyObject(r);
	}
	assert_true(src >= 0);
	int dst = (src + 1) % 3;
	char *src_id = node_id(cl->ports[src]), *dst_id = node_id(cl->ports[dst]);
	direct_ok(cl->ports[dst], "CLUSTER SETSLOT %lld IMPORTING %s", slot, src_id);
	direct_ok(cl->ports[src], "CLUSTER SETSLOT %lld MIGRATING %s", slot, dst_id);
	direct_ok(cl->ports[src], "MIGRATE 127.0.0.1 %d {mig}a 0 5000", cl->ports[dst]);

	uint64_t redirects = stats(c).redirects;
	assert_value(c, "{mig}a", "value a", 7); /* ASK to dst */
	assert_int_equal(stats(c).redirects, redirects + 1);
	assert_value(c, "{mig}b", "value b", 7); /* still on src */
	assert_int_equal(stats(c).redirects, redirects + 1);
	put_sync(c, "{mig}c", "value c", 7); /* absent on src: ASK, stored on dst */
	assert_int_equal(stats(c).stores, KEYS + 3);

	direct_ok(cl->ports[src], "MIGRATE 127.0.0.1 %d {mig}b 0 5000", cl->ports[dst]);
	direct_ok(cl->ports[dst], "CLUSTER SETSLOT %lld NODE %s", slot, dst_id);
	direct_ok(cl->ports[src], "CLUSTER SETSLOT %lld NODE %s", slot, dst_id);
	direct_ok(cl->ports[3 - src - dst], "CLUSTER SETSLOT %lld NODE %s", slot, dst_id);
	/* Another slot moves at the same time, whose key is not read until the
	 * map was reloaded (no sooner than a second after the last load). */
	put_sync(c, "{other}x", "value x", 7);
	long long other = direct_int(cl->ports[0], "CLUSTER KEYSLOT %s", "{other}");
	assert_true(other != slot);
	const char *other_keys[] = { "{other}x" };
	move_slot(cl, other, other_keys, 1);
	sleep_ms(1100);

	redirects = stats(c).redirects;
	assert_value(c, "{mig}b", "value b", 7); /* MOVED to dst, the map reloaded */
	assert_int_equal(stats(c).redirects, redirects + 1);
	assert_value(c, "{mig}b", "value b", 7);
	assert_value(c, "{mig}a", "value a", 7);
	assert_value(c, "{mig}c", "value c", 7);
	assert_value(c, "{other}x", "value x", 7);
	assert_int_equal(stats(c).redirects, redirects + 1);
	redisReply *r = direct(cl->ports[dst], "CLUSTER COUNTKEYSINSLOT %lld", slot);
	assert_int_equal(r->integer, 3);
	freeReplyObject(r);
	free(src_id);
	free(dst_id);

	/* The other keys are still read without redirection. */
	redirects = stats(c).redirects;
	for (int i = 0; i < KEYS; i++) {
		tt_fill_random(value, LEN, 1000 + (uint64_t)i);
		assert_value(c, keys[i], value, LEN);
	}
	assert_int_equal(stats(c).redirects, redirects);
	clip_rcache_close(c);
}

int main(void)
{
	const char *version[] = { "redis-server", "--version", NULL };
	if (run(version) != 0) {
		fprintf(stderr, "skipped: redis-server is not installed\n");
		return 77;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_format),
		cmocka_unit_test(test_url_errors),
		cmocka_unit_test(test_open_without_server),
		cmocka_unit_test_setup_teardown(test_round_trip, setup_server, teardown_server),
		cmocka_unit_test_setup_teardown(test_absent, setup_server, teardown_server),
		cmocka_unit_test_setup_teardown(test_partial, setup_server, teardown_server),
		cmocka_unit_test_setup_teardown(test_nx, setup_server, teardown_server),
		cmocka_unit_test_setup_teardown(test_concurrent, setup_server, teardown_server),
		cmocka_unit_test_setup_teardown(test_queue_full, setup_server, teardown_server),
		cmocka_unit_test_setup_teardown(test_backpressure, setup_server, teardown_server),
		cmocka_unit_test_setup_teardown(test_close_drains, setup_server, teardown_server),
		cmocka_unit_test_setup_teardown(test_server_killed, setup_server, teardown_server),
		cmocka_unit_test_setup_teardown(test_server_restarted, setup_server,
						teardown_server),
		cmocka_unit_test_setup_teardown(test_server_frozen, setup_server, teardown_server),
		cmocka_unit_test_setup_teardown(test_auth, setup_auth_server, teardown_server),
		cmocka_unit_test_setup_teardown(test_unix_socket_and_db, setup_unix_server,
						teardown_server),
		cmocka_unit_test_setup_teardown(test_cluster, setup_cluster, teardown_cluster),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
