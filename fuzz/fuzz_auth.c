/* libFuzzer harness for registry authentication parsing (src/lib/auth.c).
 *
 * The first byte picks the parser, the rest is its input:
 *   0: a WWW-Authenticate header value (clip_auth_parse_challenge);
 *   1: a token endpoint's JSON answer (clip_auth_parse_token_response);
 *   2: a docker/podman config.json (clip_auth_lookup_in_config), looked up
 *      for a registry chosen by the second byte.
 * Credential helpers named in a config would be run: PATH is set to one
 * directory that does not exist before the first input (not to "", which
 * glibc reads as the current directory), so posix_spawnp finds none and the
 * lookup fails with "not found in PATH", which the harness accepts.
 *
 * Every parser must either succeed with the fields its header promises or
 * fail with one of its documented codes and a message; nothing may leak.
 *
 * Build: fuzz/build. Seeds: fuzz/corpus/auth/, dictionary: fuzz/auth.dict.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip/auth.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* No credential helper may ever run from a fuzz input. */
	setenv("PATH", "/nonexistent/clip-fuzz-no-helpers", 1);
	unsetenv("DOCKER_CONFIG");
	unsetenv("REGISTRY_AUTH_FILE");
	return 0;
}

static void fuzz_challenge(const char *text)
{
	struct clip_err err = { 0 };
	struct clip_auth_challenge c;
	memset(&c, 0, sizeof(c));
	int r = clip_auth_parse_challenge(text, &c, &err);
	if (r == 0) {
		CHECK(c.scheme != NULL && c.scheme[0] != '\0');
		CHECK(strlen(text) <= 8192);
	} else {
		CHECK(r == -EBADMSG || r == -EFBIG);
		CHECK(err.code == r && err.msg[0] != '\0');
	}
	clip_auth_challenge_clear(&c);
}

static void fuzz_token(const char *json, size_t len)
{
	struct clip_err err = { 0 };
	char *token = NULL;
	long expires = -1;
	int r = clip_auth_parse_token_response(json, len, &token, &expires, &err);
	if (r == 0) {
		CHECK(token != NULL && token[0] != '\0');
		CHECK(expires >= 60 && expires <= 365L * 86400);
		free(token);
	} else {
		CHECK(token == NULL);
		CHECK(r == -EBADMSG || r == -EFBIG);
		CHECK(err.code == r && err.msg[0] != '\0');
	}
}

static void fuzz_config(const char *json, size_t len, uint8_t which)
{
	static const char *const registries[] = { "docker.io", "ghcr.io", "localhost:5000",
						  "quay.io", "127.0.0.1:5000" };
	const char *registry = registries[which % 5];
	struct clip_err err = { 0 };
	struct clip_credentials cred = { 0 };
	int r = clip_auth_lookup_in_config(json, len, "fuzz.json", registry, &cred, &err);
	if (r == 1) {
		CHECK(cred.username != NULL || cred.password != NULL ||
		      cred.identity_token != NULL);
	} else if (r == 0) {
		CHECK(cred.username == NULL && cred.password == NULL &&
		      cred.identity_token == NULL);
	} else {
		CHECK(r == -EBADMSG || r == -EFBIG || r == -ENOENT || r == -EINVAL);
		CHECK(err.code == r && err.msg[0] != '\0');
	}
	clip_credentials_clear(&cred);
	CHECK(cred.username == NULL && cred.password == NULL && cred.identity_token == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t which = data[0] % 3;
	/* The JSON parsers get exactly the bytes (no terminator), so that a read
	 * past `len` is caught; the header parser takes a C string. */
	const uint8_t *body = data + 1;
	size_t len = size - 1;
	char *copy = malloc(len + 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, body, len);
	copy[len] = '\0';
	switch (which) {
	case 0: fuzz_challenge(copy); break;
	case 1: {
		char *exact = malloc(len ? len : 1);
		if (exact != NULL) {
			memcpy(exact, body, len);
			fuzz_token(exact, len);
			free(exact);
		}
		break;
	}
	default: {
		uint8_t reg = len > 0 ? body[0] : 0;
		char *exact = malloc(len ? len : 1);
		if (exact != NULL) {
			memcpy(exact, body, len);
			fuzz_config(exact, len, reg);
			free(exact);
		}
		break;
	}
	}
	free(copy);
	return 0;
}
