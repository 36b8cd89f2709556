/* clip: the registry client's HTTP transport (see registry_internal.h).
 *
 * Every request goes through one engine, `struct clip_transfer`: a transfer
 * driven by a curl multi handle from whichever thread reads it, so that a
 * blob's bytes reach the indexer as they arrive (the indexer's read() pulls,
 * the write callback fills a buffer, the transfer is paused when the buffer
 * is full). Around one HTTP exchange the engine does by hand what the
 * protocol needs: redirects (Location resolved with the curl URL API; the
 * registry's Authorization only ever goes to the registry's own origin),
 * authentication (a 401 parses WWW-Authenticate, fetches a bearer token or
 * picks Basic credentials, and the request is retried once), and retries
 * with backoff (connection errors, 429 with Retry-After, 5xx) that resume a
 * cut body with a Range request from the last byte received.
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
#include "registry_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "util.h"

#define MAX_REDIRECTS	    5
#define RETRY_AFTER_CAP_MS  30000L
#define BACKOFF_CAP_MS	    30000L
#define POOL_MAX	    16
#define PAUSE_BYTES	    (4u << 20) /* pause the transfer when this much is buffered */
#define HEADER_VALUE_MAX    16384
#define LOW_SPEED_LIMIT	    1024L
#define DEFAULT_CONNECT_MS  5000L
#define DEFAULT_LOW_SPEED_S 15L
#define DEFAULT_RETRIES	    4
#define DEFAULT_BACKOFF_MS  200L
#define USER_AGENT	    "clip/0.1"

/* ---- global state ----------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init_once(void)
{
	curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- helpers ------------------------------------------------------------ */

/* The share handle's locks: a mutex for each kind of data it shares. */
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

static bool cancelled(const struct clip_registry *reg)
{
	return atomic_load_explicit(&reg->cancelled, memory_order_relaxed);
}

/* Wait `ms` before a retry, in slices so that clip_registry_cancel ends
 * the wait (a Retry-After may ask for 30 s). */
