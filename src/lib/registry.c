/* clip: a client for the OCI Distribution API (see clip/registry.h).
 *
 * This file speaks the API: it opens a client for a repository, resolves a
 * tag or digest through image indexes to the platform's manifest and its
 * config, and reads blobs whole, as a stream, or by range, checking every
 * document against its digest and size. For an authenticating registry it
 * finds the credentials and gets bearer tokens from the token server a
 * challenge names, caching them per scope. Each request is one
 * `struct clip_transfer` of the HTTP transport in registry_http.c, which
 * does the redirects, answers 401s, retries and resumes.
 */
#include "registry_internal.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "util.h"

#define MAX_NESTED_INDEXES 4
#define TOKEN_MARGIN_S	   30

static const char manifest_accept[] = "Accept: " CLIP_MT_OCI_INDEX ", " CLIP_MT_OCI_MANIFEST
				      ", " CLIP_MT_DOCKER_LIST ", " CLIP_MT_DOCKER_MANIFEST;

/* A bearer token, cached per scope until shortly before it expires. */
struct token {
	char *scope;
	char *value;	     /* secret */
	time_t usable_until; /* monotonic seconds, expiry minus a margin */
	struct token *next;
};

/* ---- open / free ------------------------------------------------------ */

int clip_registry_open(const struct clip_ref *ref, const struct clip_registry_options *options,
		       struct clip_registry **out, struct clip_err *err)
{
	struct clip_err scratch;
	if (err == NULL)
		err = &scratch;
	if (ref == NULL || ref->domain == NULL || ref->api_host == NULL || ref->repository == NULL)
		return clip_err_set(err, EINVAL, "registry: incomplete image reference");
	int r = clip_registry_http_global_init(err);
	if (r < 0)
		return r;
	struct clip_registry_options none = { 0 };
	if (options == NULL)
		options = &none;

	struct clip_registry *reg = calloc(1, sizeof(*reg));
	if (reg == NULL)
		return clip_err_nomem(err);
	r = clip_registry_http_init(reg, ref, options, err);
	if (r < 0) {
		clip_registry_free(reg);
		return r;
	}
	reg->ref.domain = strdup(ref->domain);
	reg->ref.api_host = strdup(ref->api_host);
	reg->ref.repository = strdup(ref->repository);
	reg->ref.tag = ref->tag ? strdup(ref->tag) : NULL;
	reg->ref.digest = ref->digest ? strdup(ref->digest) : NULL;
	if (asprintf(&reg->name, "%s/%s", ref->api_host, ref->repository) < 0)
		reg->name = NULL;
	if (asprintf(&reg->scope, "repository:%s:pull", ref->repository) < 0)
		reg->scope = NULL;
	if (reg->ref.domain == NULL || reg->ref.api_host == NULL || reg->ref.repository == NULL ||
	    (ref->tag && !reg->ref.tag) || (ref->digest && !reg->ref.digest) || reg->name == NULL ||
	    reg->scope == NULL) {
		clip_registry_free(reg);
		return clip_err_nomem(err);
	}
	*out = reg;
	return 0;
}

/* Wipe and free the authentication state. */
static void auth_clear(struct clip_registry *reg)
{
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
	free(reg->scope);
}

void clip_registry_free(struct clip_registry *reg)
{
	if (reg == NULL)
		return;
	auth_clear(reg);
	clip_registry_http_release(reg);
	clip_ref_clear(&reg->ref);
	free(reg->name);
	free(reg);
}

const char *clip_registry_name(const struct clip_registry *reg)
{
	return reg->name;
}

void clip_registry_stats(const struct clip_registry *reg, struct clip_registry_stats *out)
{
	out->requests = CLIP_COUNTER_LOAD(reg->requests);
	out->retries = CLIP_COUNTER_LOAD(reg->retried);
	out->bytes_received = CLIP_COUNTER_LOAD(reg->bytes_received);
}

void clip_registry_cancel(struct clip_registry *reg)
{
	atomic_store(&reg->cancelled, true);
}

/* ---- manifests -------------------------------------------------------- */

bool clip_registry_tag_valid(const char *s)
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

