/* clip: a client for the OCI Distribution API.
 *
 * Every request goes through one engine, `struct xfer`: a transfer driven by
 * a curl multi handle from whichever thread reads it, so that a blob's bytes
 * reach the indexer as they arrive (the indexer's read() pulls, the write
 * callback fills a buffer, the transfer is paused when the buffer is full).
 * Around one HTTP exchange the engine does by hand what the protocol needs:
 * redirects (Location resolved with the curl URL API; the registry's
 * Authorization only ever goes to the registry's own origin), authentication
 * (a 401 parses WWW-Authenticate, fetches a bearer token or picks Basic
 * credentials, and the request is retried once), and retries with backoff
 * (connection errors, 429 with Retry-After, 5xx) that resume a cut body with
 * a Range request from the last byte received.
 *
 * Connection reuse: a pool of (easy, multi) pairs. A finished transfer leaves
 * its connection in its multi handle's cache, and the pair goes back to the
 * pool, so the next request from any thread finds a warm connection. DNS
 * answers and TLS sessions are shared between all pairs through a curl share
 * handle (a mutex per curl_lock_data). The connection cache itself is not put
 * in the share: with libcurl 7.88 (Debian 12) a shared connection cache is
 * not thread-safe (curl known bug "A shared connection cache is not
 * thread-safe", issue #4915), and the pool gives the same reuse without it.
 */
#include "clip/registry.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clip/auth.h"
#include "curl_lazy.h"
#include "util.h"

#define MAX_REDIRECTS	    5
#define MAX_NESTED_INDEXES  4
#define RETRY_AFTER_CAP_MS  30000L
#define BACKOFF_CAP_MS	    30000L
#define POOL_MAX	    16
#define PAUSE_BYTES	    (4u << 20) /* pause the transfer when this much is buffered */
#define ERROR_BODY_MAX	    4096
#define HEADER_VALUE_MAX    16384
#define MAX_CHALLENGES	    4
#define TOKEN_MARGIN_S	    30
#define LOW_SPEED_LIMIT	    1024L
#define DEFAULT_CONNECT_MS  5000L
#define DEFAULT_LOW_SPEED_S 15L
#define DEFAULT_RETRIES	    4
#define DEFAULT_BACKOFF_MS  200L
#define USER_AGENT	    "clip/0.1"
#define OPEN_END	    UINT64_MAX

static const char manifest_accept[] = "Accept: " CLIP_MT_OCI_INDEX ", " CLIP_MT_OCI_MANIFEST
				      ", " CLIP_MT_DOCKER_LIST ", " CLIP_MT_DOCKER_MANIFEST;

/* ---- global state ----------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init_once(void)
{
	curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- the registry ----------------------------------------------------- */

struct handle {
	CURL *easy;
	CURLM *multi;
	struct handle *next;
};

struct token {
	char *scope;
	char *value;	     /* secret */
	time_t usable_until; /* monotonic seconds, expiry minus a margin */
	struct token *next;
};

struct clip_registry {
	struct clip_ref ref;
	char *name;   /* "host/repository" */
	char *base;   /* "http(s)://host" */
	char *origin; /* "scheme://host:port", to tell where Authorization may go */
	char *ca_file;
	char *noproxy; /* the user's NO_PROXY plus loopback, as Go's net/http */
	long connect_timeout_ms;
	long low_speed_time_s;
	int retries;
	long backoff_ms;

	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];

	pthread_mutex_t pool_lock;
	struct handle *pool;
	size_t npool;

	/* Authentication state, under auth_lock. auth_gen changes whenever
	 * the credentials sent change, so that of many threads that got a
	 * 401 at once only the first fetches a token. */
	pthread_mutex_t auth_lock;
	unsigned auth_gen;
	bool creds_loaded;
	bool have_creds;
	struct clip_credentials creds;
	char *basic_header; /* secret; set once a Basic challenge was answered */
	struct token *tokens;
	char *scope; /* the scope requests are made for */
	bool have_challenge;
	struct clip_auth_challenge challenge; /* the last Bearer challenge */

	atomic_uint_fast64_t requests;
	atomic_uint_fast64_t retried;
	atomic_uint_fast64_t bytes_received;
};

static void share_lock(CURL *handle, curl_lock_data data, curl_lock_access access, void *user)
{
	struct clip_registry *reg = user;
	if ((unsigned)data < CURL_LOCK_DATA_LAST)
		pthread_mutex_lock(&reg->share_locks[data]);
}

static void share_unlock(CURL *handle, curl_lock_data data, void *user)
{
	struct clip_registry *reg = user;
	if ((unsigned)data < CURL_LOCK_DATA_LAST)
		pthread_mutex_unlock(&reg->share_locks[data]);
}

