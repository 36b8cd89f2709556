/* clip: a client for the OCI Distribution API (libcurl, jansson, OpenSSL).
 *
 * One `struct clip_registry` talks to one repository of one registry:
 * connections, TLS sessions and DNS answers are shared by its requests (a
 * curl share handle), bearer tokens are cached per scope until they expire.
 *
 * Thread safety: every function but clip_registry_free may be called on one
 * registry from many threads at once (its streams and reads run in
 * parallel); clip_registry_free is the last call, once no other is running.
 * Distinct registries share nothing but libcurl's global initialisation.
 *
 * Transport: plain HTTP for loopback registries (localhost, 127.0.0.0/8,
 * ::1, as docker does) unless options->ca_file is given, and when
 * options->plain_http is set; HTTPS with the
 * system CAs otherwise, or options->ca_file. HTTP/2 over TLS where the
 * server offers it. Redirects (blob storage) are followed by hand, at most 5, and the
 * registry's Authorization header is only ever sent to the registry's host.
 *
 * Authentication: anonymous, Basic, or Bearer tokens from the
 * WWW-Authenticate challenge (realm, service, scope), with credentials from
 * clip/auth.h. A 401 (or a 403 while holding an expired token) fetches a new
 * token and retries once.
 *
 * Faults: connection errors, 429 (Retry-After honoured, capped at 30 s) and
 * 5xx are retried with exponential backoff (options->retries times); a
 * connect timeout and a low-speed timeout keep any request from hanging.
 * Final errors name the registry, the request and the reason:
 *   "registry 127.0.0.1:5000: GET /v2/app/blobs/sha256:ab..: HTTP 500 after 4 attempts".
 * Codes: -ENOENT (404), -EACCES (401/403 after auth), -EHOSTUNREACH /
 * -ECONNREFUSED / -ETIMEDOUT (transport), -EBADMSG (digest mismatch, bad
 * answer), -EIO otherwise.
 */
#ifndef CLIP_REGISTRY_H
#define CLIP_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "clip/err.h"
#include "clip/image.h"
#include "clip/ref.h"
#include "clip/stream.h"

struct clip_registry_options {
	const char *ca_file;	 /* PEM bundle to trust instead of the system's; NULL: system */
	bool plain_http;	 /* talk HTTP even to a non-loopback host */
	long connect_timeout_ms; /* 0: 5000 */
	long low_speed_time_s;	 /* abort when < 1 KiB/s for this long; 0: 15 */
	int retries;		 /* extra attempts after a retryable failure; <0: none, 0: 4 */
	long backoff_ms;	 /* first backoff, doubled each attempt; 0: 200 */
};

struct clip_registry_stats {
	uint64_t requests;	 /* HTTP requests sent, including retries and token fetches */
	uint64_t retries;	 /* requests that were retries */
	uint64_t bytes_received; /* response body bytes */
};

struct clip_registry;

/* A client for ref->api_host / ref->repository (the ref is copied, options
 * read now; options NULL: all defaults). No network traffic happens here;
 * libcurl is loaded on the first call. On success *out is owned by the
 * caller (clip_registry_free). -EINVAL for a ref without a domain, host or
 * repository, or a host that makes no URL; -ENOMEM; libcurl's loading or
 * initialisation failing, "registry: ...". */
int clip_registry_open(const struct clip_ref *ref, const struct clip_registry_options *options,
		       struct clip_registry **out, struct clip_err *err);

/* Resolve `reference` (a tag, or "sha256:..." digest) to an image for
 * `platform` (NULL: the host's): GET the manifest with an Accept list for OCI
 * index/manifest and Docker v2 list/manifest, verify its SHA-256 when the
 * digest is known (pull by digest, index entries), follow an image index to
 * the platform's manifest, GET and verify the config blob, and fill *img as
 * clip_oci_layout_resolve does (on failure *img is untouched). -EINVAL for
 * a malformed tag or digest; other errors as above, naming the registry and
 * the request, or the document and what is wrong with it (clip/image.h). */
int clip_registry_resolve(struct clip_registry *reg, const char *reference,
			  const struct clip_platform *platform, struct clip_image *img,
			  struct clip_err *err);

/* Open blob `digest` (`size` bytes, 0 if unknown) as a sequential stream
 * for the indexer: a plain GET whose body is handed over as it arrives
 * (nothing is written to disk). An interrupted transfer is resumed with a
 * Range request from the last byte received. The stream does not verify the
 * digest (the indexer hashes what it reads), but a body longer or shorter
 * than a known `size` fails with -EBADMSG. The request runs here until its first
 * bytes, so that a missing blob (-ENOENT) or refused credentials (-EACCES)
 * fail here rather than at the first read. -EINVAL for a malformed digest.
 * On success *out is the caller's, who closes it; one thread reads it at a
 * time (clip/stream.h). */