int clip_registry_check_reference(const struct clip_registry *reg, const char *reference,
				  struct clip_err *err)
{
	if (reference == NULL ||
	    !(clip_digest_valid(reference) || clip_registry_tag_valid(reference)))
		return clip_err_set(err, EINVAL, "registry %s: invalid tag or digest \"%.200s\"",
				    reg->name, reference != NULL ? reference : "(null)");
	return 0;
}

int clip_registry_check_digest(const struct clip_registry *reg, const char *digest,
			       struct clip_err *err)
{
	if (digest == NULL || !clip_digest_valid(digest))
		return clip_err_set(err, EINVAL, "registry %s: invalid digest \"%.100s\"",
				    reg->name, digest != NULL ? digest : "(null)");
	return 0;
}

int clip_registry_api_transfer(struct clip_registry *reg, const char *method, const char *kind,
			       const char *reference, struct clip_transfer *x, struct clip_err *err)
{
	cleanup_free char *path = NULL;
	cleanup_free char *url = NULL;
	cleanup_free char *what = NULL;
	if (asprintf(&path, "/v2/%s/%s/%s", reg->ref.repository, kind, reference) < 0 ||
	    asprintf(&url, "%s%s", reg->base, path) < 0 ||
	    asprintf(&what, "registry %s", reg->ref.api_host) < 0)
		return clip_err_nomem(err);
	return clip_transfer_init(x, reg, method, what, path, url, true, err);
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
			  char digest_out[72], char **etag, struct clip_err *err)
{
	if (size > CLIP_IMAGE_MAX_JSON)
		return clip_err_set(
			err, EFBIG,
			"manifest %s: descriptor size %llu is more than the limit of %u", reference,
			(unsigned long long)size, CLIP_IMAGE_MAX_JSON);
	struct clip_transfer x;
	int r = clip_registry_api_transfer(reg, "GET", "manifests", reference, &x, err);
	if (r < 0)
		return r;
	x.accept = manifest_accept;
	cleanup_free char *b = NULL;
	size_t n = 0;
	r = clip_transfer_read_all(&x, size ? (size_t)size : CLIP_IMAGE_MAX_JSON, &b, &n, err);
	if (r == -EFBIG)
		r = clip_transfer_error(&x, err, EFBIG, "manifest larger than %llu bytes",
					(unsigned long long)(size ? size : CLIP_IMAGE_MAX_JSON));
	if (r == 0 && size != 0 && n != size)
		r = clip_transfer_error(&x, err, EBADMSG,
					"manifest is %zu bytes, descriptor says %llu", n,
					(unsigned long long)size);
	if (r == 0) {
		const char *check = digest;
		if (check == NULL && x.docker_digest != NULL && clip_digest_valid(x.docker_digest))
			check = x.docker_digest;
		if (check != NULL && clip_digest_verify(b, n, check, err) < 0)
			r = clip_transfer_prefix(&x, err);
	}
	if (r == 0) {
		clip_digest_of(b, n, digest_out);
		*media_type = document_media_type(b, n, x.content_type);
		if (*media_type == NULL)
			r = clip_err_nomem(err);
	}
	if (r == 0 && etag != NULL) {
		*etag = x.etag != NULL ? strdup(x.etag) : NULL;
		if (x.etag != NULL && *etag == NULL) {
			free(*media_type);
			r = clip_err_nomem(err);
		}
	}
	clip_transfer_clear(&x);
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
	struct clip_transfer x;
	int r = clip_registry_api_transfer(reg, "GET", "blobs", digest, &x, err);
	if (r < 0)
		return r;
	cleanup_free char *b = NULL;
	size_t n = 0;
	/* One byte over the size so that a longer blob is told apart. */
	r = clip_transfer_read_all(&x, (size_t)size + 1, &b, &n, err);
	if (r == 0 && n != size)
		r = clip_transfer_error(&x, err, EBADMSG, "blob is %zu bytes, descriptor says %llu",
					n, (unsigned long long)size);
	if (r == -EFBIG)
		r = clip_transfer_error(&x, err, EBADMSG,
					"blob is larger than its descriptor's %llu bytes",
					(unsigned long long)size);
	if (r == 0 && clip_digest_verify(b, n, digest, err) < 0)
		r = clip_transfer_prefix(&x, err);
	clip_transfer_clear(&x);
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
			       digest, NULL, err);
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
		r = fetch_manifest(reg, digest, digest, size, &buf, &len, &fetched_mt, got, NULL,
				   err);
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
	if (clip_registry_check_reference(reg, reference, err) < 0)
		return -EINVAL;
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