static void free_secret(char *s)
{
	if (s != NULL) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static time_t mono_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* "scheme://host:port" of `url` (a new string), NULL when it does not parse. */
static char *url_origin(const char *url)
{
	CURLU *u = curl_url();
	if (u == NULL)
		return NULL;
	char *scheme = NULL, *host = NULL, *port = NULL, *out = NULL;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
		for (char *p = host; *p != '\0'; p++)
			*p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
		if (asprintf(&out, "%s://%s:%s", scheme, host, port) < 0)
			out = NULL;
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return out;
}

/* "host[:port]" of `url` for messages (a new string), or a copy of `url`. */
static char *url_host(const char *url)
{
	CURLU *u = curl_url();
	char *host = NULL, *port = NULL, *out = NULL;
	if (u != NULL && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
		curl_url_get(u, CURLUPART_PORT, &port, 0);
		if (asprintf(&out, "%s%s%s", host, port ? ":" : "", port ? port : "") < 0)
			out = NULL;
	}
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return out != NULL ? out : strdup(url);
}

/* `location` resolved against `base` (a new string); NULL when it is not an
 * http(s) URL. */
static char *resolve_location(const char *base, const char *location)
{
	CURLU *u = curl_url();
	if (u == NULL)
		return NULL;
	char *full = NULL, *scheme = NULL, *out = NULL;
	if (curl_url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK &&
	    curl_url_set(u, CURLUPART_URL, location, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
	    (strcasecmp(scheme, "http") == 0 || strcasecmp(scheme, "https") == 0) &&
	    curl_url_get(u, CURLUPART_URL, &full, 0) == CURLUE_OK)
		out = strdup(full);
	curl_free(full);
	curl_free(scheme);
	curl_url_cleanup(u);
	return out;
}

/* ---- the handle pool -------------------------------------------------- */

static struct handle *pool_get(struct clip_registry *reg)
{
	pthread_mutex_lock(&reg->pool_lock);
	struct handle *h = reg->pool;
	if (h != NULL) {
		reg->pool = h->next;
		reg->npool--;
	}
	pthread_mutex_unlock(&reg->pool_lock);
	if (h != NULL) {
		h->next = NULL;
		return h;
	}
	h = calloc(1, sizeof(*h));
	if (h == NULL)
		return NULL;
	h->easy = curl_easy_init();
	h->multi = curl_multi_init();
	if (h->easy == NULL || h->multi == NULL) {
		curl_easy_cleanup(h->easy);
		if (h->multi != NULL)
			curl_multi_cleanup(h->multi);
		free(h);
		return NULL;
	}
	return h;
}

static void handle_free(struct handle *h)
{
	curl_easy_cleanup(h->easy);
	curl_multi_cleanup(h->multi);
	free(h);
}

static void pool_put(struct clip_registry *reg, struct handle *h)
{
	if (h == NULL)
		return;
	pthread_mutex_lock(&reg->pool_lock);
	if (reg->npool < POOL_MAX) {
		h->next = reg->pool;
		reg->pool = h;
		reg->npool++;
		h = NULL;
	}
	pthread_mutex_unlock(&reg->pool_lock);
	if (h != NULL)
		handle_free(h);
}

/* ---- transfers -------------------------------------------------------- */

struct xfer {
	struct clip_registry *reg;
	/* The request. */
	const char *method; /* "GET" or "POST" */
	char *what;	    /* "registry HOST" or "token server HOST", for messages */
	char *target;	    /* the path, for messages */
	char *start_url;
	char *start_origin;
	bool registry_request; /* send the registry's credentials, answer 401s */
	const char *accept;    /* a whole "Accept: ..." header line, or NULL */
	char *explicit_auth;   /* secret "Authorization: ..." for start_origin only */
	char *post_body;       /* secret form body of a POST */
	bool ranged;
	uint64_t range_start, range_end; /* inclusive; range_end OPEN_END: to the end */
	uint64_t max_body;		 /* 0: no limit */
	uint64_t expected;		 /* body bytes that make it complete; 0: unknown */

	/* Progress over all exchanges. */
	uint64_t delivered; /* body bytes taken into buf */
	int attempts;	    /* retries used */
	bool auth_retried;
	bool eof;

	/* The current exchange. */
	struct handle *h;
	bool active; /* added to the multi handle */
	bool done;
	CURLcode result;
	char *url;
	int hops;
	struct curl_slist *headers;
	unsigned auth_gen;
	bool at_registry; /* the URL is the registry's: its credentials were offered */
	bool sent_bearer, sent_basic;
	bool sent_range;
	uint64_t sent_start;
	long status;
	bool first_write;
	uint64_t skip; /* bytes of this body to drop (a 200 answering a Range) */
	uint64_t want; /* bytes of this body still wanted */
	bool stopped;  /* we ended the transfer on purpose: everything wanted arrived */
	bool paused;
	char *location, *retry_after, *content_range, *content_type, *docker_digest;
	char *www_auth[MAX_CHALLENGES];
	size_t nwww;
	char errbody[ERROR_BODY_MAX];
	size_t errbody_len;
	int cb_code; /* an error found in a callback: the transfer is not retried */
	char cb_msg[256];
	char errbuf[CURL_ERROR_SIZE];

	/* Body bytes not yet handed to the reader. */
	unsigned char *buf;
	size_t buf_head, buf_len, buf_cap;
};

static void slist_free_wipe(struct curl_slist *l)
{
	for (struct curl_slist *p = l; p != NULL; p = p->next)
		explicit_bzero(p->data, strlen(p->data));
	curl_slist_free_all(l);
}

static void response_reset(struct xfer *x)
{
	free(x->location);
	free(x->retry_after);
	free(x->content_range);
	free(x->content_type);
	free(x->docker_digest);
	x->location = x->retry_after = x->content_range = x->content_type = x->docker_digest = NULL;
	for (size_t i = 0; i < x->nwww; i++)
		free(x->www_auth[i]);
	x->nwww = 0;
	x->status = 0;
	x->errbody_len = 0;
	x->first_write = true;
	x->skip = 0;
}

/* Take the handle out of its multi handle and forget the exchange. */
static void exchange_end(struct xfer *x)
{
	if (x->h != NULL && x->active)
		curl_multi_remove_handle(x->h->multi, x->h->easy);
	x->active = false;
	slist_free_wipe(x->headers);
	x->headers = NULL;
}

static void xfer_clear(struct xfer *x)
{
	exchange_end(x);
	if (x->h != NULL) {
		/* Options point into x; a reset handle keeps only its
		 * connections. */
		curl_easy_reset(x->h->easy);
		pool_put(x->reg, x->h);
	}
	response_reset(x);
	free(x->what);
	free(x->target);
	free(x->start_url);
	free(x->start_origin);
	free_secret(x->explicit_auth);
	free_secret(x->post_body);
	free(x->url);
	if (x->buf != NULL)
		explicit_bzero(x->buf, x->buf_cap);
	free(x->buf);
	memset(x, 0, sizeof(*x));
}

/* Set up a transfer of `url` (`target` names it in messages). */
static int xfer_init(struct xfer *x, struct clip_registry *reg, const char *method,
		     const char *what, const char *target, const char *url, bool registry_request,
		     struct clip_err *err)
{
	memset(x, 0, sizeof(*x));
	x->reg = reg;
	x->method = method;
	x->registry_request = registry_request;
	x->range_end = OPEN_END;
	x->what = strdup(what);
	x->target = strdup(target);
	x->start_url = strdup(url);
	x->start_origin = url_origin(url);
	if (x->what == NULL || x->target == NULL || x->start_url == NULL) {
		xfer_clear(x);
		return clip_err_set(err, ENOMEM, "out of memory");
	}
	if (x->start_origin == NULL) {
		int r = clip_err_set(err, EINVAL, "%s: invalid URL %.200s", what, url);
		xfer_clear(x);
		return r;
	}
	return 0;
}

/* "WHAT: METHOD TARGET: <reason>" */
static int __attribute__((format(printf, 4, 5)))
xfer_error(struct xfer *x, struct clip_err *err, int code, const char *fmt, ...)
{
	char reason[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	return clip_err_set(err, code, "%s: %s %s: %s", x->what, x->method, x->target, reason);
}

static int xfer_prefix(struct xfer *x, struct clip_err *err)
{
	return clip_err_prefix(err, "%s: %s %s", x->what, x->method, x->target);
}

/* Copy a header's value (without surrounding whitespace) into a new string. */
static char *header_value(const char *line, size_t len, size_t name_len)
{
	const char *v = line + name_len + 1;
	const char *end = line + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
		end--;
	size_t n = (size_t)(end - v);
	if (n > HEADER_VALUE_MAX)
		n = HEADER_VALUE_MAX;
	return clip_strdup_len(v, n);
}

static bool header_is(const char *line, size_t len, const char *name)
{
	size_t n = strlen(name);
	return len > n && line[n] == ':' && strncasecmp(line, name, n) == 0;
}

static size_t on_header(char *line, size_t size, size_t nitems, void *user)
{
	struct xfer *x = user;
	size_t len = size * nitems;
	if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
		/* A new response (an interim 1xx comes before the final one). */
		response_reset(x);
		const char *sp = memchr(line, ' ', len);
		long status = 0;
		if (sp != NULL) {
			for (const char *p = sp + 1; p < line + len && *p >= '0' && *p <= '9'; p++)
				status = status * 10 + (*p - '0');
		}
		x->status = status;
		return len;
	}
	char **slot = NULL;
	if (header_is(line, len, "Location"))
		slot = &x->location;
	else if (header_is(line, len, "Retry-After"))
		slot = &x->retry_after;
	else if (header_is(line, len, "Content-Range"))
		slot = &x->content_range;
	else if (header_is(line, len, "Content-Type"))
		slot = &x->content_type;
	else if (header_is(line, len, "Docker-Content-Digest"))
		slot = &x->docker_digest;
	if (slot != NULL) {
		free(*slot);
		*slot = header_value(line, len, strcspn(line, ":"));
	} else if (header_is(line, len, "WWW-Authenticate") && x->nwww < MAX_CHALLENGES) {
		char *v = header_value(line, len, strlen("WWW-Authenticate"));
		if (v != NULL)
			x->www_auth[x->nwww++] = v;
	}
	return len;
}

static size_t buf_pending(const struct xfer *x)
{
	return x->buf_len - x->buf_head;
}

static int buf_append(struct xfer *x, const void *data, size_t n)
{
	if (x->buf_head > 0 && x->buf_len + n > x->buf_cap) {
		memmove(x->buf, x->buf + x->buf_head, buf_pending(x));
		x->buf_len -= x->buf_head;
		x->buf_head = 0;
	}
	if (x->buf_len + n > x->buf_cap) {
		size_t cap = x->buf_cap ? x->buf_cap : 64 * 1024;
		while (cap < x->buf_len + n)
			cap *= 2;
		unsigned char *nb = realloc(x->buf, cap);
		if (nb == NULL)
			return -ENOMEM;
		x->buf = nb;
		x->buf_cap = cap;
	}
	memcpy(x->buf + x->buf_len, data, n);
	x->buf_len += n;
	return 0;
}

/* "bytes START-END/TOTAL": START, or -1 when malformed. */
static long long content_range_start(const char *v)
{
	if (v == NULL || strncasecmp(v, "bytes ", 6) != 0)
		return -1;
	const char *p = v + 6;
	while (*p == ' ')
		p++;
	if (*p < '0' || *p > '9')
		return -1;
	char *end;
	errno = 0;
	unsigned long long s = strtoull(p, &end, 10);
	if (errno != 0 || *end != '-' || s > (unsigned long long)INT64_MAX)
		return -1;
	return (long long)s;
}

static void callback_error(struct xfer *x, int code, const char *msg)
{
	x->cb_code = code;
	snprintf(x->cb_msg, sizeof(x->cb_msg), "%s", msg);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *user)
{
	struct xfer *x = user;
	size_t n = size * nmemb;
	if (x->status < 200 || x->status > 299) {
		size_t room = sizeof(x->errbody) - 1 - x->errbody_len;
		size_t take = n < room ? n : room;
		memcpy(x->errbody + x->errbody_len, data, take);
		x->errbody_len += take;
		x->errbody[x->errbody_len] = '\0';
		atomic_fetch_add(&x->reg->bytes_received, n);
		return n;
	}
	/* Before anything changes: a paused chunk is delivered again. */
	if (buf_pending(x) >= PAUSE_BYTES) {
		x->paused = true;
		return CURL_WRITEFUNC_PAUSE;
	}
	atomic_fetch_add(&x->reg->bytes_received, n);
	if (x->first_write) {
		x->first_write = false;
		if (x->status == 206) {
			long long start = content_range_start(x->content_range);
			if (!x->sent_range || start < 0 || (uint64_t)start != x->sent_start) {
				callback_error(x, EBADMSG,
					       "206 answer whose Content-Range does not match the "
					       "range asked for");
				return 0;
			}
			x->skip = 0;
		} else {
			/* A 200 to a Range request is the whole body. */
			x->skip = x->sent_range ? x->sent_start : 0;
		}
		x->want = x->range_end == OPEN_END ? OPEN_END : x->range_end + 1 - x->sent_start;
	}
	size_t off = 0;
	if (x->skip > 0) {
		off = x->skip < n ? (size_t)x->skip : n;
		x->skip -= off;
	}
	size_t take = n - off;
	if (x->want != OPEN_END && take > x->want)
		take = (size_t)x->want;
	if (x->max_body != 0 && x->delivered + take > x->max_body) {
		callback_error(x, EFBIG, "answer larger than expected");
		return 0;
	}
	if (take > 0 && buf_append(x, data + off, take) < 0) {
		callback_error(x, ENOMEM, "out of memory");
		return 0;
	}
	x->delivered += take;
	if (x->want != OPEN_END) {
		x->want -= take;
		if (x->want == 0 && off + take < n) {
			/* The server sent more than the range: we have what we
			 * asked for. */
			x->stopped = true;
			return 0;
		}
	}
	return n;
}

/* The Authorization header line for a request to the registry (a new
 * secret string, or NULL for none). */
static char *registry_auth_header(struct xfer *x)
{
	struct clip_registry *reg = x->reg;
	char *line = NULL;
	pthread_mutex_lock(&reg->auth_lock);
	x->auth_gen = reg->auth_gen;
	if (reg->basic_header != NULL) {
		line = strdup(reg->basic_header);
		x->sent_basic = line != NULL;
	} else {
		time_t now = mono_seconds();
		for (struct token *t = reg->tokens; t != NULL; t = t->next) {
			if (strcmp(t->scope, reg->scope) == 0 && now < t->usable_until) {
				if (asprintf(&line, "Authorization: Bearer %s", t->value) < 0)
					line = NULL;
				x->sent_bearer = line != NULL;
				break;
			}
		}
	}
	pthread_mutex_unlock(&reg->auth_lock);
	return line;
}

/* Start one exchange with `url`. */
static int exchange_begin(struct xfer *x, const char *url, struct clip_err *err)
{
	struct clip_registry *reg = x->reg;
	exchange_end(x);
	response_reset(x);
	if (x->url != url) {
		char *u = strdup(url);
		if (u == NULL)
			return clip_err_set(err, ENOMEM, "out of memory");
		free(x->url);
		x->url = u;
	}
	if (x->h == NULL) {
		x->h = pool_get(reg);
		if (x->h == NULL)
			return clip_err_set(err, ENOMEM, "out of memory");
	}
	x->done = false;
	x->result = CURLE_OK;
	x->stopped = false;
	x->paused = false;
	x->cb_code = 0;
	x->errbuf[0] = '\0';
	x->sent_bearer = x->sent_basic = false;

	cleanup_free char *origin = url_origin(x->url);
	if (origin == NULL)
		return xfer_error(x, err, EBADMSG, "invalid URL %.200s", x->url);
	struct curl_slist *hl = NULL;
	bool ok = true;
	if (x->accept != NULL)
		ok = ok && (hl = curl_slist_append(hl, x->accept)) != NULL;
	x->at_registry = x->registry_request && strcmp(origin, reg->origin) == 0;
	if (x->at_registry) {
		char *line = registry_auth_header(x);
		if (line != NULL) {
			struct curl_slist *n = curl_slist_append(hl, line);
			ok = ok && n != NULL;
			hl = n != NULL ? n : hl;
			free_secret(line);
		}
	}
	if (x->explicit_auth != NULL && strcmp(origin, x->start_origin) == 0) {
		struct curl_slist *n = curl_slist_append(hl, x->explicit_auth);
		ok = ok && n != NULL;
		hl = n != NULL ? n : hl;
	}
	x->sent_range = x->ranged || x->delivered > 0;
	x->sent_start = (x->ranged ? x->range_start : 0) + x->delivered;
	if (x->sent_range) {
		char range[80];
		if (x->range_end != OPEN_END)
			snprintf(range, sizeof(range), "Range: bytes=%llu-%llu",
				 (unsigned long long)x->sent_start,
				 (unsigned long long)x->range_end);
		else
			snprintf(range, sizeof(range), "Range: bytes=%llu-",
				 (unsigned long long)x->sent_start);
		struct curl_slist *n = curl_slist_append(hl, range);
		ok = ok && n != NULL;
		hl = n != NULL ? n : hl;
	}
	if (x->post_body != NULL) {
		struct curl_slist *n =
			curl_slist_append(hl, "Content-Type: application/x-www-form-urlencoded");
		ok = ok && n != NULL;
		hl = n != NULL ? n : hl;
	}
	x->headers = hl;
	if (!ok)
		return clip_err_set(err, ENOMEM, "out of memory");

	CURL *e = x->h->easy;
	curl_easy_reset(e);
	CURLcode c = CURLE_OK;
#define SETOPT(opt, val)                                                                           \
	do {                                                                                       \
		if (c == CURLE_OK)                                                                 \
			c = curl_easy_setopt(e, opt, val);                                         \
	} while (0)
	SETOPT(CURLOPT_URL, x->url);
	SETOPT(CURLOPT_SHARE, reg->share);
	SETOPT(CURLOPT_NOSIGNAL, 1L);
	SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
	SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(CURLOPT_CONNECTTIMEOUT_MS, reg->connect_timeout_ms);
	SETOPT(CURLOPT_LOW_SPEED_LIMIT, LOW_SPEED_LIMIT);
	SETOPT(CURLOPT_LOW_SPEED_TIME, reg->low_speed_time_s);
	SETOPT(CURLOPT_USERAGENT, USER_AGENT);
	SETOPT(CURLOPT_NOPROXY, reg->noproxy);
	SETOPT(CURLOPT_HTTPHEADER, x->headers);
	SETOPT(CURLOPT_HEADERFUNCTION, on_header);
	SETOPT(CURLOPT_HEADERDATA, x);
	SETOPT(CURLOPT_WRITEFUNCTION, on_body);
	SETOPT(CURLOPT_WRITEDATA, x);
	SETOPT(CURLOPT_ERRORBUFFER, x->errbuf);
	SETOPT(CURLOPT_BUFFERSIZE, 128L * 1024);
	if (reg->ca_file != NULL)
		SETOPT(CURLOPT_CAINFO, reg->ca_file);
	if (x->post_body != NULL) {
		SETOPT(CURLOPT_POSTFIELDS, x->post_body);
		SETOPT(CURLOPT_POSTFIELDSIZE, (long)strlen(x->post_body));
	}
#undef SETOPT
	if (c != CURLE_OK)
		return xfer_error(x, err, EIO, "curl: %s", curl_easy_strerror(c));
	CURLMcode mc = curl_multi_add_handle(x->h->multi, e);
	if (mc != CURLM_OK)
		return xfer_error(x, err, EIO, "curl: %s", curl_multi_strerror(mc));
	x->active = true;
	atomic_fetch_add(&reg->requests, 1);
	return 0;
}

/* Let curl run the exchange for a while (until there is news on the
 * socket, or a second). */
static int exchange_pump(struct xfer *x, struct clip_err *err)
{
	CURLM *m = x->h->multi;
	if (x->paused && buf_pending(x) < PAUSE_BYTES / 2) {
		x->paused = false;
		curl_easy_pause(x->h->easy, CURLPAUSE_CONT);
	}
	int running = 0;
	CURLMcode mc = curl_multi_perform(m, &running);
	if (mc != CURLM_OK)
		return xfer_error(x, err, EIO, "curl: %s", curl_multi_strerror(mc));
	int left;
	CURLMsg *msg;
	while ((msg = curl_multi_info_read(m, &left)) != NULL) {
		if (msg->msg == CURLMSG_DONE && msg->easy_handle == x->h->easy) {
			x->done = true;
			x->result = msg->data.result;
		}
	}
	if (!x->done && buf_pending(x) == 0 && !x->paused) {
		mc = curl_multi_poll(m, NULL, 0, 1000, NULL);
		if (mc != CURLM_OK)
			return xfer_error(x, err, EIO, "curl: %s", curl_multi_strerror(mc));
	}
	return 0;
}

static bool transport_retryable(CURLcode c)
{
	switch (c) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_WEIRD_SERVER_REPLY: return true;
	default: return false;
	}
}

static int transport_errno(struct xfer *x, CURLcode c)
{
	long os = 0;
	switch (c) {
	case CURLE_COULDNT_RESOLVE_HOST: return EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT: return ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		curl_easy_getinfo(x->h->easy, CURLINFO_OS_ERRNO, &os);
		if (os == EHOSTUNREACH || os == ENETUNREACH)
			return EHOSTUNREACH;
		if (os == ETIMEDOUT)
			return ETIMEDOUT;
		return ECONNREFUSED;
	default: return EIO;
	}
}

static bool status_retryable(long status)
{
	return status == 429 || (status >= 500 && status <= 599 && status != 501 && status != 505);
}

/* Retry-After in ms (seconds or an HTTP-date), -1 when absent or invalid. */
static long retry_after_ms(const char *v)
{
	if (v == NULL || v[0] == '\0')
		return -1;
	if (v[strspn(v, "0123456789")] == '\0') {
		if (strlen(v) > 6)
			return RETRY_AFTER_CAP_MS;
		return atol(v) * 1000;
	}
	time_t t = curl_getdate(v, NULL);
	if (t < 0)
		return -1;
	time_t now = time(NULL);
	return t > now ? (long)(t - now) * 1000 : 0;
}

/* "CODE: message" from a registry's {"errors":[...]} body, for messages. */
static void describe_error_body(const struct xfer *x, char *out, size_t cap)
{
	out[0] = '\0';
	if (x->errbody_len == 0)
		return;
	json_t *root = json_loadb(x->errbody, x->errbody_len, 0, NULL);
	json_t *e0 = json_array_get(json_object_get(root, "errors"), 0);
	const char *code = json_string_value(json_object_get(e0, "code"));
	const char *msg = json_string_value(json_object_get(e0, "message"));
	if (code != NULL || msg != NULL) {
		char raw[256];
		snprintf(raw, sizeof(raw), "%s%s%s", code ? code : "", code && msg ? ": " : "",
			 msg ? msg : "");
		size_t j = 0;
		for (size_t i = 0; raw[i] != '\0' && j + 1 < cap; i++)
			out[j++] = (raw[i] >= 0x20 && raw[i] < 0x7f) ? raw[i] : '?';
		out[j] = '\0';
	}
	json_decref(root);
}

static int fetch_token(struct clip_registry *reg, const struct clip_auth_challenge *ch,
		       struct clip_err *err);

static int load_credentials(struct clip_registry *reg, struct clip_err *err)
{
	if (reg->creds_loaded)
		return 0;
	int r = clip_auth_lookup(reg->ref.domain, &reg->creds, err);
	if (r < 0)
		return clip_err_prefix(err, "credentials for %s", reg->ref.domain);
	reg->have_creds = r > 0;
	reg->creds_loaded = true;
	return 0;
}

/* "Authorization: Basic base64(user:password)" as a new secret string. */
static int basic_line(const struct clip_registry *reg, char **out, struct clip_err *err)
{
	cleanup_free char *plain = NULL;
	if (asprintf(&plain, "%s:%s", reg->creds.username, reg->creds.password) < 0)
		return clip_err_set(err, ENOMEM, "out of memory");
	size_t n = strlen(plain);
	size_t cap = 4 * ((n + 2) / 3) + 1;
	char *enc = malloc(cap);
	if (enc == NULL) {
		explicit_bzero(plain, n);
		return clip_err_set(err, ENOMEM, "out of memory");
	}
	EVP_EncodeBlock((unsigned char *)enc, (const unsigned char *)plain, (int)n);
	explicit_bzero(plain, n);
	char *line = NULL;
	if (asprintf(&line, "Authorization: Basic %s", enc) < 0)
		line = NULL;
	free_secret(enc);
	if (line == NULL)
		return clip_err_set(err, ENOMEM, "out of memory");
	*out = line;
	return 0;
}

/* After a 401 (or a 403 while holding an expired token): get credentials
 * the registry will take. 0 means "send the request again". */
static int authenticate(struct xfer *x, bool forbidden, struct clip_err *err)
{
	struct clip_registry *reg = x->reg;
	int r = 0;
	pthread_mutex_lock(&reg->auth_lock);
	if (reg->auth_gen != x->auth_gen)
		goto out; /* another request already did it */
	if (forbidden) {
		r = fetch_token(reg, &reg->challenge, err);
		goto out;
	}

	struct clip_auth_challenge ch = { 0 };
	int pick = -1;
	for (size_t i = 0; i < x->nwww && pick < 0; i++)
		if (strncasecmp(x->www_auth[i], "Bearer", 6) == 0)
			pick = (int)i;
	for (size_t i = 0; i < x->nwww && pick < 0; i++)
		if (strncasecmp(x->www_auth[i], "Basic", 5) == 0)
			pick = (int)i;
	if (pick < 0) {
		r = xfer_error(x, err, EACCES,
			       "HTTP 401 without a Bearer or Basic WWW-Authenticate challenge");
		goto out;
	}
	r = clip_auth_parse_challenge(x->www_auth[pick], &ch, err);
	if (r < 0) {
		xfer_prefix(x, err);
		goto out;
	}
	r = load_credentials(reg, err);
	if (r < 0) {
		clip_auth_challenge_clear(&ch);
		goto out;
	}
	if (strcasecmp(ch.scheme, "Basic") == 0) {
		clip_auth_challenge_clear(&ch);
		if (!reg->have_creds || reg->creds.username == NULL) {
			r = xfer_error(x, err, EACCES,
				       "HTTP 401: the registry wants a username and password "
				       "and none were found for %s",
				       reg->ref.domain);
			goto out;
		}
		if (x->sent_basic) {
			r = xfer_error(x, err, EACCES, "HTTP 401: credentials for %s rejected",
				       reg->ref.domain);
			goto out;
		}
		char *line = NULL;
		r = basic_line(reg, &line, err);
		if (r == 0) {
			free_secret(reg->basic_header);
			reg->basic_header = line;
			reg->auth_gen++;
		}
		goto out;
	}
	clip_auth_challenge_clear(&reg->challenge);
	reg->challenge = ch;
	reg->have_challenge = true;
	r = fetch_token(reg, &reg->challenge, err);
out:
	pthread_mutex_unlock(&reg->auth_lock);
	if (r < 0 && strncmp(err->msg, x->what, strlen(x->what)) != 0)
		xfer_prefix(x, err);
	return r;
}

static bool have_credentials(struct clip_registry *reg)
{
	pthread_mutex_lock(&reg->auth_lock);
	bool have = reg->have_creds;
	pthread_mutex_unlock(&reg->auth_lock);
	return have;
}

/* Whether the bearer token sent with this exchange has expired since. */
static bool sent_token_expired(struct xfer *x)
{
	struct clip_registry *reg = x->reg;
	bool expired = false;
	pthread_mutex_lock(&reg->auth_lock);
	if (reg->have_challenge && reg->auth_gen == x->auth_gen) {
		expired = true;
		time_t now = mono_seconds();
		for (struct token *t = reg->tokens; t != NULL; t = t->next)
			if (strcmp(t->scope, reg->scope) == 0 && now < t->usable_until)
				expired = false;
	}
	pthread_mutex_unlock(&reg->auth_lock);
	return expired;
}

/* Start over at the first URL, after waiting `delay_ms`. */
static int xfer_retry(struct xfer *x, long delay_ms, struct clip_err *err)
{
	if (delay_ms > 0)
		sleep_ms(delay_ms);
	x->attempts++;
	atomic_fetch_add(&x->reg->retried, 1);
	x->hops = 0;
	return exchange_begin(x, x->start_url, err);
}

static long backoff_delay(const struct xfer *x)
{
	long d = x->reg->backoff_ms;
	for (int i = 0; i < x->attempts && d < BACKOFF_CAP_MS; i++)
		d *= 2;
	return d < BACKOFF_CAP_MS ? d : BACKOFF_CAP_MS;
}

static const char *attempts_text(const struct xfer *x, char *buf, size_t cap)
{
	if (x->attempts == 0)
		buf[0] = '\0';
	else
		snprintf(buf, cap, " after %d attempts", x->attempts + 1);
	return buf;
}

/* The exchange finished: decide. Returns 0 when the body is complete (eof),
 * 1 when a new exchange was started, or a negative errno. */
static int exchange_conclude(struct xfer *x, struct clip_err *err)
{
	struct clip_registry *reg = x->reg;
	char att[48];
	CURLcode res = x->result;
	long status = x->status;
	int r;

	if (x->cb_code != 0)
		return xfer_error(x, err, x->cb_code, "%s", x->cb_msg);
	if (res == CURLE_WRITE_ERROR && x->stopped)
		res = CURLE_OK;
	/* A cut error body does not change the status. distribution 2.8 does
	 * that on every 416: Content-Length is the blob's size, the body a
	 * one-line message (over HTTP/2 that is a stream error). */
	if (status >= 300 && (res == CURLE_PARTIAL_FILE || res == CURLE_HTTP2_STREAM ||
			      res == CURLE_HTTP2 || res == CURLE_RECV_ERROR))
		res = CURLE_OK;
	/* Everything arrived before the connection failed. */
	if (res != CURLE_OK && x->expected != 0 && x->delivered >= x->expected && status >= 200 &&
	    status <= 299)
		return 0;
	if (res != CURLE_OK) {
		if (transport_retryable(res) && x->attempts < reg->retries) {
			r = xfer_retry(x, backoff_delay(x), err);
			return r < 0 ? r : 1;
		}
		return xfer_error(x, err, transport_errno(x, res), "%s%s",
				  x->errbuf[0] != '\0' ? x->errbuf : curl_easy_strerror(res),
				  attempts_text(x, att, sizeof(att)));
	}
	if (status >= 200 && status <= 299)
		return 0;
	if (status >= 300 && status <= 399 && status != 304) {
		if (x->location == NULL)
			return xfer_error(x, err, EBADMSG, "HTTP %ld without a Location", status);
		if (++x->hops > MAX_REDIRECTS)
			return xfer_error(x, err, ELOOP, "more than %d redirects", MAX_REDIRECTS);
		if (x->post_body != NULL)
			return xfer_error(x, err, EBADMSG, "HTTP %ld redirect of a POST", status);
		cleanup_free char *next = resolve_location(x->url, x->location);
		if (next == NULL)
			return xfer_error(x, err, EBADMSG, "HTTP %ld to an invalid Location",
					  status);
		r = exchange_begin(x, next, err);
		return r < 0 ? r : 1;
	}
	char detail[260];
	describe_error_body(x, detail, sizeof(detail));
	char extra[280];
	snprintf(extra, sizeof(extra), "%s%s%s", detail[0] ? " (" : "", detail,
		 detail[0] ? ")" : "");
	if (x->at_registry && !x->auth_retried &&
	    (status == 401 || (status == 403 && x->sent_bearer && sent_token_expired(x)))) {
		x->auth_retried = true;
		r = authenticate(x, status == 403, err);
		if (r < 0)
			return r;
		x->hops = 0;
		r = exchange_begin(x, x->start_url, err);
		return r < 0 ? r : 1;
	}
	if (status == 416 && x->sent_range)
		return 0;
	if (status_retryable(status) && x->attempts < reg->retries) {
		long delay = status == 429 ? retry_after_ms(x->retry_after) : -1;
		if (delay < 0)
			delay = backoff_delay(x);
		if (delay > RETRY_AFTER_CAP_MS)
			delay = RETRY_AFTER_CAP_MS;
		r = xfer_retry(x, delay, err);
		return r < 0 ? r : 1;
	}
	int code = EIO;
	const char *hint = "";
	if (status == 404) {
		code = ENOENT;
	} else if (status == 401 || status == 403) {
		code = EACCES;
		if (x->sent_basic)
			hint = ": credentials rejected";
		else if (x->sent_bearer)
			hint = have_credentials(reg)
				       ? ": access denied with the credentials found"
				       : ": anonymous access denied (no credentials found)";
	}
	return xfer_error(x, err, code, "HTTP %ld%s%s%s", status, extra, hint,
			  attempts_text(x, att, sizeof(att)));
}

/* Run the transfer until body bytes are buffered or the body has ended. */
static int xfer_fill(struct xfer *x, struct clip_err *err)
{
	while (buf_pending(x) == 0 && !x->eof) {
		int r;
		if (!x->active) {
			r = exchange_begin(x, x->start_url, err);
		} else if (!x->done) {
			r = exchange_pump(x, err);
		} else {
			r = exchange_conclude(x, err);
			if (r == 0) {
				exchange_end(x);
				x->eof = true;
			}
		}
		if (r < 0)
			return r;
	}
	return 0;
}

/* Up to `len` bytes of the body; 0 at its end; negative errno. */
static ssize_t xfer_read(struct xfer *x, void *out, size_t len, struct clip_err *err)
{
	if (len == 0)
		return 0;
	int r = xfer_fill(x, err);
	if (r < 0)
		return r;
	size_t pending = buf_pending(x);
	size_t n = pending < len ? pending : len;
	if (n > 0) {
		memcpy(out, x->buf + x->buf_head, n);
		x->buf_head += n;
		if (x->buf_head == x->buf_len)
			x->buf_head = x->buf_len = 0;
	}
	return (ssize_t)n;
}

/* Read the whole body into a new NUL-terminated buffer of at most `max`
 * bytes. */
static int xfer_read_all(struct xfer *x, size_t max, char **out, size_t *len, struct clip_err *err)
{
	x->max_body = max;
	size_t cap = 16 * 1024, got = 0;
	char *b = malloc(cap + 1);
	if (b == NULL)
		return clip_err_set(err, ENOMEM, "out of memory");
	for (;;) {
		if (got == cap) {
			size_t ncap = cap * 2 > max ? max : cap * 2;
			if (ncap <= cap)
				ncap = cap + 1; /* max reached: the next byte fails in on_body */
			char *nb = realloc(b, ncap + 1);
			if (nb == NULL) {
				free(b);
				return clip_err_set(err, ENOMEM, "out of memory");
			}
			b = nb;
			cap = ncap;
		}
		ssize_t n = xfer_read(x, b + got, cap - got, err);
		if (n < 0) {
			explicit_bzero(b, got);
			free(b);
			return (int)n;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	b[got] = '\0';
	*out = b;
	*len = got;
	return 0;
}

/* ---- tokens ----------------------------------------------------------- */

static char *form_escape(const char *s)
{
	/* libcurl ignores the handle argument since 7.82. */
	char *t = curl_easy_escape(NULL, s, 0);
	char *copy = t != NULL ? strdup(t) : NULL;
	if (t != NULL) {
		explicit_bzero(t, strlen(t));
		curl_free(t);
	}
	return copy;
}

static void store_token(struct clip_registry *reg, const char *scope, char *value, long life)
{
	long margin = life / 4 < TOKEN_MARGIN_S ? life / 4 : TOKEN_MARGIN_S;
	time_t until = mono_seconds() + life - margin;
	for (struct token *t = reg->tokens; t != NULL; t = t->next) {
		if (strcmp(t->scope, scope) == 0) {
			free_secret(t->value);
			t->value = value;
			t->usable_until = until;
			return;
		}
	}
	struct token *t = calloc(1, sizeof(*t));
	char *sc = strdup(scope);
	if (t == NULL || sc == NULL) {
		/* Not cached: the next request gets a 401 and asks again. */
		free(t);
		free(sc);
		free_secret(value);
		return;
	}
	t->scope = sc;
	t->value = value;
	t->usable_until = until;
	t->next = reg->tokens;
	reg->tokens = t;
}

/* Get a bearer token for `ch` (under auth_lock) and make it the one
 * requests use. */
static int fetch_token(struct clip_registry *reg, const struct clip_auth_challenge *ch,
		       struct clip_err *err)
{
	const char *realm = ch->realm;
	if (realm == NULL ||
	    (strncasecmp(realm, "https://", 8) != 0 && strncasecmp(realm, "http://", 7) != 0))
		return clip_err_set(
			err, EBADMSG,
			"WWW-Authenticate: Bearer realm \"%.200s\" is not an http(s) URL",
			realm != NULL ? realm : "");
	const char *scope = ch->scope != NULL && ch->scope[0] != '\0' ? ch->scope : reg->scope;
	if (!reg->creds_loaded) {
		int r = load_credentials(reg, err);
		if (r < 0)
			return r;
	}
	cleanup_free char *service = ch->service ? form_escape(ch->service) : NULL;
	cleanup_free char *esc_scope = form_escape(scope);
	bool refresh = reg->have_creds && reg->creds.identity_token != NULL;
	char *esc_refresh = refresh ? form_escape(reg->creds.identity_token) : NULL;
	if ((ch->service && service == NULL) || esc_scope == NULL || (refresh && !esc_refresh)) {
		free_secret(esc_refresh);
		return clip_err_set(err, ENOMEM, "out of memory");
	}

	cleanup_free char *url = NULL;
	char *body = NULL;
	int ar;
	if (refresh) {
		/* docker's OAuth2 refresh-token grant */
		ar = asprintf(&url, "%s", realm);
		if (ar >= 0)
			ar = asprintf(&body,
				      "grant_type=refresh_token&refresh_token=%s&client_id=clip"
				      "%s%s&scope=%s",
				      esc_refresh, service ? "&service=" : "",
				      service ? service : "", esc_scope);
	} else {
		ar = asprintf(&url, "%s%cscope=%s%s%s", realm, strchr(realm, '?') ? '&' : '?',
			      esc_scope, service ? "&service=" : "", service ? service : "");
	}
	free_secret(esc_refresh);
	if (ar < 0) {
		free_secret(body);
		return clip_err_set(err, ENOMEM, "out of memory");
	}

	cleanup_free char *host = url_host(realm);
	char what[300];
	snprintf(what, sizeof(what), "token server %s", host != NULL ? host : "?");
	/* The path, not the query, names the request in messages. */
	char target[300];
	snprintf(target, sizeof(target), "%.*s", (int)strcspn(realm, "?"), realm);
	struct xfer x;
	int r = xfer_init(&x, reg, refresh ? "POST" : "GET", what, target, url, false, err);
	if (r < 0) {
		free_secret(body);
		return r;
	}
	x.post_body = body;
	if (!refresh && reg->have_creds && reg->creds.username != NULL) {
		r = basic_line(reg, &x.explicit_auth, err);
		if (r < 0) {
			xfer_clear(&x);
			return r;
		}
	}
	char *answer = NULL;
	size_t len = 0;
	r = xfer_read_all(&x, CLIP_AUTH_MAX_HELPER, &answer, &len, err);
	if (r < 0) {
		if (r == -EFBIG)
			xfer_error(&x, err, EFBIG, "token response larger than %u bytes",
				   CLIP_AUTH_MAX_HELPER);
		else if (r == -EACCES && reg->have_creds)
			clip_err_prefix(err, "credentials for %s rejected", reg->ref.domain);
		else if (r == -EACCES)
			clip_err_prefix(err,
					"anonymous access refused and no credentials for %s found",
					reg->ref.domain);
		xfer_clear(&x);
		return r;
	}
	char *token = NULL;
	long life = 0;
	r = clip_auth_parse_token_response(answer, len, &token, &life, err);
	explicit_bzero(answer, len);
	free(answer);
	if (r < 0) {
		xfer_prefix(&x, err);
		xfer_clear(&x);
		return r;
	}
	xfer_clear(&x);
	char *sc = strdup(scope);
	if (sc == NULL) {
		free_secret(token);
		return clip_err_set(err, ENOMEM, "out of memory");
	}
	store_token(reg, sc, token, life);
	free(reg->scope);
	reg->scope = sc;
	reg->auth_gen++;
	return 0;
}

/* ---- open / free ------------------------------------------------------ */

int clip_registry_open(const struct clip_ref *ref, const struct clip_registry_options *options,
		       struct clip_registry **out, struct clip_err *err)
{
	struct clip_err scratch;
	if (err == NULL)
		err = &scratch;
	if (ref == NULL || ref->domain == NULL || ref->api_host == NULL || ref->repository == NULL)
		return clip_err_set(err, EINVAL, "registry: incomplete image reference");
	int lrc = clip_curl_load(err);
	if (lrc < 0)
		return clip_err_prefix(err, "registry");
	pthread_once(&curl_once, curl_init_once);
	if (curl_init_result != CURLE_OK)
		return clip_err_set(err, EIO, "registry: curl_global_init: %s",
				    curl_easy_strerror(curl_init_result));
	struct clip_registry_options none = { 0 };
	if (options == NULL)
		options = &none;

	struct clip_registry *reg = calloc(1, sizeof(*reg));
	if (reg == NULL)
		return clip_err_set(err, ENOMEM, "out of memory");
	pthread_mutex_init(&reg->pool_lock, NULL);
	pthread_mutex_init(&reg->auth_lock, NULL);
	for (size_t i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&reg->share_locks[i], NULL);
	reg->connect_timeout_ms =
		options->connect_timeout_ms > 0 ? options->connect_timeout_ms : DEFAULT_CONNECT_MS;
	reg->low_speed_time_s =
		options->low_speed_time_s > 0 ? options->low_speed_time_s : DEFAULT_LOW_SPEED_S;
	reg->retries = options->retries < 0    ? 0
		       : options->retries == 0 ? DEFAULT_RETRIES
					       : options->retries;
	reg->backoff_ms = options->backoff_ms > 0 ? options->backoff_ms : DEFAULT_BACKOFF_MS;

	/* A CA given for a loopback registry means it speaks TLS. */
	bool plain = options->plain_http ||
		     (clip_ref_host_is_loopback(ref->api_host) && options->ca_file == NULL);
	reg->ref.domain = strdup(ref->domain);
	reg->ref.api_host = strdup(ref->api_host);
	reg->ref.repository = strdup(ref->repository);
	reg->ref.tag = ref->tag ? strdup(ref->tag) : NULL;
	reg->ref.digest = ref->digest ? strdup(ref->digest) : NULL;
	reg->ca_file = options->ca_file ? strdup(options->ca_file) : NULL;
	if (asprintf(&reg->name, "%s/%s", ref->api_host, ref->repository) < 0)
		reg->name = NULL;
	if (asprintf(&reg->base, "%s://%s", plain ? "http" : "https", ref->api_host) < 0)
		reg->base = NULL;
	if (asprintf(&reg->scope, "repository:%s:pull", ref->repository) < 0)
		reg->scope = NULL;
	/* docker (Go's ProxyFromEnvironment) never proxies loopback; curl
	 * would. Setting CURLOPT_NOPROXY replaces NO_PROXY, so keep it. */
	const char *np = getenv("NO_PROXY");
	if (np == NULL || np[0] == '\0')
		np = getenv("no_proxy");
	if (asprintf(&reg->noproxy, "%s%slocalhost,127.0.0.0/8,::1", np != NULL ? np : "",
		     np != NULL && np[0] != '\0' ? "," : "") < 0)
		reg->noproxy = NULL;
	if (reg->ref.domain == NULL || reg->ref.api_host == NULL || reg->ref.repository == NULL ||
	    (ref->tag && !reg->ref.tag) || (ref->digest && !reg->ref.digest) ||
	    (options->ca_file && !reg->ca_file) || reg->name == NULL || reg->base == NULL ||
	    reg->scope == NULL || reg->noproxy == NULL) {
		clip_registry_free(reg);
		return clip_err_set(err, ENOMEM, "out of memory");
	}
	reg->origin = url_origin(reg->base);
	if (reg->origin == NULL) {
		int r = clip_err_set(err, EINVAL, "registry %s: not a valid host", ref->api_host);
		clip_registry_free(reg);
		return r;
	}
	reg->share = curl_share_init();
	if (reg->share == NULL || curl_share_setopt(reg->share, CURLSHOPT_LOCKFUNC, share_lock) ||
	    curl_share_setopt(reg->share, CURLSHOPT_UNLOCKFUNC, share_unlock) ||
	    curl_share_setopt(reg->share, CURLSHOPT_USERDATA, reg) ||
	    curl_share_setopt(reg->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) ||
	    curl_share_setopt(reg->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION)) {
		clip_registry_free(reg);
		return clip_err_set(err, ENOMEM, "registry: cannot set up a curl share handle");
	}
	*out = reg;
	return 0;
}

void clip_registry_free(struct clip_registry *reg)
{
	if (reg == NULL)
		return;
	while (reg->pool != NULL) {
		struct handle *h = reg->pool;
		reg->pool = h->next;
		handle_free(h);
	}
	if (reg->share != NULL)
		curl_share_cleanup(reg->share);
	while (reg->tokens != NULL) {
		struct token *t = reg->tokens;
		reg->tokens = t->next;
		free(t->scope);
		free_secret(t->value);
		free(t);
	}
	clip_credentials_clear(&reg->creds);
	clip_auth_challenge_clear(&reg->challenge);
	free_secret(reg->basic_header);
	clip_ref_clear(&reg->ref);
	free(reg->name);
	free(reg->base);
	free(reg->origin);
	free(reg->ca_file);
	free(reg->noproxy);
	free(reg->scope);
	for (size_t i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&reg->share_locks[i]);
	pthread_mutex_destroy(&reg->pool_lock);
	pthread_mutex_destroy(&reg->auth_lock);
	free(reg);
}

const char *clip_registry_name(const struct clip_registry *reg)
{
	return reg->name;
}

void clip_registry_stats(const struct clip_registry *reg, struct clip_registry_stats *out)
{
	struct clip_registry *r = (struct clip_registry *)reg;
	out->requests = atomic_load(&r->requests);
	out->retries = atomic_load(&r->retried);
	out->bytes_received = atomic_load(&r->bytes_received);
}

/* ---- manifests -------------------------------------------------------- */

static bool tag_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 128)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			    (c >= '0' && c <= '9') || c == '_';
		if (!word && (i == 0 || (c != '.' && c != '-')))
			return false;
	}
	return true;
}

