/* The writing half of the Distribution API, and the referrers API: what
 * `clip push` needs to store an archive next to its image, and what finding
 * one by reference reads. Blobs are uploaded whole from memory (an archive
 * is metadata only: a few MB even for a large image), in the two-request
 * form every registry takes (POST, then one PUT with the digest), which a
 * retry can send again as it is. */
#include "registry_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define WRITE_ANSWER_MAX (64u << 10) /* bytes of an answer to a write we read */

/* Send the request and wait for its (small, ignored) answer. */
static int transfer_run(struct clip_transfer *x, struct clip_err *err)
{
	cleanup_free char *body = NULL;
	size_t n = 0;
	int r = clip_transfer_read_all(x, WRITE_ANSWER_MAX, &body, &n, err);
	if (r == -EFBIG)
		r = clip_transfer_error(x, err, EBADMSG, "answer larger than %u bytes",
					WRITE_ANSWER_MAX);
	return r;
}

int clip_registry_blob_exists(struct clip_registry *reg, const char *digest, struct clip_err *err)
{
	struct clip_err scratch;
	if (err == NULL)
		err = &scratch;
	if (clip_registry_check_digest(reg, digest, err) < 0)
		return -EINVAL;
	struct clip_transfer x;
	int r = clip_registry_api_transfer(reg, "HEAD", "blobs", digest, &x, err);
	if (r < 0)
		return r;
	r = transfer_run(&x, err);
	clip_transfer_clear(&x);
	if (r == -ENOENT)
		return 0;
	return r < 0 ? r : 1;
}

int clip_registry_blob_put(struct clip_registry *reg, const char *digest, const void *data,
			   size_t len, struct clip_err *err)
{
	struct clip_err scratch;
	if (err == NULL)
		err = &scratch;
	int r = clip_digest_verify(data, len, digest, err);
	if (r < 0)
		return clip_err_prefix(err, "registry %s: blob %.80s", reg->name,
				       digest != NULL ? digest : "(null)");
	r = clip_registry_blob_exists(reg, digest, err);
	if (r != 0)
		return r < 0 ? r : 0;

	struct clip_transfer x;
	r = clip_registry_api_transfer(reg, "POST", "blobs", "uploads/", &x, err);
	if (r < 0)
		return r;
	r = transfer_run(&x, err);
	cleanup_free char *put_url = NULL;
	if (r == 0 && x.location == NULL)
		r = clip_transfer_error(&x, err, EBADMSG, "HTTP %ld without a Location", x.status);
	if (r == 0) {
		char query[96];
		snprintf(query, sizeof(query), "digest=%s", digest);
		put_url = clip_registry_url_resolve(x.url, x.location, query);
		if (put_url == NULL)
			r = clip_transfer_error(&x, err, EBADMSG, "invalid Location %.200s",
						x.location);
	}
	clip_transfer_clear(&x);
	if (r < 0)
		return r;

	cleanup_free char *what = NULL;
	cleanup_free char *target = NULL;
	if (asprintf(&what, "registry %s", reg->ref.api_host) < 0 ||
	    asprintf(&target, "/v2/%s/blobs/uploads/...?digest=%s", reg->ref.repository, digest) <
		    0)
		return clip_err_nomem(err);
	r = clip_transfer_init(&x, reg, "PUT", what, target, put_url, true, err);
	if (r < 0)
		return r;
	x.upload = data;
	x.upload_len = len;
	x.upload_type = "Content-Type: application/octet-stream";
	/* curl would wait for a "100 Continue" before a large body: a round
	 * trip for nothing, registries read the body anyway. */
	x.extra_header = "Expect:";
	r = transfer_run(&x, err);
	if (r == 0 && x.status != 201 && x.status != 204)
		r = clip_transfer_error(&x, err, EBADMSG, "HTTP %ld, expected 201", x.status);
	clip_transfer_clear(&x);
	return r;
}

