/* Unit tests for src/lib/ref.c: every reference form docker and podman users
 * type, docker's normalization, and the ways a reference can be wrong. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clip/ref.h"

#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define DGST  "sha256:" HEX64

struct expect {
	const char *text;
	const char *domain;
	const char *api_host;
	const char *repository;
	const char *tag; /* NULL: none */
	const char *digest;
	const char *canonical;
};

static void check_parse(const struct expect *e)
{
	struct clip_ref ref;
	struct clip_err err = { 0 };
	int r = clip_ref_parse(e->text, &ref, &err);
	if (r != 0)
		print_error("\"%s\": %s\n", e->text, err.msg);
	assert_int_equal(r, 0);
	assert_string_equal(ref.domain, e->domain);
	assert_string_equal(ref.api_host, e->api_host);
	assert_string_equal(ref.repository, e->repository);
	if (e->tag == NULL)
		assert_null(ref.tag);
	else
		assert_string_equal(ref.tag, e->tag);
	if (e->digest == NULL)
		assert_null(ref.digest);
	else
		assert_string_equal(ref.digest, e->digest);
	char *s = clip_ref_format(&ref);
	assert_non_null(s);
	assert_string_equal(s, e->canonical);
	/* The canonical form parses back to the same reference. */
	struct clip_ref again;
	assert_int_equal(clip_ref_parse(s, &again, &err), 0);
	char *s2 = clip_ref_format(&again);
	assert_string_equal(s2, s);
	free(s2);
	free(s);
	assert_string_equal(clip_ref_manifest_reference(&ref),
			    e->digest != NULL ? e->digest : e->tag);
	clip_ref_clear(&again);
	clip_ref_clear(&ref);
	assert_null(ref.domain);
	assert_null(ref.repository);
}