/* An API request under /v2/<repository>/. */
static int registry_xfer(struct clip_registry *reg, const char *kind, const char *reference,
			 struct xfer *x, struct clip_err *err)
{
	cleanup_free char *path = NULL;
	cleanup_free char *url = NULL;
	cleanup_free char *what = NULL;
	if (asprintf(&path, "/v2/%s/%s/%s", reg->ref.repository, kind, reference) < 0 ||
	    asprintf(&url, "%s%s", reg->base, path) < 0 ||
	    asprintf(&what, "registry %s", reg->ref.api_host) < 0)
		return clip_err_set(err, ENOMEM, "out of memory");
	return xfer_init(x, reg, "GET", what, path, url, true, err);
}

/* What a fetched manifest or index is: its own mediaType, else the
 * Content-Type the registry gave, else guessed from its members (the OCI
 * types, which may leave mediaType out). A new string. */
static char *document_media_type(const char *buf, size_t len, const char *content_type)
{
	json_t *root = json_loadb(buf, len, 0, NULL);
	const char *mt = json_string_value(json_object_get(root, "mediaType"));
	char *out = NULL;
	if (mt != NULL) {
		out = strdup(mt);
	} else if (content_type != NULL && strncasecmp(content_type, "application/vnd.", 16) == 0) {
		out = clip_strdup_len(content_type, strcspn(content_type, "; \t"));
	} else {
		out = strdup(json_is_array(json_object_get(root, "manifests"))
				     ? CLIP_MT_OCI_INDEX
				     : CLIP_MT_OCI_MANIFEST);
	}
	json_decref(root);
	return out;
}