int clip_registry_manifest_put(struct clip_registry *reg, const char *reference,
			       const char *media_type, const void *data, size_t len,
			       const char *if_match, bool *subject_seen, struct clip_err *err)
{
	struct clip_err scratch;
	if (err == NULL)
		err = &scratch;
	if (clip_registry_check_reference(reg, reference, err) < 0)
		return -EINVAL;
	if (strncmp(reference, "sha256:", 7) == 0) {
		int r = clip_digest_verify(data, len, reference, err);
		if (r < 0)
			return clip_err_prefix(err, "registry %s: manifest %s", reg->name,
					       reference);
	}
	cleanup_free char *type_line = NULL;
	cleanup_free char *match_line = NULL;
	if (asprintf(&type_line, "Content-Type: %s", media_type) < 0 ||
	    (if_match != NULL && asprintf(&match_line, "If-Match: %s", if_match) < 0))
		return clip_err_nomem(err);
	struct clip_transfer x;
	int r = clip_registry_api_transfer(reg, "PUT", "manifests", reference, &x, err);
	if (r < 0)
		return r;
	x.upload = data;
	x.upload_len = len;
	x.upload_type = type_line;
	x.extra_header = match_line;
	r = transfer_run(&x, err);
	if (r < 0 && x.status == 412)
		r = clip_transfer_error(&x, err, EAGAIN, "HTTP 412: changed since it was read");
	if (r == 0 && x.status != 201 && x.status != 200 && x.status != 204)
		r = clip_transfer_error(&x, err, EBADMSG, "HTTP %ld, expected 201", x.status);
	if (r == 0 && subject_seen != NULL)
		*subject_seen = x.oci_subject != NULL;
	clip_transfer_clear(&x);
	return r;
}

static bool artifact_type_valid(const char *s)
{
	if (s == NULL || *s == '\0' || strlen(s) > 255)
		return false;
	for (; *s != '\0'; s++) {
		char c = *s;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr("./+-_", c) != NULL))
			return false;
	}
	return true;
}

int clip_registry_referrers(struct clip_registry *reg, const char *digest,
			    const char *artifact_type, struct clip_registry_document *out,
			    bool *filtered, struct clip_err *err)
{
	struct clip_err scratch;
	if (err == NULL)
		err = &scratch;
	if (clip_registry_check_digest(reg, digest, err) < 0)
		return -EINVAL;
	if (artifact_type != NULL && !artifact_type_valid(artifact_type))
		return clip_err_set(err, EINVAL, "registry %s: invalid artifact type \"%.100s\"",
				    reg->name, artifact_type);
	cleanup_free char *reference = NULL;
	if ((artifact_type != NULL
		     ? asprintf(&reference, "%s?artifactType=%s", digest, artifact_type)
		     : asprintf(&reference, "%s", digest)) < 0)
		return clip_err_nomem(err);
	struct clip_transfer x;
	int r = clip_registry_api_transfer(reg, "GET", "referrers", reference, &x, err);
	if (r < 0)
		return r;
	x.accept = "Accept: application/vnd.oci.image.index.v1+json";
	struct clip_registry_document d = { 0 };
	r = clip_transfer_read_all(&x, CLIP_IMAGE_MAX_JSON, &d.body, &d.len, err);
	if (r == -EFBIG)
		r = clip_transfer_error(&x, err, EFBIG, "referrers index larger than %u bytes",
					CLIP_IMAGE_MAX_JSON);
	if (r == 0) {
		clip_digest_of(d.body, d.len, d.digest);
		d.media_type = strdup("application/vnd.oci.image.index.v1+json");
		if (d.media_type == NULL)
			r = clip_err_nomem(err);
	}
	/* The spec says 404 for a registry without the API; some answer 400
	 * (no such route, taken for a bad reference), 405 or 501 instead. */
	if (r < 0 && r != -ENOENT && (x.status == 400 || x.status == 405 || x.status == 501))
		r = -ENOENT;
	bool applied = r == 0 && x.oci_filters != NULL && artifact_type != NULL &&
		       strstr(x.oci_filters, "artifactType") != NULL;
	clip_transfer_clear(&x);
	if (r < 0) {
		clip_registry_document_clear(&d);
		return r;
	}
	if (filtered != NULL)
		*filtered = applied;
	*out = d;
	return 0;
}
