/* clip: image references as docker and podman users type them.
 *
 *   ubuntu                          docker.io/library/ubuntu:latest
 *   ubuntu:22.04                    docker.io/library/ubuntu:22.04
 *   library/ubuntu, user/app        docker.io/...
 *   docker.io/library/ubuntu:22.04
 *   ghcr.io/org/app@sha256:<64 hex>
 *   host:5000/a/b/c:tag@sha256:<64 hex>
 *   docker://<any of the above>
 *
 * The grammar is distribution's reference grammar: the first component is a
 * registry domain when it contains '.' or ':' or is "localhost"; path
 * components are [a-z0-9]+ joined by '.', '_', '__' or '-'+; a tag is
 * [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; the whole name is at most 255 bytes.
 * Docker Hub ("docker.io", "index.docker.io", "registry-1.docker.io") is
 * reached at registry-1.docker.io and one-component names get "library/".
 * Parsing is pure: no network, no files.
 */
#ifndef CLIP_REF_H
#define CLIP_REF_H

#include <stdbool.h>

#include "clip/err.h"

struct clip_ref {
	char *domain;	  /* normalized registry name: "docker.io", "ghcr.io", "host:5000" */
	char *api_host;	  /* host[:port] to contact: "registry-1.docker.io" for docker.io */
	char *repository; /* "library/ubuntu" */
	char *tag;	  /* NULL when none was given */
	char *digest;	  /* "sha256:<hex>", NULL when none was given */
};

/* Parse `text` into *out (overwritten, not freed; release with
 * clip_ref_clear). Without tag and digest the tag is "latest". -EINVAL with a
 * message naming the reference and what is wrong ("invalid reference
 * \"Ubuntu\": repository name must be lowercase"); *out untouched then. */
int clip_ref_parse(const char *text, struct clip_ref *out, struct clip_err *err);

/* The canonical form "domain/repository[:tag][@digest]" as a new string
 * (NULL when out of memory). */
char *clip_ref_format(const struct clip_ref *ref);

/* The tag or digest to ask the registry for: the digest when there is one,
 * else the tag. Borrowed. */
const char *clip_ref_manifest_reference(const struct clip_ref *ref);

/* Whether docker would talk plain HTTP to `host` (a domain with optional
 * port): localhost, 127.0.0.0/8, ::1 ("[::1]:5000"). */
bool clip_ref_host_is_loopback(const char *host);

void clip_ref_clear(struct clip_ref *ref);

#endif
