/* Library-private parts of the registry client (not installed), shared by
 * its two files:
 *   registry.c       the Distribution API: opening a client, manifests,
 *                    image indexes and platforms, configs, blobs, stats;
 *                    credentials and bearer tokens from the token server;
 *   registry_http.c  the HTTP transport: libcurl (loaded lazily), the
 *                    connection pool, requests, redirects, which
 *                    Authorization to send and what to do on a 401,
 *                    retries with backoff and Retry-After, resumed bodies,
 *                    timeouts.
 *
 * Thread safety: a `struct clip_registry` is shared by every thread that
 * uses it; what is set while it is opened is read-only afterwards, and the
 * rest is guarded as its fields say. A `struct clip_transfer` belongs to one
 * thread at a time.
 */
#ifndef CLIP_REGISTRY_INTERNAL_H
#define CLIP_REGISTRY_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "clip/auth.h"
#include "clip/err.h"
#include "clip/ref.h"
#include "clip/registry.h"
#include "curl_lazy.h"

#define CLIP_TRANSFER_MAX_CHALLENGES 4	  /* WWW-Authenticate headers kept from one answer */
#define CLIP_TRANSFER_ERROR_BODY_MAX 4096 /* bytes of an error answer kept for messages */
#define CLIP_TRANSFER_OPEN_END	     UINT64_MAX

struct handle; /* an (easy, multi) pair of the connection pool (registry_http.c) */
struct token;  /* a cached bearer token (registry.c) */

struct clip_registry {
	/* Set by clip_registry_open, read-only afterwards. */
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
	struct handle *pool; /* under pool_lock */
	size_t npool;	     /* under pool_lock */

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

	atomic_bool cancelled; /* clip_registry_cancel: every transfer fails */

	/* Bumped with CLIP_COUNT, read with CLIP_COUNTER_LOAD. */
	_Atomic uint64_t requests;
	_Atomic uint64_t retried;
	_Atomic uint64_t bytes_received;
};

/* One HTTP request and its answer, across the exchanges it may take
 * (redirects, authentication, retries, resumes). Set it up with
 * clip_transfer_init, adjust the request fields below, then read the body
 * with clip_transfer_read or clip_transfer_read_all; the first read sends
 * the request. */
struct clip_transfer {
	struct clip_registry *reg;
	/* The request. */
	const char *method; /* "GET", "HEAD", "POST" or "PUT" */
	char *what;	    /* "registry HOST" or "token server HOST", for messages */
	char *target;	    /* the path, for messages */
	char *start_url;
	char *start_origin;
	bool registry_request; /* send the registry's credentials, answer 401s */
	const char *accept;    /* a whole "Accept: ..." header line, or NULL */
	char *explicit_auth;   /* secret "Authorization: ..." for start_origin only */
	char *post_body;       /* secret form body of a POST */
	/* A body of the caller's (borrowed, kept until the transfer is
	 * cleared) sent with POST or PUT, with its "Content-Type: ..." line,
	 * and one more request header line ("If-Match: ..."), or NULLs. */
	const void *upload;
	size_t upload_len;
	const char *upload_type;
	const char *extra_header;
	bool ranged;
	uint64_t range_start,
		range_end; /* inclusive; range_end CLIP_TRANSFER_OPEN_END: to the end */
	uint64_t max_body; /* 0: no limit */
	uint64_t expected; /* body bytes that make it complete; 0: unknown */

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
	char *etag, *oci_subject, *oci_filters;
	char *www_auth[CLIP_TRANSFER_MAX_CHALLENGES];
	size_t nwww;
	char errbody[CLIP_TRANSFER_ERROR_BODY_MAX];
	size_t errbody_len;
	int cb_code; /* an error found in a callback: the transfer is not retried */
	char cb_msg[256];
	char errbuf[CURL_ERROR_SIZE];

	/* Body bytes not yet handed to the reader. */
	unsigned char *buf;
	size_t buf_head, buf_len, buf_cap;
};

