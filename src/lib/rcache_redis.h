/* The Redis backend of the remote cache (private to libclip).
 *
 * rcache.c parses the URL generically and picks the backend by its scheme;
 * this header is the one point where the two meet.
 */
#ifndef CLIP_RCACHE_REDIS_H
#define CLIP_RCACHE_REDIS_H

#include "clip/err.h"
#include "clip/rcache.h"

/* A cache URL split by rcache.c: scheme://[userinfo@]host[:port][/path][?query].
 * userinfo is "user:password" or, as redis-cli reads it, a bare "password";
 * user, password and path are percent-decoded. Absent parts are NULL (port:
 * -1); an empty user counts as absent. `display` is the URL with the password
 * masked: the only form of it that may appear in a message. Everything is
 * borrowed for the duration of the open call. */
struct clip_rcache_url {
	const char *scheme;
	const char *user;
	const char *password;
	const char *host; /* without the brackets of an IPv6 literal */
	int port;
	const char *path;
	const char *query;
	const char *display;
};

/* Options with every default applied by rcache.c (so no field is 0). */
struct clip_rcache_backend_options {
	long timeout_ms;
	size_t queue_max;
	unsigned connections;
};

/* Make a Redis backend for a "redis" or "unix" URL: -EINVAL naming
 * url->display when the URL does not describe a Redis server. Opens no
 * connection and starts no thread (the FUSE daemon forks after this), so no
 * server state is an error here. On success *ops and *self are set; the
 * backend is freed by ops->close(self). */
int clip_rcache_redis_open(const struct clip_rcache_url *url,
			   const struct clip_rcache_backend_options *options,
			   const struct clip_rcache_ops **ops, void **self, struct clip_err *err);

#endif