static void test_valid_forms(void **state)
{
	static const struct expect cases[] = {
		{ "ubuntu", "docker.io", "registry-1.docker.io", "library/ubuntu", "latest", NULL,
		  "docker.io/library/ubuntu:latest" },
		{ "ubuntu:22.04", "docker.io", "registry-1.docker.io", "library/ubuntu", "22.04",
		  NULL, "docker.io/library/ubuntu:22.04" },
		{ "library/ubuntu", "docker.io", "registry-1.docker.io", "library/ubuntu", "latest",
		  NULL, "docker.io/library/ubuntu:latest" },
		{ "user/app", "docker.io", "registry-1.docker.io", "user/app", "latest", NULL,
		  "docker.io/user/app:latest" },
		{ "docker.io/library/ubuntu:22.04", "docker.io", "registry-1.docker.io",
		  "library/ubuntu", "22.04", NULL, "docker.io/library/ubuntu:22.04" },
		{ "docker.io/ubuntu", "docker.io", "registry-1.docker.io", "library/ubuntu",
		  "latest", NULL, "docker.io/library/ubuntu:latest" },
		{ "index.docker.io/library/ubuntu", "docker.io", "registry-1.docker.io",
		  "library/ubuntu", "latest", NULL, "docker.io/library/ubuntu:latest" },
		{ "registry-1.docker.io/ubuntu:1", "docker.io", "registry-1.docker.io",
		  "library/ubuntu", "1", NULL, "docker.io/library/ubuntu:1" },
		{ "ghcr.io/org/app@" DGST, "ghcr.io", "ghcr.io", "org/app", NULL, DGST,
		  "ghcr.io/org/app@" DGST },
		{ "host:5000/a/b/c:tag@" DGST, "host:5000", "host:5000", "a/b/c", "tag", DGST,
		  "host:5000/a/b/c:tag@" DGST },
		{ "host:5000/a/b/c", "host:5000", "host:5000", "a/b/c", "latest", NULL,
		  "host:5000/a/b/c:latest" },
		{ "docker://ubuntu", "docker.io", "registry-1.docker.io", "library/ubuntu",
		  "latest", NULL, "docker.io/library/ubuntu:latest" },
		{ "docker://host:5000/a/b/c:tag@" DGST, "host:5000", "host:5000", "a/b/c", "tag",
		  DGST, "host:5000/a/b/c:tag@" DGST },
		{ "localhost/app", "localhost", "localhost", "app", "latest", NULL,
		  "localhost/app:latest" },
		{ "localhost:5000/app:v1", "localhost:5000", "localhost:5000", "app", "v1", NULL,
		  "localhost:5000/app:v1" },
		{ "127.0.0.1:5000/test/img:v1", "127.0.0.1:5000", "127.0.0.1:5000", "test/img",
		  "v1", NULL, "127.0.0.1:5000/test/img:v1" },
		{ "[::1]:5000/app", "[::1]:5000", "[::1]:5000", "app", "latest", NULL,
		  "[::1]:5000/app:latest" },
		{ "Quay.IO/org/app", "Quay.IO", "Quay.IO", "org/app", "latest", NULL,
		  "Quay.IO/org/app:latest" },
		/* separators: '.', '_', '__', runs of '-' */
		{ "a_b__c---d/e.f-g", "docker.io", "registry-1.docker.io", "a_b__c---d/e.f-g",
		  "latest", NULL, "docker.io/a_b__c---d/e.f-g:latest" },
		/* a tag may start with '_' and hold '.', '-' and capitals */
		{ "app:_V1.2-rc", "docker.io", "registry-1.docker.io", "library/app", "_V1.2-rc",
		  NULL, "docker.io/library/app:_V1.2-rc" },
		/* "localhost:5000" alone is docker's library/localhost with tag 5000 */
		{ "localhost:5000", "docker.io", "registry-1.docker.io", "library/localhost",
		  "5000", NULL, "docker.io/library/localhost:5000" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_parse(&cases[i]);
}

static void test_length_limits(void **state)
{
	struct clip_ref ref;
	struct clip_err err = { 0 };
	char text[600];

	/* A tag of 128 bytes is fine, 129 is not. */
	snprintf(text, sizeof(text), "app:%0128d", 0);
	assert_int_equal(clip_ref_parse(text, &ref, &err), 0);
	assert_int_equal(strlen(ref.tag), 128);
	clip_ref_clear(&ref);
	snprintf(text, sizeof(text), "app:%0129d", 0);
	assert_int_equal(clip_ref_parse(text, &ref, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "tag"));

	/* "host.io/" (8 bytes) + 247 = 255 bytes: the longest name. */
	memcpy(text, "host.io/", 8);
	memset(text + 8, 'a', 247);
	text[255] = '\0';
	assert_int_equal(clip_ref_parse(text, &ref, &err), 0);
	clip_ref_clear(&ref);
	text[255] = 'a';
	text[256] = '\0';
	assert_int_equal(clip_ref_parse(text, &ref, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "longer than 255"));

	/* The limit counts the normalized name: "docker.io/library/" + 237. */
	memset(text, 'b', 237);
	text[237] = '\0';
	assert_int_equal(clip_ref_parse(text, &ref, &err), 0);
	assert_int_equal(strlen(ref.domain) + 1 + strlen(ref.repository), 255);
	clip_ref_clear(&ref);
	text[237] = 'b';
	text[238] = '\0';
	assert_int_equal(clip_ref_parse(text, &ref, &err), -EINVAL);
}

struct bad {
	const char *text;
	const char *reason; /* a part of the message */
};

static void test_invalid(void **state)
{
	static const struct bad cases[] = {
		{ "Ubuntu", "must be lowercase" },
		{ "library/Ubuntu:1", "must be lowercase" },
		{ "ghcr.io/Org/app", "must be lowercase" },
		{ "", "empty reference" },
		{ "docker://", "empty reference" },
		{ "ubuntu:", "empty tag" },
		{ "ubuntu@", "empty digest" },
		{ "ubuntu:1@", "empty digest" },
		{ "a//b", "empty component" },
		{ "/ubuntu", "empty component" },
		{ "ubuntu/", "empty component" },
		{ "host.io/", "empty component" },
		{ "host.io//x", "empty component" },
		{ "-app", "must start" },
		{ "app-", "must end" },
		{ "a..b", "must start" },
		{ "a___b", "must start" },
		{ "app name", "invalid character ' '" },
		{ "app:ta g", "invalid character ' ' in tag" },
		{ "app:-tag", "must start" },
		{ "app@sha256:abc", "64 lowercase hex" },
		{ "app@sha256:" HEX64 "0", "64 lowercase hex" },
		{ "app@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
		  "64 lowercase hex" },
		{ "app@sha512:abcd", "unsupported digest algorithm" },
		{ "app@" HEX64, "malformed digest" },
		{ "https://ghcr.io/org/app", "docker://" },
		{ "oci:/tmp/layout", "transport \"oci:\" is not a registry reference" },
		{ "dir:/tmp/x", "transport \"dir:\"" },
		{ HEX64, "image ID" },
		{ "ho_st.io/app", "invalid registry host" },
		{ "host-.io/app", "invalid registry host" },
		{ "host.io:/app", "empty port" },
		{ "host.io:99999/app", "port out of range" },
		{ "host.io:5x/app", "invalid port" },
		{ "[::1/app", "unterminated '['" },
		{ "[zz]:5000/app", "invalid IPv6" },
		{ ":5000/app", "empty registry host" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct clip_ref ref;
		memset(&ref, 0x5a, sizeof(ref));
		struct clip_ref untouched = ref;
		struct clip_err err = { 0 };
		int r = clip_ref_parse(cases[i].text, &ref, &err);
		if (r != -EINVAL || strstr(err.msg, cases[i].reason) == NULL)
			print_error("\"%s\": got %d \"%s\", expected \"%s\"\n", cases[i].text, r,
				    err.msg, cases[i].reason);
		assert_int_equal(r, -EINVAL);
		assert_int_equal(err.code, -EINVAL);
		assert_non_null(strstr(err.msg, cases[i].reason));
		/* The message quotes the reference as typed. */
		char quoted[300];
		snprintf(quoted, sizeof(quoted), "invalid reference \"%s\"", cases[i].text);
		assert_non_null(strstr(err.msg, quoted));
		/* *out untouched on failure. */
		assert_memory_equal(&ref, &untouched, sizeof(ref));
	}
}

static void test_long_invalid_message(void **state)
{
	/* A huge reference is cut in the message, the reason is kept. */
	size_t n = 5000;
	char *text = malloc(n + 1);
	memset(text, 'A', n);
	text[n] = '\0';
	struct clip_ref ref;
	struct clip_err err = { 0 };
	assert_int_equal(clip_ref_parse(text, &ref, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "must be lowercase"));
	assert_non_null(strstr(err.msg, "...\""));
	free(text);
	assert_int_equal(clip_ref_parse(NULL, &ref, &err), -EINVAL);
}

static void test_loopback(void **state)
{
	static const char *yes[] = { "localhost",
				     "localhost:5000",
				     "LOCALHOST:1",
				     "127.0.0.1",
				     "127.0.0.1:5000",
				     "127.1.2.3:80",
				     "[::1]",
				     "[::1]:5000",
				     "::1",
				     "[::ffff:127.0.0.1]:5000" };
	static const char *no[] = {
		"",	    "docker.io",	"128.0.0.1:5000", "localhost.com",   "[::2]:5000",
		"10.0.0.1", "127.0.0.1.nip.io", "[::1",		  "localhostx:5000", "vm:5000"
	};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (!clip_ref_host_is_loopback(yes[i]))
			print_error("%s should be loopback\n", yes[i]);
		assert_true(clip_ref_host_is_loopback(yes[i]));
	}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		if (clip_ref_host_is_loopback(no[i]))
			print_error("%s should not be loopback\n", no[i]);
		assert_false(clip_ref_host_is_loopback(no[i]));
	}
	assert_false(clip_ref_host_is_loopback(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_forms), cmocka_unit_test(test_length_limits),
		cmocka_unit_test(test_invalid),	    cmocka_unit_test(test_long_invalid_message),
		cmocka_unit_test(test_loopback),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