int clip_registry_manifest_get(struct clip_registry *reg, const char *reference,
			       struct clip_registry_document *out, struct clip_err *err)
{
	struct clip_err scratch;
	if (err == NULL)
		err = &scratch;
	if (clip_registry_check_reference(reg, reference, err) < 0)
		return -EINVAL;
	struct clip_registry_document d = { 0 };
	bool by_digest = strncmp(reference, "sha256:", 7) == 0;
	int r = fetch_manifest(reg, reference, by_digest ? reference : NULL, 0, &d.body, &d.len,
			       &d.media_type, d.digest, &d.etag, err);
	if (r < 0)
		return r;
	*out = d;
	return 0;
}

void clip_registry_document_clear(struct clip_registry_document *doc)
{
	free(doc->body);
	free(doc->media_type);
	free(doc->etag);
	memset(doc, 0, sizeof(*doc));
}

/* ---- blobs ------------------------------------------------------------ */

struct blob_stream {
	struct clip_transfer x;
	uint64_t size;
	char digest[72];
};

static ssize_t blob_stream_read(void *opaque, void *buf, size_t len, struct clip_err *err)
{
	struct blob_stream *s = opaque;
	struct clip_err scratch;
	if (err == NULL)
		err = &scratch;
	ssize_t n = clip_transfer_read(&s->x, buf, len, err);
	if (n == -EFBIG)
		return clip_transfer_error(&s->x, err, EBADMSG,
					   "blob is larger than its %llu bytes",
					   (unsigned long long)s->size);
	if (n == 0 && s->size != 0 && s->x.delivered != s->size)
		return clip_transfer_error(
			&s->x, err, EBADMSG, "blob ended after %llu of its %llu bytes",
			(unsigned long long)s->x.delivered, (unsigned long long)s->size);
	return n;
}

