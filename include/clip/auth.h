/* clip: registry credentials and authentication challenges.
 *
 * Credentials are found the way docker and podman find them, first match wins:
 *   1. $REGISTRY_AUTH_FILE, then ${XDG_RUNTIME_DIR}/containers/auth.json (podman);
 *   2. $DOCKER_CONFIG/config.json, else ~/.docker/config.json (docker):
 *      "credHelpers": {"<registry>": "<name>"} -> docker-credential-<name>,
 *      "credsStore": "<name>" -> docker-credential-<name> for every registry,
 *      "auths": {"<registry>": {"auth": base64("user:password"),
 *                               "identitytoken": "..."}}.
 * A credential helper is run as `docker-credential-<name> get` with the
 * registry on stdin and answers {"ServerURL","Username","Secret"} on stdout;
 * Username "<token>" means Secret is an identity (refresh) token.
 * "auths" keys match with or without a scheme and a trailing path
 * ("https://index.docker.io/v1/" is docker.io's key).
 * Secrets are never put into error messages.
 *
 * Thread safety: no shared state; every function may be called from many
 * threads at once (the lookups read the environment, which must not change
 * meanwhile, and may run a credential helper, waiting for it).
 */
#ifndef CLIP_AUTH_H
#define CLIP_AUTH_H

#include <stddef.h>

#include "clip/err.h"

#define CLIP_AUTH_MAX_FILE   (1u << 20) /* largest config.json/auth.json read */
#define CLIP_AUTH_MAX_HELPER (1u << 16) /* largest credential-helper answer */

struct clip_credentials {
	char *username;	      /* NULL when none */
	char *password;	      /* NULL when none */
	char *identity_token; /* NULL when none: an OAuth2 refresh token */
};

/* Wipe (explicit_bzero) and free what `c` holds, and zero it. */
void clip_credentials_clear(struct clip_credentials *c);

/* Look up credentials for `registry` (a domain as in clip_ref.domain) in the
 * files above. Returns 1 and fills *out when found (the caller releases it
 * with clip_credentials_clear), 0 when there are none (anonymous access), or
 * a negative errno with `err` naming the file or helper and the reason
 * (malformed JSON, bad base64 in "auth", a helper that failed, timed out or
 * answered garbage). *out is untouched unless 1 is returned. */
int clip_auth_lookup(const char *registry, struct clip_credentials *out, struct clip_err *err);

/* The same lookup in one docker/podman config document (`json`, `len`
 * bytes, -EFBIG past CLIP_AUTH_MAX_FILE); `what` names it in errors. Runs
 * credential helpers it names. Returns as clip_auth_lookup. */
int clip_auth_lookup_in_config(const char *json, size_t len, const char *what, const char *registry,
			       struct clip_credentials *out, struct clip_err *err);

/* A WWW-Authenticate challenge (RFC 7235): scheme plus the parameters a
 * registry uses. Values are unquoted (backslash escapes resolved). */
struct clip_auth_challenge {
	char *scheme;  /* "Bearer" or "Basic" as sent (compare case-insensitively) */
	char *realm;   /* never NULL for Bearer; NULL when a Basic challenge has none */
	char *service; /* NULL when absent */
	char *scope;   /* NULL when absent */
	char *error;   /* NULL when absent, e.g. "insufficient_scope" */
};

/* Parse the value of one WWW-Authenticate header; of a list of challenges
 * only the first is taken, and parameters other than the four above are
 * skipped. -EBADMSG naming what is malformed (a Bearer challenge without a
 * realm too; at most 8 KiB accepted, -EFBIG beyond). On success *out is
 * overwritten (what it held is not freed) and owned by the caller; on
 * failure it is untouched. */
int clip_auth_parse_challenge(const char *header, struct clip_auth_challenge *out,
			      struct clip_err *err);

/* Free what `c` holds and zero it; `c` may be NULL. */
void clip_auth_challenge_clear(struct clip_auth_challenge *c);

/* Parse a token endpoint's JSON answer: "token" or else "access_token"
 * (a new secret string in *token, the caller's), "expires_in" seconds
 * (default 60 when absent or below the spec's minimum of 60, as the
 * distribution spec says; at most a year). -EBADMSG when neither token is
 * there or "expires_in" is not an integer; -EFBIG past CLIP_AUTH_MAX_HELPER
 * bytes. */
int clip_auth_parse_token_response(const char *json, size_t len, char **token, long *expires_in,
				   struct clip_err *err);

#endif