/* GET manifests/<reference>. `digest`, when known, must match; `size`
 * (nonzero) too. A tag's manifest is checked against Docker-Content-Digest
 * when the registry sends one. *digest_out gets the document's digest. */
static int fetch_manifest(struct clip_registry *reg, const char *reference, const char *digest,
			  uint64_t size, char **buf, size_t *len, char **media_type,
			  char digest_out[72], struct clip_err *err)
{
	if (size > CLIP_IMAGE_MAX_JSON)
		return clip_err_set(
			err, EFBIG,
			"manifest %s: descriptor size %llu is more than the limit of %u", reference,
			(unsigned long long)size, CLIP_IMAGE_MAX_JSON);
	struct xfer x;
	int r = registry_xfer(reg, "manifests", reference, &x, err);
	if (r < 0)
		return r;
	x.accept = manifest_accept;
	cleanup_free char *b = NULL;
	size_t n = 0;
	r = xfer_read_all(&x, size ? (size_t)size : CLIP_IMAGE_MAX_JSON, &b, &n, err);
	if (r == -EFBIG)
		r = xfer_error(&x, err, EFBIG, "manifest larger than %llu bytes",
			       (unsigned long long)(size ? size : CLIP_IMAGE_MAX_JSON));
	if (r == 0 && size != 0 && n != size)
		r = xfer_error(&x, err, EBADMSG, "manifest is %zu bytes, descriptor says %llu", n,
			       (unsigned long long)size);
	if (r == 0) {
		const char *check = digest;
		if (check == NULL && x.docker_digest != NULL && clip_digest_valid(x.docker_digest))
			check = x.docker_digest;
		if (check != NULL && clip_digest_verify(b, n, check, err) < 0)
			r = xfer_prefix(&x, err);
	}
	if (r == 0) {
		clip_digest_of(b, n, digest_out);
		*media_type = document_media_type(b, n, x.content_type);
		if (*media_type == NULL)
			r = clip_err_set(err, ENOMEM, "out of memory");
	}
	xfer_clear(&x);
	if (r < 0)
		return r;
	*buf = clip_steal(b);
	*len = n;
	return 0;
}