/* Wipe a secret string, then free it (NULL is fine). */
static inline void free_secret(char *s)
{
	if (s != NULL) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

/* ---- registry.c: credentials and bearer tokens, under reg->auth_lock ---- */

/* Look up the registry's credentials (clip/auth.h) once: sets
 * reg->have_creds and reg->creds. 0, or a negative errno with `err` prefixed
 * "credentials for DOMAIN". */
int clip_registry_load_credentials(struct clip_registry *reg, struct clip_err *err);

/* "Authorization: Basic base64(user:password)" from reg->creds (which must
 * hold a username) as a new secret string in *out (free it with
 * free_secret). 0 or -ENOMEM. */
int clip_registry_basic_header(const struct clip_registry *reg, char **out, struct clip_err *err);

/* The cached bearer token for reg->scope that is still usable, or NULL.
 * Borrowed: valid while auth_lock is held. */
const char *clip_registry_current_token(const struct clip_registry *reg);

/* Get a bearer token from the token server that challenge `ch` names (its
 * realm, service and scope; the registry's credentials or identity token when
 * there are some) and make it the one requests use: reg->scope becomes its
 * scope and reg->auth_gen changes. 0, or a negative errno with `err` set
 * (-EACCES when the token server refused). */
int clip_registry_fetch_token(struct clip_registry *reg, const struct clip_auth_challenge *ch,
			      struct clip_err *err);

/* Whether `s` is a valid tag (the Distribution spec's grammar). */
bool clip_registry_tag_valid(const char *s);

/* 0 when `reference` is a tag or a digest, `digest` a digest; else -EINVAL
 * with `err` naming the registry and the value. */
int clip_registry_check_reference(const struct clip_registry *reg, const char *reference,
				  struct clip_err *err);
int clip_registry_check_digest(const struct clip_registry *reg, const char *digest,
			       struct clip_err *err);

/* Set up *x to `method` (a string literal) /v2/<repository>/<kind>/<reference>
 * with the registry's credentials (clip_transfer_init). */
int clip_registry_api_transfer(struct clip_registry *reg, const char *method, const char *kind,
			       const char *reference, struct clip_transfer *x,
			       struct clip_err *err);

/* ---- registry_http.c: the transport of one registry ---------------------- */

/* Load libcurl (curl_lazy.h) and initialise it, once per process. Errors
 * begin with "registry". */
int clip_registry_http_global_init(struct clip_err *err);

/* The transport's part of opening `reg` (zeroed) for `ref`: its locks, the
 * timeouts and retries of `options` (defaults for zeros), plain HTTP or TLS
 * and the CA file, reg->base, reg->origin, the NO_PROXY list and the curl
 * share handle. On failure (-ENOMEM, or -EINVAL for a host that
 * makes no URL) the caller releases `reg` with clip_registry_free. */
int clip_registry_http_init(struct clip_registry *reg, const struct clip_ref *ref,
			    const struct clip_registry_options *options, struct clip_err *err);

/* Release what clip_registry_http_init set up in `reg` and the connections
 * kept since; the rest of `reg` is the caller's. */
void clip_registry_http_release(struct clip_registry *reg);

/* `location` resolved against `base`, with `query` ("name=value", encoded
 * here; NULL: none) added to its query: a new string, or NULL when it is not
 * an http(s) URL or out of memory. */
char *clip_registry_url_resolve(const char *base, const char *location, const char *query);

/* ---- registry_http.c: transfers ------------------------------------------ */

/* Set up *x to `method` (a string literal) `url`. `what` ("registry HOST")
 * and `target` (the path) name it in messages; `registry_request` sends the
 * registry's credentials and answers its 401s. Nothing is sent yet. On
 * success release *x with clip_transfer_clear; on failure there is nothing
 * to release. */
int clip_transfer_init(struct clip_transfer *x, struct clip_registry *reg, const char *method,
		       const char *what, const char *target, const char *url, bool registry_request,
		       struct clip_err *err);

/* End the transfer (its connection goes back to the pool), wipe and free
 * what it holds, and zero *x. */
void clip_transfer_clear(struct clip_transfer *x);

/* Run the transfer until body bytes are buffered or the body has ended:
 * 0, or a negative errno with `err` naming the request and the reason. */
int clip_transfer_fill(struct clip_transfer *x, struct clip_err *err);

/* Up to `len` bytes of the body into `out`: the number read, 0 at its end,
 * or a negative errno (-EFBIG past x->max_body). */
ssize_t clip_transfer_read(struct clip_transfer *x, void *out, size_t len, struct clip_err *err);

/* The whole body, of at most `max` bytes (-EFBIG beyond), in a new
 * NUL-terminated buffer *out of *len bytes, owned by the caller. */
int clip_transfer_read_all(struct clip_transfer *x, size_t max, char **out, size_t *len,
			   struct clip_err *err);

/* Set `err` to "WHAT: METHOD TARGET: <reason>" and return -code. */
int clip_transfer_error(struct clip_transfer *x, struct clip_err *err, int code, const char *fmt,
			...) __attribute__((format(printf, 4, 5)));

/* Prefix the message in `err` with "WHAT: METHOD TARGET" and return its code. */
int clip_transfer_prefix(struct clip_transfer *x, struct clip_err *err);

#endif
