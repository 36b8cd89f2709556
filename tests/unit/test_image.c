/* Unit tests for src/lib/image.c: digests, platforms, index selection,
 * manifest and config parsing, with hand-written JSON. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "clip/image.h"

/* Digests are written out so that the test does not depend on the code
 * under test to make them. */
#define DA "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define DB "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define DC "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
#define DD "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
#define DE "sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
#define D0 "sha256:0000000000000000000000000000000000000000000000000000000000000000"
#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define SHA512_DIGEST                                                                              \
	"sha512:"                                                                                  \
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"    \
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

#define MT_LAYER_GZ "application/vnd.oci.image.layer.v1.tar+gzip"

static size_t slen(const char *s)
{
	return strlen(s);
}

static void assert_err(int r, const struct clip_err *err, int code, const char *needle)
{
	if (r != code || strstr(err->msg, needle) == NULL)
		print_error("got %d \"%s\", expected %d with \"%s\"\n", r, err->msg, code, needle);
	assert_int_equal(r, code);
	assert_int_equal(err->code, code);
	assert_non_null(strstr(err->msg, needle));
}

static void sha256_hex(const void *data, size_t len, char out[72])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	assert_int_equal(EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL), 1);
	assert_int_equal(mdlen, 32);
	strcpy(out, "sha256:");
	for (unsigned i = 0; i < mdlen; i++)
		sprintf(out + 7 + 2 * i, "%02x", md[i]);
}

/* ---- digests ---------------------------------------------------------- */