/* GET blobs/<digest> whole (a config), checked against size and digest. */
static int fetch_small_blob(struct clip_registry *reg, const char *digest, uint64_t size,
			    char **buf, size_t *len, struct clip_err *err)
{
	if (size > CLIP_IMAGE_MAX_JSON)
		return clip_err_set(err, EFBIG, "descriptor size %llu is more than the limit of %u",
				    (unsigned long long)size, CLIP_IMAGE_MAX_JSON);
	struct xfer x;
	int r = registry_xfer(reg, "blobs", digest, &x, err);
	if (r < 0)
		return r;
	cleanup_free char *b = NULL;
	size_t n = 0;
	/* One byte over the size so that a longer blob is told apart. */
	r = xfer_read_all(&x, (size_t)size + 1, &b, &n, err);
	if (r == 0 && n != size)
		r = xfer_error(&x, err, EBADMSG, "blob is %zu bytes, descriptor says %llu", n,
			       (unsigned long long)size);
	if (r == -EFBIG)
		r = xfer_error(&x, err, EBADMSG, "blob is larger than its descriptor's %llu bytes",
			       (unsigned long long)size);
	if (r == 0 && clip_digest_verify(b, n, digest, err) < 0)
		r = xfer_prefix(&x, err);
	xfer_clear(&x);
	if (r < 0)
		return r;
	*buf = clip_steal(b);
	*len = n;
	return 0;
}