static void blob_stream_close(void *opaque)
{
	struct blob_stream *s = opaque;
	clip_transfer_clear(&s->x);
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
		return clip_err_nomem(err);
	int r = clip_registry_api_transfer(reg, "GET", "blobs", digest, &s->x, err);
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
	r = clip_transfer_fill(&s->x, err);
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
	struct clip_transfer x;
	int r = clip_registry_api_transfer(reg, "GET", "blobs", digest, &x, err);
	if (r < 0)
		return r;
	x.ranged = true;
	x.range_start = offset;
	x.range_end = offset + len - 1;
	x.expected = len;
	size_t got = 0;
	while (got < len) {
		ssize_t n = clip_transfer_read(&x, (unsigned char *)buf + got, len - got, err);
		if (n < 0) {
			clip_transfer_clear(&x);
			return n;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	clip_transfer_clear(&x);
	return (ssize_t)got;
}

/* ---- credentials and bearer tokens ------------------------------------ */

static time_t mono_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

int clip_registry_load_credentials(struct clip_registry *reg, struct clip_err *err)
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

int clip_registry_basic_header(const struct clip_registry *reg, char **out, struct clip_err *err)
{
	cleanup_free char *plain = NULL;
	if (asprintf(&plain, "%s:%s", reg->creds.username, reg->creds.password) < 0)
		return clip_err_nomem(err);
	size_t n = strlen(plain);
	size_t cap = 4 * ((n + 2) / 3) + 1;
	char *enc = malloc(cap);
	if (enc == NULL) {
		explicit_bzero(plain, n);
		return clip_err_nomem(err);
	}
	EVP_EncodeBlock((unsigned char *)enc, (const unsigned char *)plain, (int)n);
	explicit_bzero(plain, n);
	char *line = NULL;
	if (asprintf(&line, "Authorization: Basic %s", enc) < 0)
		line = NULL;
	free_secret(enc);
	if (line == NULL)
		return clip_err_nomem(err);
	*out = line;
	return 0;
}

const char *clip_registry_current_token(const struct clip_registry *reg)
{
	time_t now = mono_seconds();
	for (const struct token *t = reg->tokens; t != NULL; t = t->next)
		if (strcmp(t->scope, reg->scope) == 0 && now < t->usable_until)
			return t->value;
	return NULL;
}

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

/* The token server's URL for challenge `ch` and `scope` and, when the
 * credentials are an identity token, the secret form body of docker's OAuth2
 * refresh-token grant, to POST (*body NULL: a GET). 0 or -ENOMEM. */
static int token_request(const struct clip_registry *reg, const struct clip_auth_challenge *ch,
			 const char *scope, char **url, char **body, struct clip_err *err)
{
	const char *realm = ch->realm;
	cleanup_free char *service = ch->service ? form_escape(ch->service) : NULL;
	cleanup_free char *esc_scope = form_escape(scope);
	bool refresh = reg->have_creds && reg->creds.identity_token != NULL;
	char *esc_refresh = refresh ? form_escape(reg->creds.identity_token) : NULL;
	if ((ch->service && service == NULL) || esc_scope == NULL || (refresh && !esc_refresh)) {
		free_secret(esc_refresh);
		return clip_err_nomem(err);
	}

	cleanup_free char *u = NULL;
	char *b = NULL;
	int ar;
	if (refresh) {
		ar = asprintf(&u, "%s", realm);
		if (ar >= 0)
			ar = asprintf(&b,
				      "grant_type=refresh_token&refresh_token=%s&client_id=clip"
				      "%s%s&scope=%s",
				      esc_refresh, service ? "&service=" : "",
				      service ? service : "", esc_scope);
	} else {
		ar = asprintf(&u, "%s%cscope=%s%s%s", realm, strchr(realm, '?') ? '&' : '?',
			      esc_scope, service ? "&service=" : "", service ? service : "");
	}
	free_secret(esc_refresh);
	if (ar < 0) {
		free_secret(b);
		return clip_err_nomem(err);
	}
	*url = clip_steal(u);
	*body = b;
	return 0;
}

int clip_registry_fetch_token(struct clip_registry *reg, const struct clip_auth_challenge *ch,
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
	int r = clip_registry_load_credentials(reg, err);
	if (r < 0)
		return r;
	cleanup_free char *url = NULL;
	char *body = NULL;
	r = token_request(reg, ch, scope, &url, &body, err);
	if (r < 0)
		return r;
	bool refresh = body != NULL;

	cleanup_free char *host = url_host(realm);
	char what[300];
	snprintf(what, sizeof(what), "token server %s", host != NULL ? host : "?");
	/* The path, not the query, names the request in messages. */
	char target[300];
	snprintf(target, sizeof(target), "%.*s", (int)strcspn(realm, "?"), realm);
	struct clip_transfer x;
	r = clip_transfer_init(&x, reg, refresh ? "POST" : "GET", what, target, url, false, err);
	if (r < 0) {
		free_secret(body);
		return r;
	}
	x.post_body = body;
	if (!refresh && reg->have_creds && reg->creds.username != NULL) {
		r = clip_registry_basic_header(reg, &x.explicit_auth, err);
		if (r < 0) {
			clip_transfer_clear(&x);
			return r;
		}
	}
	char *answer = NULL;
	size_t len = 0;
	r = clip_transfer_read_all(&x, CLIP_AUTH_MAX_HELPER, &answer, &len, err);
	if (r < 0) {
		if (r == -EFBIG)
			clip_transfer_error(&x, err, EFBIG, "token response larger than %u bytes",
					    CLIP_AUTH_MAX_HELPER);
		else if (r == -EACCES && reg->have_creds)
			clip_err_prefix(err, "credentials for %s rejected", reg->ref.domain);
		else if (r == -EACCES)
			clip_err_prefix(err,
					"anonymous access refused and no credentials for %s found",
					reg->ref.domain);
		clip_transfer_clear(&x);
		return r;
	}
	char *token = NULL;
	long life = 0;
	r = clip_auth_parse_token_response(answer, len, &token, &life, err);
	explicit_bzero(answer, len);
	free(answer);
	if (r < 0) {
		clip_transfer_prefix(&x, err);
		clip_transfer_clear(&x);
		return r;
	}
	clip_transfer_clear(&x);
	char *sc = strdup(scope);
	if (sc == NULL) {
		free_secret(token);
		return clip_err_nomem(err);
	}
	store_token(reg, sc, token, life);
	free(reg->scope);
	reg->scope = sc;
	reg->auth_gen++;
	return 0;
}
