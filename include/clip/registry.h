/* clip: a client for the OCI Distribution API (libcurl, jansson, OpenSSL).
 *
 * One `struct clip_registry` talks to one repository of one registry. It is
 * safe to use from many threads at once: connections, TLS sessions and DNS
 * answers are shared (a curl share handle), bearer tokens are cached per
 * scope until they expire.
 *
 * Transport: plain HTTP for loopback registries (localhost, 127.0.0.0/8,
 * ::1, as docker does) unless options->ca_file is given, and when
 * options->plain_http is set; HTTPS with the
 * system CAs otherwise, or options->ca_file. HTTP/2 where the server offers
 * it. Redirects (blob storage) are followed by hand, at most 5, and the
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

/* A client for ref->api_host / ref->repository (the ref is copied). No
 * network traffic happens here. *out owned by the caller. */
int clip_registry_open(const struct clip_ref *ref, const struct clip_registry_options *options,
		       struct clip_registry **out, struct clip_err *err);

/* Resolve `reference` (a tag, or "sha256:..." digest) to an image for
 * `platform` (NULL: the host's): GET the manifest with an Accept list for OCI
 * index/manifest and Docker v2 list/manifest, verify its SHA-256 when the
 * digest is known (pull by digest, index entries), follow an image index to
 * the platform's manifest, GET and verify the config blob, and fill *img as
 * clip_oci_layout_resolve does (on failure *img is untouched). */
int clip_registry_resolve(struct clip_registry *reg, const char *reference,
			  const struct clip_platform *platform, struct clip_image *img,
			  struct clip_err *err);

/* Open blob `digest` (`size` bytes, 0 if unknown) as a sequential stream
 * for the indexer: a plain GET whose body is handed over as it arrives
 * (nothing is written to disk). An interrupted transfer is resumed with a
 * Range request from the last byte received. The stream does not verify the
 * digest (the indexer hashes what it reads). *out is closed by its user. */
int clip_registry_blob_stream(struct clip_registry *reg, const char *digest, uint64_t size,
			      struct clip_stream *out, struct clip_err *err);

/* Read [offset, offset+len) of blob `digest` with a `Range: bytes=a-b` GET
 * (retried as above): returns the bytes read (short only at the end of the
 * blob) or a negative errno. A server that ignores Range is handled (the
 * wanted part of the full answer is kept). */
ssize_t clip_registry_blob_read(struct clip_registry *reg, const char *digest, void *buf,
				size_t len, uint64_t offset, struct clip_err *err);

/* "host[:port]/repository", for messages (borrowed). */
const char *clip_registry_name(const struct clip_registry *reg);

void clip_registry_stats(const struct clip_registry *reg, struct clip_registry_stats *out);

void clip_registry_free(struct clip_registry *reg);

#endif