static void sleep_ms(const struct clip_registry *reg, long ms)
{
	while (ms > 0 && !cancelled(reg)) {
		long slice = ms < 50 ? ms : 50;
		struct timespec ts = { 0, slice * 1000000L };
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
		ms -= slice;
	}
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

char *clip_registry_url_resolve(const char *base, const char *location, const char *query)
{
	CURLU *u = curl_url();
	if (u == NULL)
		return NULL;
	char *full = NULL, *scheme = NULL, *out = NULL;
	if (curl_url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK &&
	    curl_url_set(u, CURLUPART_URL, location, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
	    (strcasecmp(scheme, "http") == 0 || strcasecmp(scheme, "https") == 0) &&
	    (query == NULL || curl_url_set(u, CURLUPART_QUERY, query,
					   CURLU_APPENDQUERY | CURLU_URLENCODE) == CURLUE_OK) &&
	    curl_url_get(u, CURLUPART_URL, &full, 0) == CURLUE_OK)
		out = strdup(full);
	curl_free(full);
	curl_free(scheme);
	curl_url_cleanup(u);
	return out;
}

/* ---- the handle pool -------------------------------------------------- */

/* An easy handle and the multi handle that drives it, whose connection
 * cache keeps the connections it used. */
struct handle {
	CURL *easy;
	CURLM *multi;
	struct handle *next;
};

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

static void slist_free_wipe(struct curl_slist *l)
{
	for (struct curl_slist *p = l; p != NULL; p = p->next)
		explicit_bzero(p->data, strlen(p->data));
	curl_slist_free_all(l);
}

static void response_reset(struct clip_transfer *x)
{
	free(x->location);
	free(x->retry_after);
	free(x->content_range);
	free(x->content_type);
	free(x->docker_digest);
	free(x->etag);
	free(x->oci_subject);
	free(x->oci_filters);
	x->location = x->retry_after = x->content_range = x->content_type = x->docker_digest = NULL;
	x->etag = x->oci_subject = x->oci_filters = NULL;
	for (size_t i = 0; i < x->nwww; i++)
		free(x->www_auth[i]);
	x->nwww = 0;
	x->status = 0;
	x->errbody_len = 0;
	x->first_write = true;
	x->skip = 0;
}

/* Take the handle out of its multi handle and forget the exchange. */
static void exchange_end(struct clip_transfer *x)
{
	if (x->h != NULL && x->active)
		curl_multi_remove_handle(x->h->multi, x->h->easy);
	x->active = false;
	slist_free_wipe(x->headers);
	x->headers = NULL;
}

void clip_transfer_clear(struct clip_transfer *x)
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
int clip_transfer_init(struct clip_transfer *x, struct clip_registry *reg, const char *method,
		       const char *what, const char *target, const char *url, bool registry_request,
		       struct clip_err *err)
{
	memset(x, 0, sizeof(*x));
	x->reg = reg;
	x->method = method;
	x->registry_request = registry_request;
	x->range_end = CLIP_TRANSFER_OPEN_END;
	x->what = strdup(what);
	x->target = strdup(target);
	x->start_url = strdup(url);
	x->start_origin = url_origin(url);
	if (x->what == NULL || x->target == NULL || x->start_url == NULL) {
		clip_transfer_clear(x);
		return clip_err_nomem(err);
	}
	if (x->start_origin == NULL) {
		int r = clip_err_set(err, EINVAL, "%s: invalid URL %.200s", what, url);
		clip_transfer_clear(x);
		return r;
	}
	return 0;
}

/* "WHAT: METHOD TARGET: <reason>" */
int clip_transfer_error(struct clip_transfer *x, struct clip_err *err, int code, const char *fmt,
			...)
{
	char reason[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	return clip_err_set(err, code, "%s: %s %s: %s", x->what, x->method, x->target, reason);
}

int clip_transfer_prefix(struct clip_transfer *x, struct clip_err *err)
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
	struct clip_transfer *x = user;
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
	else if (header_is(line, len, "ETag"))
		slot = &x->etag;
	else if (header_is(line, len, "OCI-Subject"))
		slot = &x->oci_subject;
	else if (header_is(line, len, "OCI-Filters-Applied"))
		slot = &x->oci_filters;
	if (slot != NULL) {
		free(*slot);
		*slot = header_value(line, len, strcspn(line, ":"));
	} else if (header_is(line, len, "WWW-Authenticate") &&
		   x->nwww < CLIP_TRANSFER_MAX_CHALLENGES) {
		char *v = header_value(line, len, strlen("WWW-Authenticate"));
		if (v != NULL)
			x->www_auth[x->nwww++] = v;
	}
	return len;
}

static size_t buf_pending(const struct clip_transfer *x)
{
	return x->buf_len - x->buf_head;
}

static int buf_append(struct clip_transfer *x, const void *data, size_t n)
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

static void callback_error(struct clip_transfer *x, int code, const char *msg)
{
	x->cb_code = code;
	snprintf(x->cb_msg, sizeof(x->cb_msg), "%s", msg);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *user)
{
	struct clip_transfer *x = user;
	size_t n = size * nmemb;
	if (x->status < 200 || x->status > 299) {
		size_t room = sizeof(x->errbody) - 1 - x->errbody_len;
		size_t take = n < room ? n : room;
		memcpy(x->errbody + x->errbody_len, data, take);
		x->errbody_len += take;
		x->errbody[x->errbody_len] = '\0';
		CLIP_COUNT(x->reg->bytes_received, n);
		return n;
	}
	/* Before anything changes: a paused chunk is delivered again. */
	if (buf_pending(x) >= PAUSE_BYTES) {
		x->paused = true;
		return CURL_WRITEFUNC_PAUSE;
	}
	CLIP_COUNT(x->reg->bytes_received, n);
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
		x->want = x->range_end == CLIP_TRANSFER_OPEN_END ? CLIP_TRANSFER_OPEN_END
								 : x->range_end + 1 - x->sent_start;
	}
	size_t off = 0;
	if (x->skip > 0) {
		off = x->skip < n ? (size_t)x->skip : n;
		x->skip -= off;
	}
	size_t take = n - off;
	if (x->want != CLIP_TRANSFER_OPEN_END && take > x->want)
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
	if (x->want != CLIP_TRANSFER_OPEN_END) {
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
static char *registry_auth_header(struct clip_transfer *x)
{
	struct clip_registry *reg = x->reg;
	char *line = NULL;
	pthread_mutex_lock(&reg->auth_lock);
	x->auth_gen = reg->auth_gen;
	if (reg->basic_header != NULL) {
		line = strdup(reg->basic_header);
		x->sent_basic = line != NULL;
	} else {
		const char *token = clip_registry_current_token(reg);
		if (token != NULL) {
			if (asprintf(&line, "Authorization: Bearer %s", token) < 0)
				line = NULL;
			x->sent_bearer = line != NULL;
		}
	}
	pthread_mutex_unlock(&reg->auth_lock);
	return line;
}

/* Append `line` to *list (curl copies it); false when out of memory, and
 * then *list is unchanged. */
static bool header_append(struct curl_slist **list, const char *line)
{
	struct curl_slist *n = curl_slist_append(*list, line);
	if (n == NULL)
		return false;
	*list = n;
	return true;
}

/* The request headers of an exchange with `origin` into x->headers: Accept,
 * Authorization (the registry's only to its own origin, an explicit one only
 * to the first URL's), Range (resuming after what was delivered), and a
 * form's Content-Type. */
static int exchange_headers(struct clip_transfer *x, const char *origin, struct clip_err *err)
{
	struct curl_slist *hl = NULL;
	bool ok = true;
	if (x->accept != NULL)
		ok = header_append(&hl, x->accept);
	x->at_registry = x->registry_request && strcmp(origin, x->reg->origin) == 0;
	if (x->at_registry) {
		char *line = registry_auth_header(x);
		if (line != NULL) {
			ok = header_append(&hl, line) && ok;
			free_secret(line);
		}
	}
	if (x->explicit_auth != NULL && strcmp(origin, x->start_origin) == 0)
		ok = header_append(&hl, x->explicit_auth) && ok;
	x->sent_range = x->ranged || x->delivered > 0;
	x->sent_start = (x->ranged ? x->range_start : 0) + x->delivered;
	if (x->sent_range) {
		char range[80];
		if (x->range_end != CLIP_TRANSFER_OPEN_END)
			snprintf(range, sizeof(range), "Range: bytes=%llu-%llu",
				 (unsigned long long)x->sent_start,
				 (unsigned long long)x->range_end);
		else
			snprintf(range, sizeof(range), "Range: bytes=%llu-",
				 (unsigned long long)x->sent_start);
		ok = header_append(&hl, range) && ok;
	}
	if (x->post_body != NULL)
		ok = header_append(&hl, "Content-Type: application/x-www-form-urlencoded") && ok;
	if (x->upload_type != NULL)
		ok = header_append(&hl, x->upload_type) && ok;
	if (x->extra_header != NULL)
		ok = header_append(&hl, x->extra_header) && ok;
	x->headers = hl;
	if (!ok)
		return clip_err_nomem(err);
	return 0;
}

/* Set the easy handle's options for the exchange x->url with x->headers:
 * the registry's timeouts, CA, proxy exceptions and share handle, and the
 * callbacks that fill x. */
static CURLcode exchange_options(struct clip_transfer *x)
{
	struct clip_registry *reg = x->reg;
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
	} else if (strcmp(x->method, "POST") == 0 || strcmp(x->method, "PUT") == 0) {
		/* The whole body from memory: sent again as it is on a retry,
		 * with no read callback to rewind. An empty POST still is one. */
		SETOPT(CURLOPT_POSTFIELDS, x->upload != NULL ? x->upload : "");
		SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->upload_len);
		if (strcmp(x->method, "PUT") == 0)
			SETOPT(CURLOPT_CUSTOMREQUEST, "PUT");
	} else if (strcmp(x->method, "HEAD") == 0) {
		SETOPT(CURLOPT_NOBODY, 1L);
	}
#undef SETOPT
	return c;
}

/* Start one exchange with `url`. */
static int exchange_begin(struct clip_transfer *x, const char *url, struct clip_err *err)
{
	exchange_end(x);
	response_reset(x);
	if (x->url != url) {
		char *u = strdup(url);
		if (u == NULL)
			return clip_err_nomem(err);
		free(x->url);
		x->url = u;
	}
	if (x->h == NULL) {
		x->h = pool_get(x->reg);
		if (x->h == NULL)
			return clip_err_nomem(err);
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
		return clip_transfer_error(x, err, EBADMSG, "invalid URL %.200s", x->url);
	int r = exchange_headers(x, origin, err);
	if (r < 0)
		return r;
	CURLcode c = exchange_options(x);
	if (c != CURLE_OK)
		return clip_transfer_error(x, err, EIO, "curl: %s", curl_easy_strerror(c));
	CURLMcode mc = curl_multi_add_handle(x->h->multi, x->h->easy);
	if (mc != CURLM_OK)
		return clip_transfer_error(x, err, EIO, "curl: %s", curl_multi_strerror(mc));
	x->active = true;
	CLIP_COUNT(x->reg->requests, 1);
	return 0;
}

/* Let curl run the exchange for a while (until there is news on the
 * socket, or a second). */
static int exchange_pump(struct clip_transfer *x, struct clip_err *err)
{
	CURLM *m = x->h->multi;
	if (x->paused && buf_pending(x) < PAUSE_BYTES / 2) {
		x->paused = false;
		curl_easy_pause(x->h->easy, CURLPAUSE_CONT);
	}
	int running = 0;
	CURLMcode mc = curl_multi_perform(m, &running);
	if (mc != CURLM_OK)
		return clip_transfer_error(x, err, EIO, "curl: %s", curl_multi_strerror(mc));
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
			return clip_transfer_error(x, err, EIO, "curl: %s",
						   curl_multi_strerror(mc));
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

static int transport_errno(struct clip_transfer *x, CURLcode c)
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
static void describe_error_body(const struct clip_transfer *x, char *out, size_t cap)
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

/* The WWW-Authenticate challenge to answer: the first Bearer one, else the
 * first Basic one; NULL when there is neither. */
static const char *pick_challenge(const struct clip_transfer *x)
{
	for (size_t i = 0; i < x->nwww; i++)
		if (strncasecmp(x->www_auth[i], "Bearer", 6) == 0)
			return x->www_auth[i];
	for (size_t i = 0; i < x->nwww; i++)
		if (strncasecmp(x->www_auth[i], "Basic", 5) == 0)
			return x->www_auth[i];
	return NULL;
}

/* After a 401 (or a 403 while holding an expired token): get credentials
 * the registry will take. 0 means "send the request again". */
static int authenticate(struct clip_transfer *x, bool forbidden, struct clip_err *err)
{
	struct clip_registry *reg = x->reg;
	int r = 0;
	pthread_mutex_lock(&reg->auth_lock);
	if (reg->auth_gen != x->auth_gen)
		goto out; /* another request already did it */
	if (forbidden) {
		r = clip_registry_fetch_token(reg, &reg->challenge, err);
		goto out;
	}

	struct clip_auth_challenge ch = { 0 };
	const char *header = pick_challenge(x);
	if (header == NULL) {
		r = clip_transfer_error(
			x, err, EACCES,
			"HTTP 401 without a Bearer or Basic WWW-Authenticate challenge");
		goto out;
	}
	r = clip_auth_parse_challenge(header, &ch, err);
	if (r < 0) {
		clip_transfer_prefix(x, err);
		goto out;
	}
	r = clip_registry_load_credentials(reg, err);
	if (r < 0) {
		clip_auth_challenge_clear(&ch);
		goto out;
	}
	if (strcasecmp(ch.scheme, "Basic") == 0) {
		clip_auth_challenge_clear(&ch);
		if (!reg->have_creds || reg->creds.username == NULL) {
			r = clip_transfer_error(
				x, err, EACCES,
				"HTTP 401: the registry wants a username and password "
				"and none were found for %s",
				reg->ref.domain);
			goto out;
		}
		if (x->sent_basic) {
			r = clip_transfer_error(x, err, EACCES,
						"HTTP 401: credentials for %s rejected",
						reg->ref.domain);
			goto out;
		}
		char *line = NULL;
		r = clip_registry_basic_header(reg, &line, err);
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
	r = clip_registry_fetch_token(reg, &reg->challenge, err);
out:
	pthread_mutex_unlock(&reg->auth_lock);
	if (r < 0 && strncmp(err->msg, x->what, strlen(x->what)) != 0)
		clip_transfer_prefix(x, err);
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
static bool sent_token_expired(struct clip_transfer *x)
{
	struct clip_registry *reg = x->reg;
	bool expired = false;
	pthread_mutex_lock(&reg->auth_lock);
	if (reg->have_challenge && reg->auth_gen == x->auth_gen)
		expired = clip_registry_current_token(reg) == NULL;
	pthread_mutex_unlock(&reg->auth_lock);
	return expired;
}

/* Start over at the first URL, after waiting `delay_ms`. */
static int transfer_retry(struct clip_transfer *x, long delay_ms, struct clip_err *err)
{
	if (delay_ms > 0)
		sleep_ms(x->reg, delay_ms);
	x->attempts++;
	CLIP_COUNT(x->reg->retried, 1);
	x->hops = 0;
	return exchange_begin(x, x->start_url, err);
}

static long backoff_delay(const struct clip_transfer *x)
{
	long d = x->reg->backoff_ms;
	for (int i = 0; i < x->attempts && d < BACKOFF_CAP_MS; i++)
		d *= 2;
	return d < BACKOFF_CAP_MS ? d : BACKOFF_CAP_MS;
}

static const char *attempts_text(const struct clip_transfer *x, char *buf, size_t cap)
{
	if (x->attempts == 0)
		buf[0] = '\0';
	else
		snprintf(buf, cap, " after %d attempts", x->attempts + 1);
	return buf;
}

/* A 3xx answer: start an exchange with its Location. */
static int follow_redirect(struct clip_transfer *x, struct clip_err *err)
{
	long status = x->status;
	if (x->location == NULL)
		return clip_transfer_error(x, err, EBADMSG, "HTTP %ld without a Location", status);
	if (++x->hops > MAX_REDIRECTS)
		return clip_transfer_error(x, err, ELOOP, "more than %d redirects", MAX_REDIRECTS);
	if (strcmp(x->method, "GET") != 0 && strcmp(x->method, "HEAD") != 0)
		return clip_transfer_error(x, err, EBADMSG, "HTTP %ld redirect of a %s", status,
					   x->method);
	cleanup_free char *next = clip_registry_url_resolve(x->url, x->location, NULL);
	if (next == NULL)
		return clip_transfer_error(x, err, EBADMSG, "HTTP %ld to an invalid Location",
					   status);
	return exchange_begin(x, next, err);
}

/* The error for an HTTP status that is final: the registry's own error
 * text, and for 401/403 which credentials were refused. */
static int http_failure(struct clip_transfer *x, struct clip_err *err)
{
	long status = x->status;
	char detail[260];
	describe_error_body(x, detail, sizeof(detail));
	char extra[280];
	snprintf(extra, sizeof(extra), "%s%s%s", detail[0] ? " (" : "", detail,
		 detail[0] ? ")" : "");
	int code = EIO;
	const char *hint = "";
	if (status == 404) {
		code = ENOENT;
	} else if (status == 401 || status == 403) {
		code = EACCES;
		if (x->sent_basic)
			hint = ": credentials rejected";
		else if (x->sent_bearer)
			hint = have_credentials(x->reg)
				       ? ": access denied with the credentials found"
				       : ": anonymous access denied (no credentials found)";
	}
	char att[48];
	return clip_transfer_error(x, err, code, "HTTP %ld%s%s%s", status, extra, hint,
				   attempts_text(x, att, sizeof(att)));
}

/* The exchange finished: decide. Returns 0 when the body is complete (eof),
 * 1 when a new exchange was started, or a negative errno. */
static int exchange_conclude(struct clip_transfer *x, struct clip_err *err)
{
	struct clip_registry *reg = x->reg;
	char att[48];
	CURLcode res = x->result;
	long status = x->status;
	int r;

	if (x->cb_code != 0)
		return clip_transfer_error(x, err, x->cb_code, "%s", x->cb_msg);
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
			r = transfer_retry(x, backoff_delay(x), err);
			return r < 0 ? r : 1;
		}
		return clip_transfer_error(x, err, transport_errno(x, res), "%s%s",
					   x->errbuf[0] != '\0' ? x->errbuf
								: curl_easy_strerror(res),
					   attempts_text(x, att, sizeof(att)));
	}
	if (status >= 200 && status <= 299)
		return 0;
	if (status >= 300 && status <= 399 && status != 304) {
		r = follow_redirect(x, err);
		return r < 0 ? r : 1;
	}
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
		r = transfer_retry(x, delay, err);
		return r < 0 ? r : 1;
	}
	return http_failure(x, err);
}

/* Run the transfer until body bytes are buffered or the body has ended. */
int clip_transfer_fill(struct clip_transfer *x, struct clip_err *err)
{
	while (buf_pending(x) == 0 && !x->eof) {
		int r;
		/* Checked between pumps, which wait a second at most: a stalled
		 * answer is given up within that. */
		if (cancelled(x->reg))
			return clip_transfer_error(x, err, ECANCELED, "cancelled");
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
ssize_t clip_transfer_read(struct clip_transfer *x, void *out, size_t len, struct clip_err *err)
{
	if (len == 0)
		return 0;
	int r = clip_transfer_fill(x, err);
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
int clip_transfer_read_all(struct clip_transfer *x, size_t max, char **out, size_t *len,
			   struct clip_err *err)
{
	x->max_body = max;
	size_t cap = 16 * 1024, got = 0;
	char *b = malloc(cap + 1);
	if (b == NULL)
		return clip_err_nomem(err);
	for (;;) {
		if (got == cap) {
			size_t ncap = cap * 2 > max ? max : cap * 2;
			if (ncap <= cap)
				ncap = cap + 1; /* max reached: the next byte fails in on_body */
			char *nb = realloc(b, ncap + 1);
			if (nb == NULL) {
				free(b);
				return clip_err_nomem(err);
			}
			b = nb;
			cap = ncap;
		}
		ssize_t n = clip_transfer_read(x, b + got, cap - got, err);
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

/* ---- a registry's transport -------------------------------------------- */

int clip_registry_http_global_init(struct clip_err *err)
{
	int r = clip_curl_load(err);
	if (r < 0)
		return clip_err_prefix(err, "registry");
	pthread_once(&curl_once, curl_init_once);
	if (curl_init_result != CURLE_OK)
		return clip_err_set(err, EIO, "registry: curl_global_init: %s",
				    curl_easy_strerror(curl_init_result));
	return 0;
}

int clip_registry_http_init(struct clip_registry *reg, const struct clip_ref *ref,
			    const struct clip_registry_options *options, struct clip_err *err)
{
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
	reg->ca_file = options->ca_file ? strdup(options->ca_file) : NULL;
	if (asprintf(&reg->base, "%s://%s", plain ? "http" : "https", ref->api_host) < 0)
		reg->base = NULL;
	/* docker (Go's ProxyFromEnvironment) never proxies loopback; curl
	 * would. Setting CURLOPT_NOPROXY replaces NO_PROXY, so keep it. */
	const char *np = getenv("NO_PROXY");
	if (np == NULL || np[0] == '\0')
		np = getenv("no_proxy");
	if (asprintf(&reg->noproxy, "%s%slocalhost,127.0.0.0/8,::1", np != NULL ? np : "",
		     np != NULL && np[0] != '\0' ? "," : "") < 0)
		reg->noproxy = NULL;
	if ((options->ca_file && !reg->ca_file) || reg->base == NULL || reg->noproxy == NULL)
		return clip_err_nomem(err);
	reg->origin = url_origin(reg->base);
	if (reg->origin == NULL)
		return clip_err_set(err, EINVAL, "registry %s: not a valid host", ref->api_host);
	reg->share = curl_share_init();
	if (reg->share == NULL || curl_share_setopt(reg->share, CURLSHOPT_LOCKFUNC, share_lock) ||
	    curl_share_setopt(reg->share, CURLSHOPT_UNLOCKFUNC, share_unlock) ||
	    curl_share_setopt(reg->share, CURLSHOPT_USERDATA, reg) ||
	    curl_share_setopt(reg->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) ||
	    curl_share_setopt(reg->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION))
		return clip_err_set(err, ENOMEM, "registry: cannot set up a curl share handle");
	return 0;
}

void clip_registry_http_release(struct clip_registry *reg)
{
	while (reg->pool != NULL) {
		struct handle *h = reg->pool;
		reg->pool = h->next;
		handle_free(h);
	}
	if (reg->share != NULL)
		curl_share_cleanup(reg->share);
	free(reg->base);
	free(reg->origin);
	free(reg->ca_file);
	free(reg->noproxy);
	for (size_t i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&reg->share_locks[i]);
	pthread_mutex_destroy(&reg->pool_lock);
	pthread_mutex_destroy(&reg->auth_lock);
}
