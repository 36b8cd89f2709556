/* Unit tests for src/lib/auth.c: docker/podman config lookup (base64 "auth",
 * identity tokens, key matching, the file search order), credential helpers
 * (real scripts written into a temporary directory put first on PATH), the
 * WWW-Authenticate parser and the token-response parser. Every error case
 * also checks that no secret reached the message. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "clip/auth.h"
#include "testutil.h"

/* base64 of the strings next to them, written out so that the test does not
 * depend on the code under test. */
#define B64_ALICE    "YWxpY2U6czNjcjN0OnB3" /* alice:s3cr3t:pw */
#define B64_A_B	     "YTpi"		    /* a:b (no padding) */
#define B64_A_BC     "YTpiYw=="		    /* a:bc (two '=') */
#define B64_A_BCD    "YTpiY2Q="		    /* a:bcd (one '=') */
#define B64_NOCOL    "bm9jb2xvbg=="	    /* nocolon */
#define B64_EMPTY_PW "dXNlcjo="		    /* user: */

static char *tmp;
static char *old_path;

static int group_setup(void **state)
{
	tmp = tt_tmpdir();
	const char *p = getenv("PATH");
	old_path = strdup(p != NULL ? p : "/usr/bin:/bin");
	char path[8192];
	snprintf(path, sizeof(path), "%s:%s", tmp, old_path);
	setenv("PATH", path, 1);
	return 0;
}

static int group_teardown(void **state)
{
	setenv("PATH", old_path, 1);
	free(old_path);
	tt_rm_rf(tmp);
	free(tmp);
	return 0;
}

static void assert_err(int r, const struct clip_err *err, int code, const char *needle)
{
	if (r != code || strstr(err->msg, needle) == NULL)
		print_error("got %d \"%s\", expected %d with \"%s\"\n", r, err->msg, code, needle);
	assert_int_equal(r, code);
	assert_non_null(strstr(err->msg, needle));
}

static void assert_no_secret(const struct clip_err *err, const char *secret)
{
	const char *hit = strstr(err->msg, secret);
	if (hit != NULL)
		print_error("a secret is in the message \"%s\"\n", err->msg);
	assert_null(hit);
}

static int lookup(const char *json, const char *registry, struct clip_credentials *c,
		  struct clip_err *err)
{
	memset(c, 0, sizeof(*c));
	return clip_auth_lookup_in_config(json, strlen(json), "test.json", registry, c, err);
}

/* Write an executable docker-credential-<name> into tmp. */
static void write_helper(const char *name, const char *body)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/docker-credential-%s", tmp, name);
	char script[8192];
	snprintf(script, sizeof(script), "#!/bin/sh\n%s\n", body);
	tt_write_file(path, script, strlen(script));
	assert_int_equal(chmod(path, 0755), 0);
}

