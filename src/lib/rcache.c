/* The remote cache front: the URL, the choice of backend, the key format.
 *
 * Nothing here knows about Redis: the URL is split generically
 * (scheme://[userinfo@]host[:port][/path][?query]) and handed to the backend
 * registered for its scheme, which decides what the parts mean. Defaults of
 * the options are applied here so that every backend sees the same values.
 *
 * The password is the one secret in a URL: it is only ever shown masked
 * (url_display), including in messages about a URL too malformed to parse.
 */
#include "clip/rcache.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rcache_redis.h"
#include "util.h"

#define DEFAULT_KEY_PREFIX  "clip:"
#define DEFAULT_TIMEOUT_MS  50
#define DEFAULT_QUEUE_MAX   64
#define DEFAULT_CONNECTIONS 4
#define PASSWORD_MASK	    "***"

typedef int (*backend_open_fn)(const struct clip_rcache_url *url,
			       const struct clip_rcache_backend_options *options,
			       const struct clip_rcache_ops **ops, void **self,
			       struct clip_err *err);

static const struct backend {
	const char *scheme;
	backend_open_fn open;
} backends[] = {
	{ "redis", clip_rcache_redis_open },
	{ "unix", clip_rcache_redis_open },
};

/* The parts of a URL, owned (struct clip_rcache_url borrows them). */
struct url_parts {
	char *scheme, *user, *password, *host, *path, *query, *display;
	int port;
};

static void url_parts_free(struct url_parts *u)
{
	if (u->password) {
		/* Not left behind in freed memory. */
		explicit_bzero(u->password, strlen(u->password));
		free(u->password);
	}
	free(u->scheme);
	free(u->user);
	free(u->host);
	free(u->path);
	free(u->query);
	free(u->display);
	memset(u, 0, sizeof(*u));
}

/* `url` with [begin, end) replaced by the mask: NULL when out of memory. */
static char *mask_span(const char *url, const char *begin, const char *end)
{
	char *out = NULL;
	if (asprintf(&out, "%.*s%s%s", (int)(begin - url), url, PASSWORD_MASK, end) < 0)
		return NULL;
	return out;
}

/* `url` as it may be shown: the password in its userinfo masked. The userinfo
 * ends at the last '@' of the authority (before the first '/' or '?'); a bare
 * userinfo is all password. With `aggressive`, for a URL that did not parse,
 * an '@' anywhere after the scheme is taken as the end of a userinfo, so that
 * a password holding an unencoded '/' or '?' is masked too. */
static char *url_display(const char *url, bool aggressive)
{
	const char *sep = strstr(url, "://");
	const char *auth = sep ? sep + 3 : url;
	size_t auth_len = strcspn(auth, "/?");
	const char *at = memrchr(auth, '@', auth_len);
	if (at == NULL && (aggressive || sep == NULL))
		at = strrchr(auth, '@');
	if (at == NULL)
		return strdup(url);
	const char *colon = memchr(auth, ':', (size_t)(at - auth));
	return mask_span(url, colon ? colon + 1 : auth, at);
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Percent-decode `len` bytes of `s` into a new string: 0, -EINVAL for a bad
 * or NUL escape, -ENOMEM. */
static int percent_decode(const char *s, size_t len, char **out)
{
	char *d = malloc(len + 1);
	if (d == NULL)
		return -ENOMEM;
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '%') {
			d[n++] = s[i];
			continue;
		}
		int hi = i + 2 < len ? hex_value(s[i + 1]) : -1;
		int lo = i + 2 < len ? hex_value(s[i + 2]) : -1;
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
			explicit_bzero(d, n);
			free(d);
			return -EINVAL;
		}
		d[n++] = (char)(hi << 4 | lo);
		i += 2;
	}
	d[n] = '\0';
	*out = d;
	return 0;
}

static int url_error(const char *url, int code, const char *why, struct clip_err *err)
{
	/* The URL did not parse: mask whatever could be a password. */
	cleanup_free char *shown = url_display(url, true);
	return clip_err_set(err, code, "remote cache URL '%s': %s", shown ? shown : "(hidden)",
			    why);
}

/* Split `url` into `u` (see struct clip_rcache_url). 0 or -EINVAL/-ENOMEM
 * with a message that shows the URL masked only. */