int clip_registry_blob_stream(struct clip_registry *reg, const char *digest, uint64_t size,
			      struct clip_stream *out, struct clip_err *err);

/* Read [offset, offset+len) of blob `digest` into `buf` with a
 * `Range: bytes=a-b` GET (retried as above): returns the bytes read (short
 * only at the end of the blob; 0 for len 0) or a negative errno, -EINVAL for
 * a malformed digest or a range past UINT64_MAX. A server that ignores
 * Range is handled (the wanted part of the full answer is kept). The bytes
 * are not verified here; that is the caller's job. */
ssize_t clip_registry_blob_read(struct clip_registry *reg, const char *digest, void *buf,
				size_t len, uint64_t offset, struct clip_err *err);

/* ---- documents and writes (clip push, archives found by reference) ------ */

/* A manifest or index as the registry served it. */
struct clip_registry_document {
	char *body; /* NUL-terminated, `len` bytes */
	size_t len;
	char *media_type; /* its mediaType, else the Content-Type, else guessed */
	char digest[72];  /* "sha256:..." of body */
	char *etag;	  /* the ETag answered, for a conditional write; NULL: none */
};

/* GET manifests/<reference> (a tag or digest) as it is, image index or
 * manifest, without following anything: checked against the digest asked
 * for, or the Docker-Content-Digest answered for a tag. -ENOENT when there
 * is none; errors otherwise as clip_registry_resolve's. On success *out is
 * the caller's (clip_registry_document_clear). */
int clip_registry_manifest_get(struct clip_registry *reg, const char *reference,
			       struct clip_registry_document *out, struct clip_err *err);

/* Free what *doc holds and zero it. */
void clip_registry_document_clear(struct clip_registry_document *doc);

/* HEAD blobs/<digest>: 1 when the repository has the blob, 0 when not. */
int clip_registry_blob_exists(struct clip_registry *reg, const char *digest, struct clip_err *err);

/* Store `len` bytes as blob `digest` unless the repository has it already:
 * the bytes are checked against `digest` first (-EBADMSG), then uploaded
 * whole (POST blobs/uploads/, one PUT with ?digest= to the Location
 * answered). 0, or a negative errno naming the request (-EACCES when the
 * credentials do not allow pushing). */
int clip_registry_blob_put(struct clip_registry *reg, const char *digest, const void *data,
			   size_t len, struct clip_err *err);

/* PUT manifests/<reference> with `len` bytes of `media_type`. `if_match`
 * (an ETag, or NULL) makes the write conditional where the registry honours
 * it: -EAGAIN when it answered 412 (the document changed since it was read).
 * *subject_seen (NULL: not wanted) tells whether the registry answered
 * OCI-Subject, that is, took note of the document's subject for the
 * referrers API. */
int clip_registry_manifest_put(struct clip_registry *reg, const char *reference,
			       const char *media_type, const void *data, size_t len,
			       const char *if_match, bool *subject_seen, struct clip_err *err);

/* GET referrers/<digest>?artifactType=<artifact_type> (OCI 1.1): the image
 * index of the manifests whose subject is `digest`. -ENOENT when the
 * registry does not implement the API (it answers 404, or 400, 405 or 501
 * as some do; one that implements it answers an empty index). *filtered tells whether the registry applied
 * the artifactType filter (OCI-Filters-Applied); when not, the caller
 * filters. On success *out is the caller's. */
int clip_registry_referrers(struct clip_registry *reg, const char *digest,
			    const char *artifact_type, struct clip_registry_document *out,
			    bool *filtered, struct clip_err *err);

/* "host[:port]/repository", for messages (borrowed). */
const char *clip_registry_name(const struct clip_registry *reg);

/* The counters so far into *out. Each is read atomically, but not all
 * at one instant while requests run. */
void clip_registry_stats(const struct clip_registry *reg, struct clip_registry_stats *out);

/* Make every request of `reg` under way, and every later one, fail with
 * -ECANCELED within about a second (a stalled answer, a backoff or a
 * Retry-After wait included), so that a closing reader need not wait for a
 * slow registry. There is no undoing it. Safe from any thread. */
void clip_registry_cancel(struct clip_registry *reg);

/* Close the connections, wipe the credentials and tokens, and free `reg`
 * (NULL is fine). No stream of `reg` may be open and no call running. */
void clip_registry_free(struct clip_registry *reg);

#endif