static char *read_text(const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return NULL;
	static char buf[4096];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* ---- config documents ------------------------------------------------- */

static void test_auths_basic(void **state)
{
	struct clip_credentials c;
	struct clip_err err = { 0 };
	assert_int_equal(lookup("{\"auths\":{\"ghcr.io\":{\"auth\":\"" B64_ALICE "\"}}}", "ghcr.io",
				&c, &err),
			 1);
	assert_string_equal(c.username, "alice");
	/* Only the first ':' separates: passwords may hold colons. */
	assert_string_equal(c.password, "s3cr3t:pw");
	assert_null(c.identity_token);
	clip_credentials_clear(&c);
	assert_null(c.username);
	assert_null(c.password);

	/* Nothing for another registry. */
	assert_int_equal(lookup("{\"auths\":{\"ghcr.io\":{\"auth\":\"" B64_ALICE "\"}}}", "quay.io",
				&c, &err),
			 0);
	assert_null(c.username);
	/* No "auths" at all, an empty entry, an empty "auth". */
	assert_int_equal(lookup("{}", "quay.io", &c, &err), 0);
	assert_int_equal(lookup("{\"auths\":{\"quay.io\":{}}}", "quay.io", &c, &err), 0);
	assert_int_equal(lookup("{\"auths\":{\"quay.io\":{\"auth\":\"\"}}}", "quay.io", &c, &err),
			 0);
}

static void test_base64_padding(void **state)
{
	static const struct {
		const char *b64, *user, *password;
	} cases[] = {
		{ B64_A_B, "a", "b" },
		{ B64_A_BC, "a", "bc" },
		{ B64_A_BCD, "a", "bcd" },
		{ B64_EMPTY_PW, "user", "" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char json[256];
		snprintf(json, sizeof(json), "{\"auths\":{\"r.io\":{\"auth\":\"%s\"}}}",
			 cases[i].b64);
		struct clip_credentials c;
		struct clip_err err = { 0 };
		assert_int_equal(lookup(json, "r.io", &c, &err), 1);
		assert_string_equal(c.username, cases[i].user);
		/* exact length: no padding bytes leak into the password */
		assert_int_equal(strlen(c.password), strlen(cases[i].password));
		assert_string_equal(c.password, cases[i].password);
		clip_credentials_clear(&c);
	}
}

static void test_bad_base64(void **state)
{
	static const char *bad[] = {
		"YWxpY2U6c2VjcmV0",  /* fine, as a control: alice:secret */
		"YWxpY2U6c2VjcmV",   /* length not a multiple of 4 */
		"YWxp=2U6c2VjcmV0",  /* '=' inside */
		"YWxpY2U6c2Vjc!V0",  /* bad character */
		"YWxpY2U6c2VjcmV0 ", /* trailing space */
		"YWxpY2U6c2Vjc===",  /* three '=' */
		"====",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char json[256];
		snprintf(json, sizeof(json), "{\"auths\":{\"r.io:5000\":{\"auth\":\"%s\"}}}",
			 bad[i]);
		struct clip_credentials c;
		struct clip_err err = { 0 };
		int r = lookup(json, "r.io:5000", &c, &err);
		if (i == 0) {
			assert_int_equal(r, 1);
			assert_string_equal(c.password, "secret");
			clip_credentials_clear(&c);
			continue;
		}
		assert_err(r, &err, -EINVAL, "not valid base64");
		/* names the file and the registry, not the value */
		assert_non_null(strstr(err.msg, "test.json"));
		assert_non_null(strstr(err.msg, "r.io:5000"));
		assert_no_secret(&err, bad[i]);
		assert_null(c.username);
	}

	struct clip_credentials c;
	struct clip_err err = { 0 };
	assert_err(lookup("{\"auths\":{\"r.io\":{\"auth\":\"" B64_NOCOL "\"}}}", "r.io", &c, &err),
		   &err, -EINVAL, "username:password");
	assert_no_secret(&err, "nocolon");
}

static void test_identity_token(void **state)
{
	struct clip_credentials c;
	struct clip_err err = { 0 };
	assert_int_equal(
		lookup("{\"auths\":{\"r.io\":{\"identitytoken\":\"rt-1\"}}}", "r.io", &c, &err), 1);
	assert_null(c.username);
	assert_string_equal(c.identity_token, "rt-1");
	clip_credentials_clear(&c);
	assert_null(c.identity_token);

	assert_int_equal(lookup("{\"auths\":{\"r.io\":{\"auth\":\"" B64_A_B
				"\",\"identitytoken\":\"rt-2\"}}}",
				"r.io", &c, &err),
			 1);
	assert_string_equal(c.username, "a");
	assert_string_equal(c.identity_token, "rt-2");
	clip_credentials_clear(&c);
}

static void test_key_matching(void **state)
{
	static const struct {
		const char *key, *registry;
		int found;
	} cases[] = {
		{ "https://index.docker.io/v1/", "docker.io", 1 },
		{ "index.docker.io", "docker.io", 1 },
		{ "registry-1.docker.io", "docker.io", 1 },
		{ "docker.io", "docker.io", 1 },
		{ "http://host:5000", "host:5000", 1 },
		{ "https://host:5000/v2/", "host:5000", 1 },
		{ "quay.io/org/repo", "quay.io", 1 },
		{ "host:5000", "host:5001", 0 },
		{ "host", "host:5000", 0 },
		{ "https://ghcr.io.evil.com", "ghcr.io", 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char json[256];
		snprintf(json, sizeof(json), "{\"auths\":{\"%s\":{\"auth\":\"" B64_A_B "\"}}}",
			 cases[i].key);
		struct clip_credentials c;
		struct clip_err err = { 0 };
		int r = lookup(json, cases[i].registry, &c, &err);
		if (r != cases[i].found)
			print_error("key %s, registry %s: %d\n", cases[i].key, cases[i].registry,
				    r);
		assert_int_equal(r, cases[i].found);
		clip_credentials_clear(&c);
	}

	/* An exact key wins over one that only normalizes to the registry. */
	struct clip_credentials c;
	struct clip_err err = { 0 };
	assert_int_equal(lookup("{\"auths\":{\"https://r.io/\":{\"auth\":\"" B64_A_BC
				"\"},\"r.io\":{\"auth\":\"" B64_A_B "\"}}}",
				"r.io", &c, &err),
			 1);
	assert_string_equal(c.password, "b");
	clip_credentials_clear(&c);
}

static void test_malformed_config(void **state)
{
	struct clip_credentials c;
	struct clip_err err = { 0 };
	/* jansson would quote the token it stopped at; the message must not. */
	assert_err(lookup("{\"auths\":{\"r.io\":{\"auth\" \"SECRETVALUE\"}}}", "r.io", &c, &err),
		   &err, -EBADMSG, "test.json: invalid JSON at line 1");
	assert_no_secret(&err, "SECRETVALUE");
	assert_err(lookup("[]", "r.io", &c, &err), &err, -EBADMSG, "expected a JSON object");
	assert_err(lookup("{\"auths\":[]}", "r.io", &c, &err), &err, -EBADMSG, "\"auths\"");
	assert_err(lookup("{\"credsStore\":1}", "r.io", &c, &err), &err, -EBADMSG,
		   "\"credsStore\"");
	assert_err(lookup("{\"auths\":{\"r.io\":{\"auth\":5}}}", "r.io", &c, &err), &err, -EBADMSG,
		   "must be strings");
	assert_err(lookup("{\"auths\":{\"r.io\":\"x\"}}", "r.io", &c, &err), &err, -EBADMSG,
		   "not an object");
	assert_err(lookup("{\"credHelpers\":{\"r.io\":7}}", "r.io", &c, &err), &err, -EBADMSG,
		   "credHelpers entry for r.io");

	size_t n = CLIP_AUTH_MAX_FILE + 1;
	char *big = malloc(n + 1);
	memset(big, ' ', n);
	big[0] = '{';
	big[n - 1] = '}';
	big[n] = '\0';
	assert_int_equal(clip_auth_lookup_in_config(big, n, "big.json", "r.io", &c, &err), -EFBIG);
	free(big);
}

/* ---- credential helpers ----------------------------------------------- */

static void test_helper_answers(void **state)
{
	char body[2048];
	snprintf(body, sizeof(body),
		 "cat > '%s/stdin.good'\n"
		 "[ \"$1\" = get ] || exit 9\n"
		 "echo '{\"ServerURL\":\"x\",\"Username\":\"bob\",\"Secret\":\"hunter2\"}'",
		 tmp);
	write_helper("good", body);

	struct clip_credentials c;
	struct clip_err err = { 0 };
	assert_int_equal(lookup("{\"credHelpers\":{\"r.io:5000\":\"good\"},"
				"\"auths\":{\"r.io:5000\":{\"auth\":\"" B64_A_B "\"}}}",
				"r.io:5000", &c, &err),
			 1);
	/* credHelpers wins over auths */
	assert_string_equal(c.username, "bob");
	assert_string_equal(c.password, "hunter2");
	clip_credentials_clear(&c);
	char path[4096];
	snprintf(path, sizeof(path), "%s/stdin.good", tmp);
	assert_string_equal(read_text(path), "r.io:5000");

	/* credsStore for every registry; Docker Hub is asked for by its v1
	 * URL, as docker does. */
	assert_int_equal(lookup("{\"credsStore\":\"good\"}", "docker.io", &c, &err), 1);
	assert_string_equal(c.username, "bob");
	clip_credentials_clear(&c);
	assert_string_equal(read_text(path), "https://index.docker.io/v1/");

	/* credHelpers for another registry does not apply; credsStore does. */
	write_helper("token", "cat >/dev/null\n"
			      "echo '{\"Username\":\"<token>\",\"Secret\":\"refresh-xyz\"}'");
	assert_int_equal(lookup("{\"credHelpers\":{\"other.io\":\"good\"},\"credsStore\":"
				"\"token\"}",
				"r.io", &c, &err),
			 1);
	assert_null(c.username);
	assert_null(c.password);
	assert_string_equal(c.identity_token, "refresh-xyz");
	clip_credentials_clear(&c);

	/* "credentials not found": anonymous, and auths is not consulted (as
	 * docker's native store). */
	write_helper("none", "cat >/dev/null\n"
			     "echo 'credentials not found in native keychain'\n"
			     "exit 1");
	assert_int_equal(lookup("{\"credsStore\":\"none\",\"auths\":{\"r.io\":{\"auth\":\"" B64_A_B
				"\"}}}",
				"r.io", &c, &err),
			 0);
	assert_null(c.username);
}

static void test_helper_failures(void **state)
{
	struct clip_credentials c;
	struct clip_err err = { 0 };

	write_helper("fails", "cat >/dev/null\necho 'keychain locked'\nexit 3");
	assert_err(lookup("{\"credsStore\":\"fails\"}", "r.io", &c, &err), &err, -EIO,
		   "docker-credential-fails: exited with status 3: keychain locked");
	assert_non_null(strstr(err.msg, "test.json"));

	/* An answer that is not JSON is not quoted: it may be a secret. */
	write_helper("garbage", "cat >/dev/null\necho 'Secret=TOPSECRET123'");
	assert_err(lookup("{\"credsStore\":\"garbage\"}", "r.io", &c, &err), &err, -EBADMSG,
		   "docker-credential-garbage: invalid JSON");
	assert_no_secret(&err, "TOPSECRET123");

	write_helper("nosecret", "cat >/dev/null\necho '{\"Username\":\"u\"}'");
	assert_err(lookup("{\"credsStore\":\"nosecret\"}", "r.io", &c, &err), &err, -EBADMSG,
		   "no \"Secret\"");

	assert_err(lookup("{\"credsStore\":\"does-not-exist-here\"}", "r.io", &c, &err), &err,
		   -ENOENT, "docker-credential-does-not-exist-here: not found in PATH");
	assert_err(lookup("{\"credsStore\":\"../../bin/sh\"}", "r.io", &c, &err), &err, -EINVAL,
		   "invalid credential helper name");

	write_helper("huge", "cat >/dev/null\nhead -c 70000 /dev/zero | tr '\\0' x");
	assert_err(lookup("{\"credsStore\":\"huge\"}", "r.io", &c, &err), &err, -EFBIG,
		   "longer than");

	write_helper("signal", "cat >/dev/null\nkill -9 $$");
	assert_err(lookup("{\"credsStore\":\"signal\"}", "r.io", &c, &err), &err, -EIO,
		   "killed by signal 9");
	assert_null(c.username);
}

static void test_helper_timeout(void **state)
{
	/* exec so that the process killed is the one holding the pipe. */
	write_helper("hangs", "exec sleep 60");
	struct clip_credentials c;
	struct clip_err err = { 0 };
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_err(lookup("{\"credsStore\":\"hangs\"}", "r.io", &c, &err), &err, -ETIMEDOUT,
		   "docker-credential-hangs: no answer within 10 s");
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double dt = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(dt >= 9.5 && dt < 15);
}

/* ---- the file search -------------------------------------------------- */

static void write_config(const char *rel, const char *json)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", tmp, rel);
	/* mkdir -p of every directory below tmp */
	for (char *p = path + strlen(tmp) + 1; (p = strchr(p, '/')) != NULL; p++) {
		*p = '\0';
		mkdir(path, 0755);
		*p = '/';
	}
	tt_write_file(path, json, strlen(json));
}

static void test_lookup_order(void **state)
{
	char dir[4096];
	write_config("xdg/containers/auth.json", "{\"auths\":{\"podman.io\":{\"auth\":\"" B64_A_B
						 "\"},\"both.io\":{\"auth\":\"" B64_A_BC "\"}}}");
	write_config("docker/config.json", "{\"auths\":{\"docker.example\":{\"auth\":\"" B64_A_BCD
					   "\"},\"both.io\":{\"auth\":\"" B64_A_BCD "\"}}}");
	write_config("regauth.json", "{\"auths\":{\"regauth.io\":{\"auth\":\"" B64_ALICE "\"}}}");
	write_config("home/.docker/config.json",
		     "{\"auths\":{\"home.io\":{\"auth\":\"" B64_A_B "\"}}}");

	snprintf(dir, sizeof(dir), "%s/xdg", tmp);
	setenv("XDG_RUNTIME_DIR", dir, 1);
	snprintf(dir, sizeof(dir), "%s/docker", tmp);
	setenv("DOCKER_CONFIG", dir, 1);
	snprintf(dir, sizeof(dir), "%s/regauth.json", tmp);
	setenv("REGISTRY_AUTH_FILE", dir, 1);
	snprintf(dir, sizeof(dir), "%s/home", tmp);
	setenv("HOME", dir, 1);

	struct clip_credentials c;
	struct clip_err err = { 0 };
	memset(&c, 0, sizeof(c));
	assert_int_equal(clip_auth_lookup("regauth.io", &c, &err), 1);
	assert_string_equal(c.username, "alice");
	clip_credentials_clear(&c);
	assert_int_equal(clip_auth_lookup("podman.io", &c, &err), 1);
	assert_string_equal(c.password, "b");
	clip_credentials_clear(&c);
	assert_int_equal(clip_auth_lookup("docker.example", &c, &err), 1);
	assert_string_equal(c.password, "bcd");
	clip_credentials_clear(&c);
	/* podman's file comes first */
	assert_int_equal(clip_auth_lookup("both.io", &c, &err), 1);
	assert_string_equal(c.password, "bc");
	clip_credentials_clear(&c);
	/* $DOCKER_CONFIG replaces ~/.docker */
	assert_int_equal(clip_auth_lookup("home.io", &c, &err), 0);
	unsetenv("DOCKER_CONFIG");
	assert_int_equal(clip_auth_lookup("home.io", &c, &err), 1);
	clip_credentials_clear(&c);
	assert_int_equal(clip_auth_lookup("nowhere.io", &c, &err), 0);

	/* Missing files are skipped; a malformed one is an error naming it. */
	setenv("REGISTRY_AUTH_FILE", "/nonexistent/auth.json", 1);
	assert_int_equal(clip_auth_lookup("podman.io", &c, &err), 1);
	clip_credentials_clear(&c);
	write_config("xdg/containers/auth.json", "{\"auths\":");
	assert_err(clip_auth_lookup("podman.io", &c, &err), &err, -EBADMSG,
		   "xdg/containers/auth.json: invalid JSON");

	unsetenv("REGISTRY_AUTH_FILE");
	unsetenv("XDG_RUNTIME_DIR");
	unsetenv("HOME");
}

/* ---- WWW-Authenticate ------------------------------------------------- */

static void test_challenge(void **state)
{
	struct clip_auth_challenge ch;
	struct clip_err err = { 0 };

	assert_int_equal(clip_auth_parse_challenge(
				 "Bearer realm=\"https://auth.docker.io/token\",service=\"registry."
				 "docker.io\",scope=\"repository:library/ubuntu:pull\"",
				 &ch, &err),
			 0);
	assert_string_equal(ch.scheme, "Bearer");
	assert_string_equal(ch.realm, "https://auth.docker.io/token");
	assert_string_equal(ch.service, "registry.docker.io");
	assert_string_equal(ch.scope, "repository:library/ubuntu:pull");
	assert_null(ch.error);
	clip_auth_challenge_clear(&ch);
	assert_null(ch.scheme);

	/* distribution's Basic challenge */
	assert_int_equal(clip_auth_parse_challenge("Basic realm=\"Registry Realm\"", &ch, &err), 0);
	assert_string_equal(ch.scheme, "Basic");
	assert_string_equal(ch.realm, "Registry Realm");
	assert_null(ch.service);
	clip_auth_challenge_clear(&ch);
	assert_int_equal(clip_auth_parse_challenge("Basic", &ch, &err), 0);
	assert_null(ch.realm);
	clip_auth_challenge_clear(&ch);

	/* escapes, commas and '=' inside quotes, several scopes, unknown
	 * parameters, token values, odd spacing and case */
	assert_int_equal(clip_auth_parse_challenge(
				 "  bearer   REALM = \"http://h/t?a=1,b=2\" , foo=bar,,"
				 "Service=\"a \\\"quoted\\\" \\\\ svc\",scope=\"repository:a:pull "
				 "repository:b:pull,push\",error=insufficient_scope ",
				 &ch, &err),
			 0);
	assert_string_equal(ch.scheme, "bearer");
	assert_string_equal(ch.realm, "http://h/t?a=1,b=2");
	assert_string_equal(ch.service, "a \"quoted\" \\ svc");
	assert_string_equal(ch.scope, "repository:a:pull repository:b:pull,push");
	assert_string_equal(ch.error, "insufficient_scope");
	clip_auth_challenge_clear(&ch);

	/* Several challenges in one header: the first is taken. */
	assert_int_equal(
		clip_auth_parse_challenge(
			"Bearer realm=\"https://a/t\", service=s, Basic realm=\"b\"", &ch, &err),
		0);
	assert_string_equal(ch.realm, "https://a/t");
	assert_string_equal(ch.service, "s");
	clip_auth_challenge_clear(&ch);
}

static void test_challenge_errors(void **state)
{
	static const struct {
		const char *header;
		int code;
		const char *needle;
	} cases[] = {
		{ "", -EBADMSG, "no authentication scheme" },
		{ "   ", -EBADMSG, "no authentication scheme" },
		{ "=x", -EBADMSG, "no authentication scheme" },
		{ "Bearer", -EBADMSG, "without realm" },
		{ "Bearer service=\"x\"", -EBADMSG, "without realm" },
		{ "Bearer realm=\"\"", -EBADMSG, "without realm" },
		{ "Bearer realm=\"https://a", -EBADMSG, "unterminated" },
		{ "Bearer realm=\"https://a\\", -EBADMSG, "unterminated" },
		{ "Bearer realm=", -EBADMSG, "has no value" },
		{ "Bearer realm=,service=x", -EBADMSG, "has no value" },
		{ "Bearer realm=\"a\" x", -EBADMSG, "unexpected character" },
		{ "Bearer realm=\"a\"x=1", -EBADMSG, "unexpected character" },
		{ "Bearer realm=\"a\",realm=\"b\"", -EBADMSG, "\"realm\" repeated" },
		{ "Bearer realm=\"a\tb\x01\"", -EBADMSG, "control character" },
		{ "Bearer \"realm\"=x", -EBADMSG, "parameter name" },
		{ "Be@rer realm=x", -EBADMSG, "invalid character after the scheme" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct clip_auth_challenge ch;
		memset(&ch, 0x5a, sizeof(ch));
		struct clip_auth_challenge untouched = ch;
		struct clip_err err = { 0 };
		int r = clip_auth_parse_challenge(cases[i].header, &ch, &err);
		assert_err(r, &err, cases[i].code, cases[i].needle);
		assert_memory_equal(&ch, &untouched, sizeof(ch));
	}

	/* 8 KiB is the limit. */
	char *big = malloc(9000);
	snprintf(big, 9000, "Bearer realm=\"");
	size_t n = strlen(big);
	memset(big + n, 'a', 8192 - n - 1);
	strcpy(big + 8191, "\"");
	assert_int_equal(strlen(big), 8192);
	struct clip_auth_challenge ch;
	struct clip_err err = { 0 };
	assert_int_equal(clip_auth_parse_challenge(big, &ch, &err), 0);
	clip_auth_challenge_clear(&ch);
	memset(big + 8191, 'a', 1);
	strcpy(big + 8192, "\"");
	assert_err(clip_auth_parse_challenge(big, &ch, &err), &err, -EFBIG, "8193 bytes");
	free(big);
	assert_int_equal(clip_auth_parse_challenge(NULL, &ch, &err), -EBADMSG);
}

/* ---- token responses -------------------------------------------------- */

static int parse_token(const char *json, char **token, long *exp, struct clip_err *err)
{
	*token = NULL;
	*exp = -1;
	return clip_auth_parse_token_response(json, strlen(json), token, exp, err);
}

static void test_token_response(void **state)
{
	char *t;
	long exp;
	struct clip_err err = { 0 };

	assert_int_equal(parse_token("{\"token\":\"abc\",\"expires_in\":300,\"issued_at\":"
				     "\"2024-01-01T00:00:00Z\"}",
				     &t, &exp, &err),
			 0);
	assert_string_equal(t, "abc");
	assert_int_equal(exp, 300);
	free(t);
	/* access_token (OAuth2) when token is absent or empty; default 60 s */
	assert_int_equal(parse_token("{\"access_token\":\"xyz\"}", &t, &exp, &err), 0);
	assert_string_equal(t, "xyz");
	assert_int_equal(exp, 60);
	free(t);
	assert_int_equal(parse_token("{\"token\":\"\",\"access_token\":\"xyz\",\"expires_in\":"
				     "null}",
				     &t, &exp, &err),
			 0);
	assert_string_equal(t, "xyz");
	assert_int_equal(exp, 60);
	free(t);
	/* token wins over access_token; under 60 s counts as 60 */
	assert_int_equal(parse_token("{\"token\":\"a\",\"access_token\":\"b\",\"expires_in\":5}",
				     &t, &exp, &err),
			 0);
	assert_string_equal(t, "a");
	assert_int_equal(exp, 60);
	free(t);

	assert_err(parse_token("{\"expires_in\":60}", &t, &exp, &err), &err, -EBADMSG,
		   "neither \"token\" nor \"access_token\"");
	assert_null(t);
	assert_err(parse_token("{\"token\":7}", &t, &exp, &err), &err, -EBADMSG, "neither");
	assert_err(parse_token("{\"token\":\"a\",\"expires_in\":\"60\"}", &t, &exp, &err), &err,
		   -EBADMSG, "\"expires_in\"");
	assert_null(t);
	assert_err(parse_token("{\"token\":\"SECRETTOKEN\" \"x\"}", &t, &exp, &err), &err, -EBADMSG,
		   "invalid JSON");
	assert_no_secret(&err, "SECRETTOKEN");
	assert_err(parse_token("[\"SECRETTOKEN\"]", &t, &exp, &err), &err, -EBADMSG,
		   "expected a JSON object");
	assert_err(parse_token("\"SECRETTOKEN\"", &t, &exp, &err), &err, -EBADMSG, "invalid JSON");
	assert_no_secret(&err, "SECRETTOKEN");

	size_t n = CLIP_AUTH_MAX_HELPER + 1;
	char *big = malloc(n);
	memset(big, ' ', n);
	assert_int_equal(clip_auth_parse_token_response(big, n, &t, &exp, &err), -EFBIG);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_auths_basic),    cmocka_unit_test(test_base64_padding),
		cmocka_unit_test(test_bad_base64),     cmocka_unit_test(test_identity_token),
		cmocka_unit_test(test_key_matching),   cmocka_unit_test(test_malformed_config),
		cmocka_unit_test(test_helper_answers), cmocka_unit_test(test_helper_failures),
		cmocka_unit_test(test_helper_timeout), cmocka_unit_test(test_lookup_order),
		cmocka_unit_test(test_challenge),      cmocka_unit_test(test_challenge_errors),
		cmocka_unit_test(test_token_response),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