/* The entry of image index `buf` for `platform`: digest, media type, size. */
static int follow_index(const char *buf, size_t len, const struct clip_platform *platform,
			char digest[72], char **media_type, uint64_t *size, struct clip_err *err)
{
	cleanup_free char *d = NULL;
	cleanup_free char *mt = NULL;
	int r = clip_image_index_select(buf, len, platform, &d, &mt, err);
	if (r < 0)
		return r;
	/* index_select names the entry, not its size: find it again (it parsed
	 * once already). */
	json_t *root = json_loadb(buf, len, 0, NULL);
	json_t *manifests = json_object_get(root, "manifests");
	json_t *entry = NULL;
	for (size_t i = 0; i < json_array_size(manifests) && entry == NULL; i++) {
		json_t *e = json_array_get(manifests, i);
		const char *ed = json_string_value(json_object_get(e, "digest"));
		const char *em = json_string_value(json_object_get(e, "mediaType"));
		if (ed != NULL && em != NULL && strcmp(ed, d) == 0 && strcmp(em, mt) == 0)
			entry = e;
	}
	json_t *sz = json_object_get(entry, "size");
	if (entry == NULL || !json_is_integer(sz) || json_integer_value(sz) < 0) {
		json_decref(root);
		return clip_err_set(err, EBADMSG, "entry %s: \"size\" is missing or invalid", d);
	}
	*size = (uint64_t)json_integer_value(sz);
	json_decref(root);
	snprintf(digest, 72, "%s", d);
	*media_type = clip_steal(mt);
	return 0;
}