static void test_digest_valid(void **state)
{
	(void)state;
	assert_true(clip_digest_valid(DA));
	assert_true(clip_digest_valid(D0));
	assert_true(clip_digest_valid(
		"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));
	assert_false(clip_digest_valid(NULL));
	assert_false(clip_digest_valid(""));
	assert_false(clip_digest_valid("sha256:"));
	assert_false(clip_digest_valid(
		"sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"));
	assert_false(clip_digest_valid(
		"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde"));
	assert_false(clip_digest_valid(
		"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0"));
	assert_false(clip_digest_valid(
		"sha256:g123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));
	assert_false(clip_digest_valid(
		"SHA256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));
	assert_false(clip_digest_valid(
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"));
	assert_false(clip_digest_valid(SHA512_DIGEST));
}

static void test_digest_of(void **state)
{
	(void)state;
	char out[72];
	/* FIPS 180-2 test vectors. */
	clip_digest_of("abc", 3, out);
	assert_string_equal(
		out, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	clip_digest_of("", 0, out);
	assert_string_equal(
		out, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	clip_digest_of(NULL, 0, out);
	assert_string_equal(
		out, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_digest_verify(void **state)
{
	(void)state;
	struct clip_err err = { 0 };
	const char *abc = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
	assert_int_equal(clip_digest_verify("abc", 3, abc, &err), 0);
	assert_err(clip_digest_verify("abd", 3, abc, &err), &err, -EBADMSG, "digest mismatch");
	assert_err(clip_digest_verify("abc", 3, "sha256:abc", &err), &err, -EINVAL,
		   "invalid digest");
	assert_err(clip_digest_verify("abc", 3, NULL, &err), &err, -EINVAL, "invalid digest");
	assert_err(clip_digest_verify("abc", 3, SHA512_DIGEST, &err), &err, -ENOTSUP,
		   "unsupported digest algorithm");
	/* NULL err only returns the code. */
	assert_int_equal(clip_digest_verify("abd", 3, abc, NULL), -EBADMSG);
}

static void test_media_type_is_index(void **state)
{
	(void)state;
	assert_true(clip_media_type_is_index(CLIP_MT_OCI_INDEX));
	assert_true(clip_media_type_is_index(CLIP_MT_DOCKER_LIST));
	assert_false(clip_media_type_is_index(CLIP_MT_OCI_MANIFEST));
	assert_false(clip_media_type_is_index(CLIP_MT_DOCKER_MANIFEST));
	assert_false(clip_media_type_is_index(""));
	assert_false(clip_media_type_is_index(NULL));
}

/* ---- platforms -------------------------------------------------------- */

static void test_platform_parse(void **state)
{
	(void)state;
	struct clip_err err = { 0 };
	struct clip_platform p;

	assert_int_equal(clip_platform_parse("linux/amd64", &p, &err), 0);
	assert_string_equal(p.os, "linux");
	assert_string_equal(p.architecture, "amd64");
	assert_string_equal(p.variant, "");
	assert_int_equal(clip_platform_parse("linux/arm64/v8", &p, &err), 0);
	assert_string_equal(p.os, "linux");
	assert_string_equal(p.architecture, "arm64");
	assert_string_equal(p.variant, "v8");

	static const char *bad[] = {
		"",	     "linux",
		"linux/",    "/amd64",
		"linux//v7", "linux/arm/",
		"a/b/c/d",   "linux/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&p, 0x5a, sizeof(p));
		clip_err_clear(&err);
		assert_err(clip_platform_parse(bad[i], &p, &err), &err, -EINVAL, "platform");
		assert_non_null(strstr(err.msg, bad[i]));
	}
	assert_err(clip_platform_parse(NULL, &p, &err), &err, -EINVAL, "platform");
	/* 31 characters is the most a field holds. */
	assert_int_equal(clip_platform_parse("linux/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", &p, &err), 0);
	assert_int_equal(strlen(p.architecture), 31);
	assert_int_equal(clip_platform_parse("linux/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", &p, &err),
			 -EINVAL);
}

static void test_platform_host(void **state)
{
	(void)state;
	struct clip_platform p;
	struct utsname u;
	clip_platform_host(&p);
	assert_string_equal(p.os, "linux");
	assert_int_equal(uname(&u), 0);
	if (strcmp(u.machine, "x86_64") == 0) {
		assert_string_equal(p.architecture, "amd64");
		assert_string_equal(p.variant, "");
	} else if (strcmp(u.machine, "aarch64") == 0) {
		assert_string_equal(p.architecture, "arm64");
	} else if (strcmp(u.machine, "armv7l") == 0) {
		assert_string_equal(p.architecture, "arm");
		assert_string_equal(p.variant, "v7");
	} else if (strcmp(u.machine, "i686") == 0) {
		assert_string_equal(p.architecture, "386");
	} else {
		assert_true(p.architecture[0] != '\0');
	}
}

/* ---- index selection -------------------------------------------------- */

/* The JSON below is laid out by hand to be read; keep the formatter off it. */
/* clang-format off */
#define ENTRY(digest, plat)                                                                  \
	"{\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\",\"digest\":\"" digest                  \
	"\",\"size\":100,\"platform\":" plat "}"

static const char multi_index[] =
	"{\"schemaVersion\":2,\"mediaType\":\"" CLIP_MT_OCI_INDEX "\",\"manifests\":["
	ENTRY(DA, "{\"os\":\"linux\",\"architecture\":\"amd64\"}") ","
	ENTRY(DB, "{\"os\":\"linux\",\"architecture\":\"arm64\",\"variant\":\"v8\"}") ","
	ENTRY(DE, "{\"os\":\"unknown\",\"architecture\":\"unknown\"}") ","
	"{\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\",\"digest\":\"" D0 "\",\"size\":1}"
	"]}";

static int select_in(const char *json, const char *platform, char **digest, char **mt,
		     struct clip_err *err)
{
	struct clip_platform p;
	assert_int_equal(clip_platform_parse(platform, &p, err), 0);
	*digest = NULL;
	*mt = NULL;
	return clip_image_index_select(json, slen(json), &p, digest, mt, err);
}

/* Select and expect `want` (NULL: expect failure with code/needle). */
static void expect_select(const char *json, const char *platform, const char *want)
{
	struct clip_err err = { 0 };
	char *d, *mt;
	int r = select_in(json, platform, &d, &mt, &err);
	if (r != 0)
		print_error("select %s: %s\n", platform, err.msg);
	assert_int_equal(r, 0);
	assert_string_equal(d, want);
	assert_string_equal(mt, CLIP_MT_OCI_MANIFEST);
	free(d);
	free(mt);
}

static void expect_no_select(const char *json, const char *platform, int code,
			     const char *needle)
{
	struct clip_err err = { 0 };
	char *d, *mt;
	assert_err(select_in(json, platform, &d, &mt, &err), &err, code, needle);
	assert_null(d);
	assert_null(mt);
}

static void test_index_select_basic(void **state)
{
	(void)state;
	expect_select(multi_index, "linux/amd64", DA);
	expect_select(multi_index, "linux/arm64/v8", DB);
	/* arm64 with no variant is v8. */
	expect_select(multi_index, "linux/arm64", DB);
	expect_no_select(multi_index, "linux/arm64/v9", -ENOENT, "no manifest for linux/arm64/v9");
	expect_no_select(multi_index, "windows/amd64", -ENOENT, "no manifest for windows/amd64");
	/* Exactly the message users see; attestations and platform-less entries
	 * are not listed. */
	struct clip_err err = { 0 };
	char *d, *mt;
	assert_int_equal(select_in(multi_index, "linux/s390x", &d, &mt, &err), -ENOENT);
	assert_string_equal(err.msg, "no manifest for linux/s390x in image index; available: "
				     "linux/amd64, linux/arm64/v8");
	/* unknown/unknown never matches, even when asked for. */
	expect_no_select(multi_index, "unknown/unknown", -ENOENT, "available: linux/amd64");
}

static void test_index_select_variants(void **state)
{
	(void)state;
	static const char arm[] =
		"{\"schemaVersion\":2,\"manifests\":["
		ENTRY(DA, "{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":\"v6\"}") ","
		ENTRY(DB, "{\"os\":\"linux\",\"architecture\":\"arm\"}") ","
		ENTRY(DC, "{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":\"v7\"}") ","
		ENTRY(DD, "{\"os\":\"linux\",\"architecture\":\"arm64\"}")
		"]}";
	/* Exact variant wins over one that gives none, wherever it is listed. */
	expect_select(arm, "linux/arm/v7", DC);
	expect_select(arm, "linux/arm/v6", DA);
	/* No exact match: the entry without a variant is compatible. */
	expect_select(arm, "linux/arm/v5", DB);
	/* Asking without a variant: the entry without one matches exactly. */
	expect_select(arm, "linux/arm", DB);
	/* arm64 listed without variant matches a request for v8 but not v9. */
	expect_select(arm, "linux/arm64/v8", DD);
	expect_select(arm, "linux/arm64", DD);
	expect_no_select(arm, "linux/arm64/v9", -ENOENT, "available: linux/arm/v6, linux/arm, "
							  "linux/arm/v7, linux/arm64");

	static const char arm_v_only[] =
		"{\"schemaVersion\":2,\"manifests\":["
		ENTRY(DA, "{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":\"v6\"}") ","
		ENTRY(DC, "{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":\"v7\"}")
		"]}";
	/* Both give a variant and they differ: no match. */
	expect_no_select(arm_v_only, "linux/arm/v5", -ENOENT, "no manifest for linux/arm/v5");
	/* Request without variant: first compatible. */
	expect_select(arm_v_only, "linux/arm", DA);
}

static void test_index_select_docker_list(void **state)
{
	(void)state;
	static const char list[] =
		"{\"schemaVersion\":2,\"mediaType\":\"" CLIP_MT_DOCKER_LIST "\",\"manifests\":["
		"{\"mediaType\":\"" CLIP_MT_DOCKER_MANIFEST "\",\"digest\":\"" DC "\",\"size\":7,"
		"\"platform\":{\"os\":\"linux\",\"architecture\":\"ppc64le\"}}]}";
	struct clip_err err = { 0 };
	char *d, *mt;
	assert_int_equal(select_in(list, "linux/ppc64le", &d, &mt, &err), 0);
	assert_string_equal(d, DC);
	assert_string_equal(mt, CLIP_MT_DOCKER_MANIFEST);
	free(d);
	free(mt);
}

static void test_index_select_host(void **state)
{
	(void)state;
	struct clip_platform host;
	struct clip_err err = { 0 };
	char json[1024], *d = NULL, *mt = NULL;
	clip_platform_host(&host);
	snprintf(json, sizeof(json),
		 "{\"schemaVersion\":2,\"manifests\":["
		 ENTRY(DA, "{\"os\":\"plan9\",\"architecture\":\"%s\"}") ","
		 ENTRY(DB, "{\"os\":\"%s\",\"architecture\":\"%s\",\"variant\":\"%s\"}") "]}",
		 host.architecture, host.os, host.architecture, host.variant);
	assert_int_equal(clip_image_index_select(json, strlen(json), NULL, &d, &mt, &err), 0);
	assert_string_equal(d, DB);
	free(d);
	free(mt);
}

static void test_index_select_bad(void **state)
{
	(void)state;
	static const struct {
		const char *json;
		int code;
		const char *needle;
	} cases[] = {
		{ "", -EBADMSG, "image index: invalid JSON" },
		{ "{\"manifests\":[", -EBADMSG, "invalid JSON" },
		{ "[]", -EBADMSG, "expected a JSON object, got an array" },
		{ "{}", -EBADMSG, "\"manifests\" is missing" },
		{ "{\"manifests\":\"x\"}", -EBADMSG, "\"manifests\" must be an array, not a string" },
		{ "{\"manifests\":{}}", -EBADMSG, "\"manifests\" must be an array, not an object" },
		{ "{\"manifests\":[],\"manifests\":[]}", -EBADMSG, "duplicate" },
		{ "{\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\",\"manifests\":[]}", -EBADMSG,
		  "is not an image index" },
		{ "{\"mediaType\":7,\"manifests\":[]}", -EBADMSG, "\"mediaType\" must be a string" },
		{ "{\"manifests\":[]}", -ENOENT, "available: none" },
		{ "{\"manifests\":[\"x\"]}", -EBADMSG, "manifests[0]: expected an object" },
		{ "{\"manifests\":[{\"platform\":[]}]}", -EBADMSG,
		  "manifests[0]: \"platform\" must be an object, not an array" },
		{ "{\"manifests\":[{\"platform\":{\"os\":\"linux\"}}]}", -EBADMSG,
		  "manifests[0].platform: \"architecture\" is missing" },
		{ "{\"manifests\":[{\"platform\":{\"os\":1,\"architecture\":\"amd64\"}}]}",
		  -EBADMSG, "\"os\" must be a string, not an integer" },
		{ "{\"manifests\":[{\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\","
		  "\"variant\":true}}]}",
		  -EBADMSG, "\"variant\" must be a string, not a boolean" },
		{ "{\"manifests\":[{\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\",\"digest\":\"sha256:"
		  "abc\",\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}]}",
		  -EBADMSG, "manifests[0]: invalid digest \"sha256:abc\"" },
		{ "{\"manifests\":[{\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\",\"digest\":\"" SHA512_DIGEST
		  "\",\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}]}",
		  -ENOTSUP, "unsupported digest algorithm" },
		{ "{\"manifests\":[{\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\",\"digest\":[],"
		  "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}]}",
		  -EBADMSG, "\"digest\" must be a string, not an array" },
		{ "{\"manifests\":[{\"digest\":\"" DA "\","
		  "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}]}",
		  -EBADMSG, "manifests[0]: \"mediaType\" is missing" },
		{ "{\"manifests\":[{\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\","
		  "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}]}",
		  -EBADMSG, "\"digest\" is missing" },
		/* NUL in a string would let two readers see different names. */
		{ "{\"manifests\":[{\"mediaType\":\"a\\u0000b\",\"digest\":\"" DA "\","
		  "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}]}",
		  -EBADMSG, "invalid JSON" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct clip_err err = { 0 };
		char *d = NULL, *mt = NULL;
		struct clip_platform p;
		assert_int_equal(clip_platform_parse("linux/amd64", &p, &err), 0);
		int r = clip_image_index_select(cases[i].json, strlen(cases[i].json), &p, &d, &mt,
						&err);
		if (r != cases[i].code || strstr(err.msg, cases[i].needle) == NULL)
			print_error("case %zu: %s\n", i, cases[i].json);
		assert_err(r, &err, cases[i].code, cases[i].needle);
		assert_null(d);
		assert_null(mt);
	}
}

static void test_index_select_long_list(void **state)
{
	(void)state;
	/* 200 platforms: the message must stay within the error buffer and say
	 * it was cut. */
	size_t cap = 200 * 400 + 100;
	char *json = malloc(cap);
	assert_non_null(json);
	size_t len = (size_t)snprintf(json, cap, "{\"manifests\":[");
	for (int i = 0; i < 200; i++)
		len += (size_t)snprintf(json + len, cap - len,
					"%s" ENTRY(DA, "{\"os\":\"linux\",\"architecture\":\"arch%d\"}"),
					i ? "," : "", i);
	len += (size_t)snprintf(json + len, cap - len, "]}");
	assert_true(len < cap);
	struct clip_err err = { 0 };
	struct clip_platform p;
	char *d = NULL, *mt = NULL;
	assert_int_equal(clip_platform_parse("linux/s390x", &p, &err), 0);
	assert_err(clip_image_index_select(json, len, &p, &d, &mt, &err), &err, -ENOENT,
		   "available: linux/arch0, linux/arch1, ");
	assert_true(strlen(err.msg) < sizeof(err.msg));
	size_t ml = strlen(err.msg);
	assert_string_equal(err.msg + ml - 5, ", ...");
	/* The last platform does not fit. */
	assert_null(strstr(err.msg, "arch199"));
	free(json);
}

/* ---- size and nesting bounds ------------------------------------------ */

/* "[[[[...]]]]" `depth` deep, optionally inside {"manifests": ...}. */
static char *nested(size_t depth, const char *prefix, const char *suffix, size_t *len)
{
	size_t pl = strlen(prefix), sl = strlen(suffix);
	char *s = malloc(pl + 2 * depth + sl + 1);
	assert_non_null(s);
	memcpy(s, prefix, pl);
	memset(s + pl, '[', depth);
	memset(s + pl + depth, ']', depth);
	memcpy(s + pl + 2 * depth, suffix, sl + 1);
	*len = pl + 2 * depth + sl;
	return s;
}

static void test_json_bomb(void **state)
{
	(void)state;
	struct clip_err err = { 0 };
	struct clip_image img = { 0 };
	struct clip_platform p;
	char *d = NULL, *mt = NULL;
	size_t len;
	assert_int_equal(clip_platform_parse("linux/amd64", &p, &err), 0);

	char *bare = nested(100000, "", "", &len);
	assert_err(clip_image_index_select(bare, len, &p, &d, &mt, &err), &err, -EBADMSG,
		   "image index: invalid JSON");
	assert_err(clip_image_parse_manifest(bare, len, &img, &err), &err, -EBADMSG,
		   "manifest: invalid JSON");
	assert_err(clip_image_parse_config(bare, len, &img, &err), &err, -EBADMSG,
		   "config: invalid JSON");
	free(bare);

	char *inner = nested(100000, "{\"manifests\":", "}", &len);
	assert_err(clip_image_index_select(inner, len, &p, &d, &mt, &err), &err, -EBADMSG,
		   "invalid JSON");
	free(inner);
	inner = nested(100000, "{\"schemaVersion\":2,\"config\":{},\"layers\":", "}", &len);
	assert_err(clip_image_parse_manifest(inner, len, &img, &err), &err, -EBADMSG,
		   "invalid JSON");
	free(inner);
	inner = nested(100000, "{\"config\":{\"Env\":", "}}", &len);
	assert_err(clip_image_parse_config(inner, len, &img, &err), &err, -EBADMSG,
		   "invalid JSON");
	free(inner);

	/* Within the parser's depth limit it is a type error, not a crash. */
	inner = nested(1000, "{\"config\":{\"Env\":", "},\"os\":\"linux\"}", &len);
	assert_err(clip_image_parse_config(inner, len, &img, &err), &err, -EBADMSG,
		   "\"Env\"[0] must be a string, not an array");
	free(inner);
	assert_null(d);
	assert_null(img.layers);
}

static void test_oversized(void **state)
{
	(void)state;
	struct clip_err err = { 0 };
	struct clip_image img = { 0 };
	struct clip_platform p;
	char *d = NULL, *mt = NULL;
	size_t len = CLIP_IMAGE_MAX_JSON + 1;
	/* Valid JSON padded with whitespace: only its size is wrong. */
	char *big = malloc(len);
	assert_non_null(big);
	memset(big, ' ', len);
	memcpy(big, "{\"manifests\":[]}", 16);
	assert_int_equal(clip_platform_parse("linux/amd64", &p, &err), 0);
	assert_err(clip_image_index_select(big, len, &p, &d, &mt, &err), &err, -EFBIG,
		   "image index: 4194305 bytes");
	assert_err(clip_image_parse_manifest(big, len, &img, &err), &err, -EFBIG, "manifest: ");
	assert_err(clip_image_parse_config(big, len, &img, &err), &err, -EFBIG, "config: ");
	/* At the limit it is parsed. */
	assert_err(clip_image_index_select(big, len - 1, &p, &d, &mt, &err), &err, -ENOENT,
		   "available: none");
	free(big);
	assert_err(clip_image_parse_manifest(NULL, 10, &img, &err), &err, -EINVAL, "manifest");
}

/* ---- manifests -------------------------------------------------------- */

#define CONFIG_DESC(mt) "{\"mediaType\":\"" mt "\",\"digest\":\"" D0 "\",\"size\":1234}"
#define LAYER(mt, digest, size)                                                              \
	"{\"mediaType\":\"" mt "\",\"digest\":\"" digest "\",\"size\":" size "}"

static void test_manifest_oci(void **state)
{
	(void)state;
	static const char json[] =
		"{\"schemaVersion\":2,\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\","
		"\"config\":" CONFIG_DESC(CLIP_MT_OCI_CONFIG) ",\"layers\":["
		LAYER("application/vnd.oci.image.layer.v1.tar", DA, "10") ","
		LAYER("application/vnd.oci.image.layer.v1.tar+gzip", DB, "20") ","
		LAYER("application/vnd.oci.image.layer.v1.tar+zstd", DC, "30") ","
		LAYER("application/vnd.oci.image.layer.nondistributable.v1.tar", DD, "40") ","
		LAYER("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", DE, "50") ","
		LAYER("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", D1, "0") ","
		LAYER("application/vnd.oci.image.layer.v1.tar+gzip", D2, "9007199254740993")
		"],\"annotations\":{\"x\":\"y\"}}";
	static const struct {
		const char *digest;
		enum clip_compression c;
		uint64_t size;
	} want[] = {
		{ DA, CLIP_COMPRESSION_NONE, 10 }, { DB, CLIP_COMPRESSION_GZIP, 20 },
		{ DC, CLIP_COMPRESSION_ZSTD, 30 }, { DD, CLIP_COMPRESSION_NONE, 40 },
		{ DE, CLIP_COMPRESSION_GZIP, 50 }, { D1, CLIP_COMPRESSION_ZSTD, 0 },
		{ D2, CLIP_COMPRESSION_GZIP, 9007199254740993ull },
	};
	struct clip_err err = { 0 };
	struct clip_image img = { 0 };
	char expect_digest[72];

	int r = clip_image_parse_manifest(json, strlen(json), &img, &err);
	if (r < 0)
		print_error("%s\n", err.msg);
	assert_int_equal(r, 0);
	sha256_hex(json, strlen(json), expect_digest);
	assert_string_equal(img.manifest_digest, expect_digest);
	assert_string_equal(img.manifest_media_type, CLIP_MT_OCI_MANIFEST);
	assert_string_equal(img.config_digest, D0);
	assert_int_equal(img.config_size, 1234);
	assert_int_equal(img.nlayers, 7);
	for (size_t i = 0; i < img.nlayers; i++) {
		assert_string_equal(img.layers[i].digest, want[i].digest);
		assert_int_equal(img.layers[i].compression, want[i].c);
		assert_true(img.layers[i].size == want[i].size);
		assert_null(img.layers[i].diff_id);
	}
	assert_string_equal(img.layers[3].media_type,
			    "application/vnd.oci.image.layer.nondistributable.v1.tar");
	clip_image_clear(&img);
	assert_null(img.layers);
	assert_int_equal(img.nlayers, 0);
	clip_image_clear(&img);
}

static void test_manifest_docker(void **state)
{
	(void)state;
	static const char json[] =
		"{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"" CLIP_MT_DOCKER_MANIFEST "\",\n"
		"  \"config\": " CONFIG_DESC(CLIP_MT_DOCKER_CONFIG) ",\n  \"layers\": [\n"
		LAYER("application/vnd.docker.image.rootfs.diff.tar.gzip", DA, "1") ",\n"
		"{\"mediaType\":\"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip\","
		"\"digest\":\"" DB "\",\"size\":2,\"urls\":[\"https://example.com/x\"]},\n"
		LAYER("application/vnd.docker.image.rootfs.diff.tar", DC, "3") ",\n"
		LAYER("application/vnd.docker.image.rootfs.foreign.diff.tar", DD, "4") "\n]\n}\n";
	struct clip_err err = { 0 };
	struct clip_image img = { 0 };
	assert_int_equal(clip_image_parse_manifest(json, strlen(json), &img, &err), 0);
	assert_string_equal(img.manifest_media_type, CLIP_MT_DOCKER_MANIFEST);
	assert_int_equal(img.nlayers, 4);
	assert_int_equal(img.layers[0].compression, CLIP_COMPRESSION_GZIP);
	assert_int_equal(img.layers[1].compression, CLIP_COMPRESSION_GZIP);
	assert_int_equal(img.layers[2].compression, CLIP_COMPRESSION_NONE);
	assert_int_equal(img.layers[3].compression, CLIP_COMPRESSION_NONE);
	assert_string_equal(img.layers[1].media_type,
			    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip");
	clip_image_clear(&img);
}

static void test_manifest_no_media_type(void **state)
{
	(void)state;
	/* What umoci writes. */
	static const char json[] = "{\"schemaVersion\":2,\"config\":" CONFIG_DESC(
		CLIP_MT_OCI_CONFIG) ",\"layers\":[]}";
	struct clip_err err = { 0 };
	struct clip_image img = { 0 };
	assert_int_equal(clip_image_parse_manifest(json, strlen(json), &img, &err), 0);
	assert_string_equal(img.manifest_media_type, CLIP_MT_OCI_MANIFEST);
	assert_int_equal(img.nlayers, 0);
	assert_null(img.layers);
	clip_image_clear(&img);

	static const char not_manifest[] = "{\"schemaVersion\":2,\"manifests\":[]}";
	assert_err(clip_image_parse_manifest(not_manifest, strlen(not_manifest), &img, &err), &err,
		   -EBADMSG, "not an image manifest");
	static const char no_layers[] =
		"{\"schemaVersion\":2,\"config\":" CONFIG_DESC(CLIP_MT_OCI_CONFIG) "}";
	assert_err(clip_image_parse_manifest(no_layers, strlen(no_layers), &img, &err), &err,
		   -EBADMSG, "not an image manifest");
}

static void test_manifest_bad(void **state)
{
	(void)state;
#define OK_CONFIG "\"config\":" CONFIG_DESC(CLIP_MT_OCI_CONFIG)
#define HEAD "{\"schemaVersion\":2,\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\","
	static const struct {
		const char *json;
		int code;
		const char *needle;
	} cases[] = {
		{ "{\"schemaVersion\":1,\"name\":\"x\",\"tag\":\"latest\",\"fsLayers\":[]}",
		  -ENOTSUP, "manifest: Docker image manifest schema 1 is not supported" },
		{ "{\"schemaVersion\":1,\"mediaType\":\"application/vnd.docker.distribution."
		  "manifest.v1+prettyjws\"}",
		  -ENOTSUP, "schema 1" },
		{ "{\"schemaVersion\":3," OK_CONFIG ",\"layers\":[]}", -ENOTSUP,
		  "unsupported schemaVersion 3" },
		{ "{" OK_CONFIG ",\"layers\":[]}", -EBADMSG, "\"schemaVersion\" is missing" },
		{ "{\"schemaVersion\":\"2\"," OK_CONFIG ",\"layers\":[]}", -EBADMSG,
		  "\"schemaVersion\" must be an integer, not a string" },
		{ "{\"schemaVersion\":2,\"mediaType\":\"" CLIP_MT_OCI_INDEX "\",\"manifests\":[]}",
		  -EBADMSG, "is an image index, not a manifest" },
		{ "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.example+json\"," OK_CONFIG
		  ",\"layers\":[]}",
		  -ENOTSUP, "manifest: unsupported media type \"application/vnd.example+json\"" },
		{ "{\"schemaVersion\":2,\"mediaType\":[]," OK_CONFIG ",\"layers\":[]}", -EBADMSG,
		  "\"mediaType\" must be a string, not an array" },
		{ HEAD "\"layers\":[]}", -EBADMSG, "manifest: \"config\" is missing" },
		{ HEAD "\"config\":\"x\",\"layers\":[]}", -EBADMSG,
		  "\"config\" must be an object, not a string" },
		{ HEAD "\"config\":{\"mediaType\":\"" CLIP_MT_OCI_CONFIG "\",\"size\":1},"
		  "\"layers\":[]}",
		  -EBADMSG, "manifest: config: \"digest\" is missing" },
		{ HEAD "\"config\":{\"mediaType\":\"" CLIP_MT_OCI_CONFIG "\",\"digest\":\"sha256:"
		  "AAAA\",\"size\":1},\"layers\":[]}",
		  -EBADMSG, "config: invalid digest" },
		{ HEAD "\"config\":{\"mediaType\":\"" CLIP_MT_OCI_CONFIG "\",\"digest\":\"" DA
		  "\"},\"layers\":[]}",
		  -EBADMSG, "config: \"size\" is missing" },
		{ HEAD "\"config\":" CONFIG_DESC("application/vnd.cncf.helm.config.v1+json")
		  ",\"layers\":[]}",
		  -ENOTSUP, "config: unsupported media type" },
		{ HEAD OK_CONFIG "}", -EBADMSG, "manifest: \"layers\" is missing" },
		{ HEAD OK_CONFIG ",\"layers\":\"" DA "\"}", -EBADMSG,
		  "\"layers\" must be an array, not a string" },
		{ HEAD OK_CONFIG ",\"layers\":null}", -EBADMSG,
		  "\"layers\" must be an array, not null" },
		{ HEAD OK_CONFIG ",\"layers\":[" LAYER(MT_LAYER_GZ, DA, "1") ",\"x\"]}", -EBADMSG,
		  "layer 1: expected an object, got a string" },
		{ HEAD OK_CONFIG ",\"layers\":[" LAYER(MT_LAYER_GZ, DA, "1") ","
		  LAYER("application/x-foo", DB, "1") "]}",
		  -ENOTSUP, "layer 1: unsupported media type application/x-foo" },
		{ HEAD OK_CONFIG ",\"layers\":[" LAYER("application/vnd.docker.image.rootfs.diff.tar.bz2",
						       DB, "1") "]}",
		  -ENOTSUP, "layer 0: unsupported media type" },
		{ HEAD OK_CONFIG ",\"layers\":[" LAYER(MT_LAYER_GZ, DA, "-1") "]}", -EBADMSG,
		  "layer 0: \"size\" is negative" },
		{ HEAD OK_CONFIG ",\"layers\":[" LAYER(MT_LAYER_GZ, DA, "1.5") "]}", -EBADMSG,
		  "layer 0: \"size\" must be an integer, not a real number" },
		{ HEAD OK_CONFIG ",\"layers\":[" LAYER(MT_LAYER_GZ, DA, "\"1\"") "]}", -EBADMSG,
		  "\"size\" must be an integer, not a string" },
		{ HEAD OK_CONFIG ",\"layers\":[" LAYER(MT_LAYER_GZ, DA,
						       "99999999999999999999999") "]}",
		  -EBADMSG, "invalid JSON" },
		{ HEAD OK_CONFIG ",\"layers\":[" LAYER(MT_LAYER_GZ, "sha256:" , "1") "]}", -EBADMSG,
		  "layer 0: invalid digest \"sha256:\"" },
		{ HEAD OK_CONFIG ",\"layers\":[" LAYER(MT_LAYER_GZ, SHA512_DIGEST, "1") "]}",
		  -ENOTSUP, "layer 0: unsupported digest algorithm" },
		{ HEAD OK_CONFIG ",\"layers\":[{\"digest\":\"" DA "\",\"size\":1}]}", -EBADMSG,
		  "layer 0: \"mediaType\" is missing" },
		{ HEAD OK_CONFIG ",\"layers\":[{\"mediaType\":7,\"digest\":\"" DA "\",\"size\":1}]}",
		  -EBADMSG, "layer 0: \"mediaType\" must be a string, not an integer" },
		{ HEAD OK_CONFIG ",\"layers\":[],\"layers\":[]}", -EBADMSG, "duplicate" },
		{ "\"manifest\"", -EBADMSG, "invalid JSON" },
		{ "null", -EBADMSG, "invalid JSON" },
	};
#undef HEAD
#undef OK_CONFIG
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct clip_err err = { 0 };
		struct clip_image img = { 0 };
		int r = clip_image_parse_manifest(cases[i].json, strlen(cases[i].json), &img, &err);
		if (r != cases[i].code || strstr(err.msg, cases[i].needle) == NULL)
			print_error("case %zu: %s\n", i, cases[i].json);
		assert_err(r, &err, cases[i].code, cases[i].needle);
		assert_null(img.layers);
		assert_null(img.manifest_digest);
		assert_null(img.config_digest);
	}
}

static const char two_layer_manifest[] =
	"{\"schemaVersion\":2,\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\",\"config\":" CONFIG_DESC(
		CLIP_MT_OCI_CONFIG) ",\"layers\":[" LAYER(MT_LAYER_GZ, DA, "1") "," LAYER(MT_LAYER_GZ,
											   DB,
											   "2") "]}";

static void test_manifest_failure_keeps_image(void **state)
{
	(void)state;
	struct clip_err err = { 0 };
	struct clip_image img = { 0 };
	assert_int_equal(clip_image_parse_manifest(two_layer_manifest, strlen(two_layer_manifest),
						   &img, &err),
			 0);
	char *md = img.manifest_digest;
	static const char bad[] = "{\"schemaVersion\":2,\"config\":{},\"layers\":[]}";
	assert_int_equal(clip_image_parse_manifest(bad, strlen(bad), &img, &err), -EBADMSG);
	assert_ptr_equal(img.manifest_digest, md);
	assert_int_equal(img.nlayers, 2);
	assert_string_equal(img.layers[1].digest, DB);
	/* A second good parse replaces (and frees) the first. */
	static const char one[] = "{\"schemaVersion\":2,\"config\":" CONFIG_DESC(
		CLIP_MT_OCI_CONFIG) ",\"layers\":[" LAYER(MT_LAYER_GZ, DC, "3") "]}";
	assert_int_equal(clip_image_parse_manifest(one, strlen(one), &img, &err), 0);
	assert_int_equal(img.nlayers, 1);
	assert_string_equal(img.layers[0].digest, DC);
	clip_image_clear(&img);
}

/* ---- configs ---------------------------------------------------------- */

static void load_two_layers(struct clip_image *img)
{
	struct clip_err err = { 0 };
	memset(img, 0, sizeof(*img));
	assert_int_equal(clip_image_parse_manifest(two_layer_manifest, strlen(two_layer_manifest),
						   img, &err),
			 0);
}

/* A manifest of n identical gzip layers. */
static char *manifest_with_layers(size_t n)
{
	const char *layer = "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\","
			    "\"digest\":\"sha256:"
			    "1111111111111111111111111111111111111111111111111111111111111111\","
			    "\"size\":1}";
	size_t cap = 512 + n * (strlen(layer) + 1);
	char *m = malloc(cap);
	assert_non_null(m);
	size_t len = (size_t)snprintf(
		m, cap,
		"{\"schemaVersion\":2,\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\",\"config\":{"
		"\"mediaType\":\"" CLIP_MT_OCI_CONFIG "\",\"digest\":\"sha256:"
		"2222222222222222222222222222222222222222222222222222222222222222\",\"size\":2},"
		"\"layers\":[");
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(m + len, cap - len, "%s%s", i ? "," : "", layer);
	snprintf(m + len, cap - len, "]}");
	return m;
}

static void test_manifest_layer_limit(void **state)
{
	(void)state;
	struct clip_image img = { 0 };
	struct clip_err err = { 0 };
	char *ok = manifest_with_layers(CLIP_IMAGE_MAX_LAYERS);
	assert_int_equal(clip_image_parse_manifest(ok, strlen(ok), &img, &err), 0);
	assert_int_equal(img.nlayers, CLIP_IMAGE_MAX_LAYERS);
	clip_image_clear(&img);
	free(ok);
	char *big = manifest_with_layers(CLIP_IMAGE_MAX_LAYERS + 1);
	assert_err(clip_image_parse_manifest(big, strlen(big), &img, &err), &err, -E2BIG,
		   "1025 layers, more than the limit of 1024");
	assert_int_equal(img.nlayers, 0);
	free(big);
}

static void test_config_full(void **state)
{
	(void)state;
	static const char json[] =
		"{\"created\":\"2024-01-01T00:00:00Z\",\"architecture\":\"arm64\",\"variant\":\"v8\","
		"\"os\":\"linux\",\"config\":{\"User\":\"1000:1000\",\"Env\":[\"PATH=/usr/bin\","
		"\"A=b c\"],\"Entrypoint\":[\"/bin/sh\",\"-c\"],\"Cmd\":[\"echo hi\"],"
		"\"WorkingDir\":\"/srv\",\"Labels\":{\"a\":\"b\"},\"ExposedPorts\":{\"80/tcp\":{}}},"
		"\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" DC "\",\"" DD "\"]},"
		"\"history\":[{\"created_by\":\"x\"}]}";
	struct clip_err err = { 0 };
	struct clip_image img;
	load_two_layers(&img);
	int r = clip_image_parse_config(json, strlen(json), &img, &err);
	if (r < 0)
		print_error("%s\n", err.msg);
	assert_int_equal(r, 0);
	struct clip_image_config *c = &img.config;
	assert_string_equal(c->os, "linux");
	assert_string_equal(c->architecture, "arm64");
	assert_string_equal(c->variant, "v8");
	assert_string_equal(c->user, "1000:1000");
	assert_string_equal(c->working_dir, "/srv");
	assert_string_equal(c->env[0], "PATH=/usr/bin");
	assert_string_equal(c->env[1], "A=b c");
	assert_null(c->env[2]);
	assert_string_equal(c->entrypoint[0], "/bin/sh");
	assert_string_equal(c->entrypoint[1], "-c");
	assert_null(c->entrypoint[2]);
	assert_string_equal(c->cmd[0], "echo hi");
	assert_null(c->cmd[1]);
	assert_string_equal(img.layers[0].diff_id, DC);
	assert_string_equal(img.layers[1].diff_id, DD);
	/* Parsing again replaces the old values. */
	static const char again[] =
		"{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Cmd\":[]},"
		"\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D1 "\",\"" D2 "\"]}}";
	assert_int_equal(clip_image_parse_config(again, strlen(again), &img, &err), 0);
	assert_string_equal(img.config.architecture, "amd64");
	assert_null(img.config.variant);
	assert_null(img.config.env);
	assert_non_null(img.config.cmd);
	assert_null(img.config.cmd[0]);
	assert_string_equal(img.layers[0].diff_id, D1);
	clip_image_clear(&img);
}

static void test_config_minimal(void **state)
{
	(void)state;
	static const char *ok[] = {
		"{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
		"\"diff_ids\":[]}}",
		"{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":null,\"rootfs\":{\"type\":"
		"\"layers\",\"diff_ids\":[]}}",
		"{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":null,\"Cmd\":null,"
		"\"Entrypoint\":null,\"User\":null,\"WorkingDir\":null},\"rootfs\":{\"type\":"
		"\"layers\",\"diff_ids\":[]}}",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct clip_err err = { 0 };
		struct clip_image img = { 0 };
		int r = clip_image_parse_config(ok[i], strlen(ok[i]), &img, &err);
		if (r < 0)
			print_error("case %zu: %s\n", i, err.msg);
		assert_int_equal(r, 0);
		assert_null(img.config.entrypoint);
		assert_null(img.config.cmd);
		assert_null(img.config.env);
		assert_null(img.config.user);
		assert_null(img.config.working_dir);
		assert_null(img.config.variant);
		assert_string_equal(img.config.os, "linux");
		clip_image_clear(&img);
	}
}

static void test_config_bad(void **state)
{
	(void)state;
#define ROOTFS2 "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" DC "\",\"" DD "\"]}"
#define PLAT "\"os\":\"linux\",\"architecture\":\"amd64\","
	static const struct {
		const char *json;
		int code;
		const char *needle;
	} cases[] = {
		{ "{" PLAT "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" DC "\"]}}", -EBADMSG,
		  "config: 1 diff_ids for 2 layers" },
		{ "{" PLAT "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" DC "\",\"" DD "\",\"" DE
		  "\"]}}",
		  -EBADMSG, "config: 3 diff_ids for 2 layers" },
		{ "{" PLAT "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}", -EBADMSG,
		  "config: 0 diff_ids for 2 layers" },
		{ "{" PLAT "\"foo\":1}", -EBADMSG, "config: \"rootfs\" is missing" },
		{ "{" PLAT "\"rootfs\":[]}", -EBADMSG, "\"rootfs\" must be an object, not an array" },
		{ "{" PLAT "\"rootfs\":{\"diff_ids\":[]}}", -EBADMSG,
		  "config: rootfs: \"type\" is missing" },
		{ "{" PLAT "\"rootfs\":{\"type\":\"layer\",\"diff_ids\":[]}}", -EBADMSG,
		  "type is \"layer\", not \"layers\"" },
		{ "{" PLAT "\"rootfs\":{\"type\":\"layers\"}}", -EBADMSG,
		  "config: rootfs: \"diff_ids\" is missing" },
		{ "{" PLAT "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":\"" DC "\"}}", -EBADMSG,
		  "\"diff_ids\" must be an array, not a string" },
		{ "{" PLAT "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" DC "\",5]}}", -EBADMSG,
		  "diff_ids[1]: must be a string, not an integer" },
		{ "{" PLAT "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" DC "\",\"sha256:xyz\"]}}",
		  -EBADMSG, "diff_ids[1]: invalid digest \"sha256:xyz\"" },
		{ "{" PLAT "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" SHA512_DIGEST "\",\"" DC
		  "\"]}}",
		  -ENOTSUP, "diff_ids[0]: unsupported digest algorithm" },
		{ "{\"architecture\":\"amd64\"," ROOTFS2 "}", -EBADMSG, "config: \"os\" is missing" },
		{ "{\"os\":\"linux\"," ROOTFS2 "}", -EBADMSG, "config: \"architecture\" is missing" },
		{ "{\"os\":null,\"architecture\":\"amd64\"," ROOTFS2 "}", -EBADMSG,
		  "\"os\" must be a string, not null" },
		{ "{" PLAT "\"variant\":8," ROOTFS2 "}", -EBADMSG,
		  "\"variant\" must be a string, not an integer" },
		{ "{" PLAT "\"config\":[]," ROOTFS2 "}", -EBADMSG,
		  "config: \"config\" must be an object, not an array" },
		{ "{" PLAT "\"config\":{\"Entrypoint\":\"/bin/sh\"}," ROOTFS2 "}", -EBADMSG,
		  "config: config: \"Entrypoint\" must be an array of strings, not a string" },
		{ "{" PLAT "\"config\":{\"Cmd\":{}}," ROOTFS2 "}", -EBADMSG,
		  "\"Cmd\" must be an array of strings, not an object" },
		{ "{" PLAT "\"config\":{\"Env\":[\"A=1\",1]}," ROOTFS2 "}", -EBADMSG,
		  "\"Env\"[1] must be a string, not an integer" },
		{ "{" PLAT "\"config\":{\"User\":0}," ROOTFS2 "}", -EBADMSG,
		  "\"User\" must be a string, not an integer" },
		{ "{" PLAT "\"config\":{\"WorkingDir\":[\"/\"]}," ROOTFS2 "}", -EBADMSG,
		  "\"WorkingDir\" must be a string, not an array" },
		{ "[]", -EBADMSG, "config: expected a JSON object, got an array" },
		{ "{" PLAT "\"os\":\"linux\"," ROOTFS2 "}", -EBADMSG, "duplicate" },
	};
#undef PLAT
#undef ROOTFS2
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct clip_err err = { 0 };
		struct clip_image img;
		load_two_layers(&img);
		int r = clip_image_parse_config(cases[i].json, strlen(cases[i].json), &img, &err);
		if (r != cases[i].code || strstr(err.msg, cases[i].needle) == NULL)
			print_error("case %zu: %s\n", i, cases[i].json);
		assert_err(r, &err, cases[i].code, cases[i].needle);
		/* Nothing is half-filled on failure. */
		assert_null(img.config.os);
		assert_null(img.config.env);
		assert_null(img.layers[0].diff_id);
		assert_null(img.layers[1].diff_id);
		clip_image_clear(&img);
	}
}
/* clang-format on */

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_digest_valid),
		cmocka_unit_test(test_digest_of),
		cmocka_unit_test(test_digest_verify),
		cmocka_unit_test(test_media_type_is_index),
		cmocka_unit_test(test_platform_parse),
		cmocka_unit_test(test_platform_host),
		cmocka_unit_test(test_index_select_basic),
		cmocka_unit_test(test_index_select_variants),
		cmocka_unit_test(test_index_select_docker_list),
		cmocka_unit_test(test_index_select_host),
		cmocka_unit_test(test_index_select_bad),
		cmocka_unit_test(test_index_select_long_list),
		cmocka_unit_test(test_json_bomb),
		cmocka_unit_test(test_oversized),
		cmocka_unit_test(test_manifest_oci),
		cmocka_unit_test(test_manifest_docker),
		cmocka_unit_test(test_manifest_no_media_type),
		cmocka_unit_test(test_manifest_bad),
		cmocka_unit_test(test_manifest_failure_keeps_image),
		cmocka_unit_test(test_manifest_layer_limit),
		cmocka_unit_test(test_config_full),
		cmocka_unit_test(test_config_minimal),
		cmocka_unit_test(test_config_bad),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