static int url_parse(const char *url, struct url_parts *u, struct clip_err *err)
{
	memset(u, 0, sizeof(*u));
	u->port = -1;

	const char *p = url;
	while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.')
		p++;
	if (p == url || !isalpha((unsigned char)url[0]) || strncmp(p, "://", 3) != 0)
		return url_error(url, EINVAL, "not of the form scheme://...", err);
	u->scheme = clip_strdup_len(url, (size_t)(p - url));
	u->display = url_display(url, false);
	if (u->scheme == NULL || u->display == NULL)
		return clip_err_set(err, ENOMEM, "remote cache URL: out of memory");
	for (char *s = u->scheme; *s; s++)
		*s = (char)tolower((unsigned char)*s);

	const char *auth = p + 3;
	size_t auth_len = strcspn(auth, "/?");
	const char *auth_end = auth + auth_len;
	const char *host = auth;
	const char *at = memrchr(auth, '@', auth_len);
	if (at != NULL) {
		const char *colon = memchr(auth, ':', (size_t)(at - auth));
		const char *pw = colon ? colon + 1 : auth;
		if (colon != NULL && colon > auth &&
		    percent_decode(auth, (size_t)(colon - auth), &u->user) < 0)
			return url_error(url, EINVAL, "bad %-escape in the user name", err);
		if (percent_decode(pw, (size_t)(at - pw), &u->password) < 0)
			return url_error(url, EINVAL, "bad %-escape in the password", err);
		host = at + 1;
	}

	const char *host_end = auth_end;
	const char *port = NULL;
	if (*host == '[') {
		const char *close = memchr(host, ']', (size_t)(auth_end - host));
		if (close == NULL)
			return url_error(url, EINVAL, "unterminated [IPv6 address]", err);
		if (close + 1 < auth_end && close[1] != ':')
			return url_error(url, EINVAL, "junk after the [IPv6 address]", err);
		port = close + 1 < auth_end ? close + 2 : NULL;
		host++;
		host_end = close;
	} else {
		const char *colon = memchr(host, ':', (size_t)(auth_end - host));
		if (colon != NULL) {
			if (memchr(colon + 1, ':', (size_t)(auth_end - colon - 1)) != NULL)
				return url_error(url, EINVAL,
						 "an IPv6 address must be in [brackets]", err);
			port = colon + 1;
			host_end = colon;
		}
	}
	if (host_end > host && (u->host = clip_strdup_len(host, (size_t)(host_end - host))) == NULL)
		return clip_err_set(err, ENOMEM, "remote cache URL: out of memory");
	if (port != NULL) {
		long v = 0;
		const char *d = port;
		for (; d < auth_end && isdigit((unsigned char)*d) && v <= 65535; d++)
			v = v * 10 + (*d - '0');
		if (d == port || d != auth_end || v < 1 || v > 65535)
			return url_error(url, EINVAL, "the port is not a number in 1-65535", err);
		u->port = (int)v;
	}

	if (*auth_end == '/') {
		size_t path_len = strcspn(auth_end, "?");
		if (percent_decode(auth_end, path_len, &u->path) < 0)
			return url_error(url, EINVAL, "bad %-escape in the path", err);
		auth_end += path_len;
	}
	if (*auth_end == '?' && (u->query = strdup(auth_end + 1)) == NULL)
		return clip_err_set(err, ENOMEM, "remote cache URL: out of memory");
	return 0;
}

int clip_rcache_open(const char *url, const struct clip_rcache_options *options,
		     struct clip_rcache **out, struct clip_err *err)
{
	static const struct clip_rcache_options no_options;
	if (options == NULL)
		options = &no_options;
	if (url == NULL || *url == '\0')
		return clip_err_set(err, EINVAL, "remote cache URL: empty");
	if (options->timeout_ms < 0)
		return clip_err_set(err, EINVAL, "remote cache: negative timeout %ld ms",
				    options->timeout_ms);
	struct clip_rcache_backend_options resolved = {
		.timeout_ms = options->timeout_ms ? options->timeout_ms : DEFAULT_TIMEOUT_MS,
		.queue_max = options->queue_max ? options->queue_max : DEFAULT_QUEUE_MAX,
		.connections = options->connections ? options->connections : DEFAULT_CONNECTIONS,
	};

	struct url_parts u;
	int r = url_parse(url, &u, err);
	if (r < 0) {
		url_parts_free(&u);
		return r;
	}
	const struct backend *backend = NULL;
	for (size_t i = 0; i < CLIP_ARRAY_SIZE(backends); i++)
		if (strcmp(u.scheme, backends[i].scheme) == 0)
			backend = &backends[i];
	if (backend == NULL) {
		r = clip_err_set(
			err, EINVAL,
			"remote cache URL '%s': unsupported scheme '%s' (expected redis:// "
			"or unix://)",
			u.display, u.scheme);
		url_parts_free(&u);
		return r;
	}

	struct clip_rcache *cache = calloc(1, sizeof(*cache));
	const char *prefix = options->key_prefix ? options->key_prefix : DEFAULT_KEY_PREFIX;
	if (cache == NULL || (cache->key_prefix = strdup(prefix)) == NULL) {
		free(cache);
		url_parts_free(&u);
		return clip_err_set(err, ENOMEM, "remote cache: out of memory");
	}
	const struct clip_rcache_url view = {
		.scheme = u.scheme,
		.user = u.user,
		.password = u.password,
		.host = u.host,
		.port = u.port,
		.path = u.path,
		.query = u.query,
		.display = u.display,
	};
	r = backend->open(&view, &resolved, &cache->ops, &cache->self, err);
	url_parts_free(&u);
	if (r < 0) {
		free(cache->key_prefix);
		free(cache);
		return r;
	}
	*out = cache;
	return 0;
}

int clip_rcache_key(const struct clip_rcache *cache, const char *layer_hex, uint64_t chunk,
		    char *buf, size_t size)
{
	int n = snprintf(buf, size, "%s%s:%" PRIu64, cache->key_prefix, layer_hex, chunk);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= size)
		return -ENAMETOOLONG;
	return n;
}

void clip_rcache_close(struct clip_rcache *cache)
{
	if (cache == NULL)
		return;
	cache->ops->close(cache->self);
	free(cache->key_prefix);
	free(cache);
}