static bool is_manifest_type(const char *mt)
{
	return strcmp(mt, CLIP_MT_OCI_MANIFEST) == 0 || strcmp(mt, CLIP_MT_DOCKER_MANIFEST) == 0;
}

static int resolve(struct clip_registry *reg, const char *reference,
		   const struct clip_platform *platform, struct clip_image *img,
		   struct clip_err *err)
{
	bool by_digest = strncmp(reference, "sha256:", 7) == 0;
	char digest[72];
	cleanup_free char *buf = NULL;
	cleanup_free char *mt = NULL;
	size_t len;
	int r = fetch_manifest(reg, reference, by_digest ? reference : NULL, 0, &buf, &len, &mt,
			       digest, err);
	if (r < 0)
		return r;
	bool from_index = false;
	for (int depth = 0; clip_media_type_is_index(mt); depth++) {
		if (depth == MAX_NESTED_INDEXES)
			return clip_err_set(
				err, ELOOP,
				"image index %s: image indexes nested more than %d deep", digest,
				MAX_NESTED_INDEXES);
		char index_digest[72];
		memcpy(index_digest, digest, sizeof(index_digest));
		char *next_mt = NULL;
		uint64_t size = 0;
		r = follow_index(buf, len, platform, digest, &next_mt, &size, err);
		if (r < 0)
			return clip_err_prefix(err, "image index %s", index_digest);
		free(mt);
		mt = next_mt;
		free(buf);
		buf = NULL;
		cleanup_free char *fetched_mt = NULL;
		char got[72];
		r = fetch_manifest(reg, digest, digest, size, &buf, &len, &fetched_mt, got, err);
		if (r < 0)
			return r; /* the message names the request, hence the digest */
		from_index = true;
	}
	if (!is_manifest_type(mt)) {
		if (strstr(mt, "docker.distribution.manifest.v1") != NULL)
			return clip_err_set(err, ENOTSUP,
					    "manifest %s: Docker image manifest schema 1 is not "
					    "supported (convert the image to schema 2 or OCI)",
					    digest);
		return clip_err_set(err, ENOTSUP, "manifest %s: unsupported media type \"%.100s\"",
				    digest, mt);
	}
	r = clip_image_parse_manifest(buf, len, img, err);
	if (r < 0)
		return clip_err_prefix(err, "manifest %s", digest);
	if (from_index && strcmp(img->manifest_media_type, mt) != 0)
		return clip_err_set(err, EBADMSG, "manifest %s: media type %s, descriptor says %s",
				    digest, img->manifest_media_type, mt);
	free(buf);
	buf = NULL;
	char config_digest[72];
	snprintf(config_digest, sizeof(config_digest), "%s", img->config_digest);
	r = fetch_small_blob(reg, config_digest, img->config_size, &buf, &len, err);
	if (r < 0)
		return r; /* the message names the request, hence the digest */
	r = clip_image_parse_config(buf, len, img, err);
	if (r < 0)
		return clip_err_prefix(err, "config %s", config_digest);
	return 0;
}

int clip_registry_resolve(struct clip_registry *reg, const char *reference,
			  const struct clip_platform *platform, struct clip_image *img,
			  struct clip_err *err)
{
	struct clip_err scratch;
	if (err == NULL)
		err = &scratch;
	if (reference == NULL || !(clip_digest_valid(reference) || tag_valid(reference)))
		return clip_err_set(err, EINVAL, "registry %s: invalid tag or digest \"%.200s\"",
				    reg->name, reference != NULL ? reference : "(null)");
	struct clip_image tmp;
	memset(&tmp, 0, sizeof(tmp));
	int r = resolve(reg, reference, platform, &tmp, err);
	if (r < 0) {
		clip_image_clear(&tmp);
		/* Request errors already name the registry and the request. */
		if (strncmp(err->msg, "registry ", 9) == 0)
			return r;
		return clip_err_prefix(err, "registry %s: %s", reg->name, reference);
	}
	*img = tmp;
	return 0;
}

/* ---- blobs ------------------------------------------------------------ */

struct blob_stream {
	struct xfer x;
	uint64_t size;
	char digest[72];
};

static ssize_t blob_stream_read(void *opaque, void *buf, size_t len, struct clip_err *err)
{
	struct blob_stream *s = opaque;
	struct clip_err scratch;
	if (err == NULL)
		err = &scratch;
	ssize_t n = xfer_read(&s->x, buf, len, err);
	if (n == -EFBIG)
		return xfer_error(&s->x, err, EBADMSG, "blob is larger than its %llu bytes",
				  (unsigned long long)s->size);
	if (n == 0 && s->size != 0 && s->x.delivered != s->size)
		return xfer_error(&s->x, err, EBADMSG, "blob ended after %llu of its %llu bytes",
				  (unsigned long long)s->x.delivered, (unsigned long long)s->size);
	return n;
}

static void blob_stream_close(void *opaque)
{
	struct blob_stream *s = opaque;
	xfer_clear(&s->x);
	free(s);
}

int clip_registry_blob_stream(struct clip_registry *reg, const char *digest, uint64_t size,
			      struct clip_stream *out, struct clip_err *err)
{
	struct clip_err scratch;
	if (err == NULL)
		err = &scratch;
	if (!clip_digest_valid(digest))
		return clip_err_set(err, EINVAL, "registry %s: invalid digest \"%.100s\"",
				    reg->name, digest != NULL ? digest : "(null)");
	struct blob_stream *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return clip_err_set(err, ENOMEM, "out of memory");
	int r = registry_xfer(reg, "blobs", digest, &s->x, err);
	if (r < 0) {
		free(s);
		return r;
	}
	s->size = size;
	s->x.max_body = size;
	s->x.expected = size;
	snprintf(s->digest, sizeof(s->digest), "%s", digest);
	/* Run the request until the first bytes (or the end, or an error), so
	 * that a missing blob or refused credentials show up here. */
	r = xfer_fill(&s->x, err);
	if (r < 0) {
		blob_stream_close(s);
		return r;
	}
	out->read = blob_stream_read;
	out->close = blob_stream_close;
	out->opaque = s;
	return 0;
}

ssize_t clip_registry_blob_read(struct clip_registry *reg, const char *digest, void *buf,
				size_t len, uint64_t offset, struct clip_err *err)
{
	struct clip_err scratch;
	if (err == NULL)
		err = &scratch;
	if (!clip_digest_valid(digest))
		return clip_err_set(err, EINVAL, "registry %s: invalid digest \"%.100s\"",
				    reg->name, digest != NULL ? digest : "(null)");
	if (len == 0)
		return 0;
	if (len > (size_t)SSIZE_MAX || offset > UINT64_MAX - len)
		return clip_err_set(err, EINVAL, "registry %s: blob %s: range out of bounds",
				    reg->name, digest);
	struct xfer x;
	int r = registry_xfer(reg, "blobs", digest, &x, err);
	if (r < 0)
		return r;
	x.ranged = true;
	x.range_start = offset;
	x.range_end = offset + len - 1;
	x.expected = len;
	size_t got = 0;
	while (got < len) {
		ssize_t n = xfer_read(&x, (unsigned char *)buf + got, len - got, err);
		if (n < 0) {
			xfer_clear(&x);
			return n;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	xfer_clear(&x);
	return (ssize_t)got;
}
