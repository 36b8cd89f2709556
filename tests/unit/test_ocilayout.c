/* Unit tests for src/lib/ocilayout.c: references, and real OCI layouts built
 * in a temporary directory (blobs named by their sha256, computed here with
 * OpenSSL rather than by the code under test). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "clip/ocilayout.h"

#define MT_LAYER_GZ "application/vnd.oci.image.layer.v1.tar+gzip"
#define DX	    "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

struct fixture {
	char dir[4096];
};

static void assert_err(int r, const struct clip_err *err, int code, const char *needle)
{
	if (r != code || strstr(err->msg, needle) == NULL)
		print_error("got %d \"%s\", expected %d with \"%s\"\n", r, err->msg, code, needle);
	assert_int_equal(r, code);
	assert_non_null(strstr(err->msg, needle));
}

static void sha256_hex(const void *data, size_t len, char out[72])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	assert_int_equal(EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL), 1);
	strcpy(out, "sha256:");
	for (unsigned i = 0; i < mdlen; i++)
		sprintf(out + 7 + 2 * i, "%02x", md[i]);
}

static void write_file(const char *dir, const char *name, const void *data, size_t len)
{
	char path[8192];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static void write_str(const char *dir, const char *name, const char *s)
{
	write_file(dir, name, s, strlen(s));
}

/* Store `data` as a blob; its digest goes to `digest`. */
static void put_blob(const struct fixture *f, const char *data, char digest[72])
{
	char name[128];
	sha256_hex(data, strlen(data), digest);
	snprintf(name, sizeof(name), "blobs/sha256/%s", digest + 7);
	write_str(f->dir, name, data);
}

static void blob_path(const struct fixture *f, const char *digest, char *out, size_t cap)
{
	snprintf(out, cap, "%s/blobs/sha256/%s", f->dir, digest + 7);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	const char *base = getenv("CLIP_TEST_TMPDIR");
	snprintf(f->dir, sizeof(f->dir), "%s/test_ocilayout.XXXXXX", base ? base : "/tmp");
	assert_non_null(mkdtemp(f->dir));
	char path[8192];
	snprintf(path, sizeof(path), "%s/blobs", f->dir);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/blobs/sha256", f->dir);
	assert_int_equal(mkdir(path, 0755), 0);
	write_str(f->dir, "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* An image whose config names it by `cmd`, with `nlayers` (fake) layers. Fills
 * the manifest's and config's digests; returns the manifest's size. */
static size_t make_image(const struct fixture *f, const char *cmd, const char *arch, int nlayers,
			 char manifest_digest[72], char config_digest[72])
{
	char config[2048], manifest[4096], diff_ids[1024] = "", layers[2048] = "";
	for (int i = 0; i < nlayers; i++) {
		char layer[64], layer_digest[72];
		snprintf(layer, sizeof(layer), "layer %s %d", cmd, i);
		put_blob(f, layer, layer_digest);
		snprintf(diff_ids + strlen(diff_ids), sizeof(diff_ids) - strlen(diff_ids),
			 "%s\"%s\"", i ? "," : "", layer_digest);
		snprintf(layers + strlen(layers), sizeof(layers) - strlen(layers),
			 "%s{\"mediaType\":\"" MT_LAYER_GZ "\",\"digest\":\"%s\",\"size\":%zu}",
			 i ? "," : "", layer_digest, strlen(layer));
	}
	snprintf(config, sizeof(config),
		 "{\"architecture\":\"%s\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"%s\"],"
		 "\"Env\":[\"PATH=/bin\"],\"WorkingDir\":\"/w\"},"
		 "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[%s]}}",
		 arch, cmd, diff_ids);
	put_blob(f, config, config_digest);
	snprintf(manifest, sizeof(manifest),
		 "{\"schemaVersion\":2,\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\","
		 "\"config\":{\"mediaType\":\"" CLIP_MT_OCI_CONFIG "\",\"digest\":\"%s\","
		 "\"size\":%zu},\"layers\":[%s]}",
		 config_digest, strlen(config), layers);
	put_blob(f, manifest, manifest_digest);
	return strlen(manifest);
}

/* An index.json (or index blob) entry. */
static void entry(char *buf, size_t cap, const char *mt, const char *digest, size_t size,
		  const char *tag, const char *platform)
{
	size_t n = strlen(buf);
	n += (size_t)snprintf(buf + n, cap - n,
			      "%s{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu",
			      n > 0 && buf[n - 1] != '[' ? "," : "", mt, digest, size);
	if (tag != NULL)
		n += (size_t)snprintf(buf + n, cap - n,
				      ",\"annotations\":{\"org.opencontainers.image.ref.name\":"
				      "\"%s\"}",
				      tag);
	if (platform != NULL)
		n += (size_t)snprintf(buf + n, cap - n, ",\"platform\":%s", platform);
	snprintf(buf + n, cap - n, "}");
}

static void write_index(const struct fixture *f, const char *entries)
{
	char buf[16384];
	snprintf(buf, sizeof(buf),
		 "{\"schemaVersion\":2,\"mediaType\":\"" CLIP_MT_OCI_INDEX "\","
		 "\"manifests\":[%s]}",
		 entries);
	write_str(f->dir, "index.json", buf);
}

static struct clip_oci_layout *open_ok(const struct fixture *f)
{
	struct clip_err err = { 0 };
	struct clip_oci_layout *l = NULL;
	int r = clip_oci_layout_open(f->dir, &l, &err);
	if (r < 0)
		print_error("open: %s\n", err.msg);
	assert_int_equal(r, 0);
	assert_non_null(l);
	return l;
}

static int resolve(const struct fixture *f, const char *tag, const char *platform,
		   struct clip_image *img, struct clip_err *err)
{
	struct clip_oci_layout *l = open_ok(f);
	struct clip_platform p;
	if (platform != NULL)
		assert_int_equal(clip_platform_parse(platform, &p, err), 0);
	memset(img, 0, sizeof(*img));
	clip_err_clear(err);
	int r = clip_oci_layout_resolve(l, tag, platform ? &p : NULL, img, err);
	clip_oci_layout_free(l);
	return r;
}

/* ---- references ------------------------------------------------------- */

static void test_parse_ref(void **state)
{
	(void)state;
	static const struct {
		const char *ref, *dir, *tag;
	} ok[] = {
		{ "oci:/a/b", "/a/b", NULL },
		{ "oci:/a/b:t1", "/a/b", "t1" },
		{ "oci:rel/dir:v1.2.3-rc_1", "rel/dir", "v1.2.3-rc_1" },
		/* As skopeo: the directory ends at the first colon; the tag may
		 * hold more (and slashes). */
		{ "oci:d:foo:bar", "d", "foo:bar" },
		{ "oci:d:example.com/app:v1", "d", "example.com/app:v1" },
		{ "oci:d:a--b", "d", "a--b" },
		{ "oci:d:", "d", NULL },
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct clip_err err = { 0 };
		char *dir = NULL, *tag = (char *)"unset";
		int r = clip_oci_layout_parse_ref(ok[i].ref, &dir, &tag, &err);
		if (r < 0)
			print_error("%s: %s\n", ok[i].ref, err.msg);
		assert_int_equal(r, 0);
		assert_string_equal(dir, ok[i].dir);
		if (ok[i].tag == NULL)
			assert_null(tag);
		else
			assert_string_equal(tag, ok[i].tag);
		free(dir);
		free(tag);
	}

	static const struct {
		const char *ref, *needle;
	} bad[] = {
		{ "docker://busybox", "does not start with \"oci:\"" },
		{ "oci", "does not start with \"oci:\"" },
		{ "OCI:/x", "does not start" },
		{ "", "does not start" },
		{ "oci:", "no directory" },
		{ "oci::tag", "no directory" },
		{ "oci:d:bad tag", "invalid tag \"bad tag\"" },
		{ "oci:d:@0", "invalid tag" },
		{ "oci:d:-x", "invalid tag" },
		{ "oci:d:x-", "invalid tag" },
		{ "oci:d:a---b", "invalid tag" },
		{ "oci:d:a//b", "invalid tag" },
		{ "oci:d:/a", "invalid tag" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct clip_err err = { 0 };
		char *dir = NULL, *tag = NULL;
		assert_err(clip_oci_layout_parse_ref(bad[i].ref, &dir, &tag, &err), &err, -EINVAL,
			   bad[i].needle);
		assert_non_null(strstr(err.msg, bad[i].ref));
		assert_null(dir);
		assert_null(tag);
	}
	struct clip_err err = { 0 };
	char *dir = NULL, *tag = NULL;
	assert_err(clip_oci_layout_parse_ref(NULL, &dir, &tag, &err), &err, -EINVAL, "oci:");
}

/* ---- open ------------------------------------------------------------- */

static void test_open(void **state)
{
	struct fixture *f = *state;
	struct clip_err err = { 0 };
	struct clip_oci_layout *l = NULL;
	char path[8192];

	write_index(f, "");
	l = open_ok(f);
	assert_string_equal(clip_oci_layout_dir(l), f->dir);
	clip_oci_layout_free(l);
	clip_oci_layout_free(NULL);
	l = NULL;

	snprintf(path, sizeof(path), "%s/nonexistent", f->dir);
	assert_err(clip_oci_layout_open(path, &l, &err), &err, -ENOENT, path);
	snprintf(path, sizeof(path), "%s/oci-layout", f->dir);
	assert_err(clip_oci_layout_open(path, &l, &err), &err, -ENOTDIR, path);
	assert_err(clip_oci_layout_open("", &l, &err), &err, -EINVAL, "no directory");

	write_str(f->dir, "oci-layout", "{\"imageLayoutVersion\":\"2.0.0\"}");
	assert_err(clip_oci_layout_open(f->dir, &l, &err), &err, -ENOTSUP,
		   "unsupported imageLayoutVersion \"2.0.0\"");
	write_str(f->dir, "oci-layout", "{\"imageLayoutVersion\":1}");
	assert_err(clip_oci_layout_open(f->dir, &l, &err), &err, -EBADMSG, "imageLayoutVersion");
	write_str(f->dir, "oci-layout", "{}");
	assert_err(clip_oci_layout_open(f->dir, &l, &err), &err, -EBADMSG, "imageLayoutVersion");
	write_str(f->dir, "oci-layout", "imageLayoutVersion");
	assert_err(clip_oci_layout_open(f->dir, &l, &err), &err, -EBADMSG,
		   "oci-layout: invalid JSON");
	write_str(f->dir, "oci-layout", "[\"1.0.0\"]");
	assert_err(clip_oci_layout_open(f->dir, &l, &err), &err, -EBADMSG,
		   "expected a JSON object");
	snprintf(path, sizeof(path), "%s/oci-layout", f->dir);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkfifo(path, 0644), 0);
	assert_err(clip_oci_layout_open(f->dir, &l, &err), &err, -EINVAL,
		   "oci-layout: not a regular file");
	assert_int_equal(unlink(path), 0);
	assert_err(clip_oci_layout_open(f->dir, &l, &err), &err, -ENOENT, "no oci-layout file");
	assert_non_null(strstr(err.msg, f->dir));

	write_str(f->dir, "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}");
	snprintf(path, sizeof(path), "%s/index.json", f->dir);
	assert_int_equal(unlink(path), 0);
	assert_err(clip_oci_layout_open(f->dir, &l, &err), &err, -ENOENT, "no index.json");
	assert_int_equal(mkdir(path, 0755), 0);
	assert_err(clip_oci_layout_open(f->dir, &l, &err), &err, -EINVAL, "not a regular file");
	assert_int_equal(rmdir(path), 0);
	assert_null(l);
}

/* ---- resolve ---------------------------------------------------------- */

static void test_resolve_tag(void **state)
{
	struct fixture *f = *state;
	struct clip_err err = { 0 };
	struct clip_image img;
	char m1[72], c1[72], m2[72], c2[72], entries[4096] = "";
	size_t s1 = make_image(f, "one", "amd64", 2, m1, c1);
	size_t s2 = make_image(f, "two", "amd64", 3, m2, c2);
	entry(entries, sizeof(entries), CLIP_MT_OCI_MANIFEST, m1, s1, "t1", NULL);
	entry(entries, sizeof(entries), CLIP_MT_OCI_MANIFEST, m2, s2, "t2", NULL);
	write_index(f, entries);

	int r = resolve(f, "t2", NULL, &img, &err);
	if (r < 0)
		print_error("%s\n", err.msg);
	assert_int_equal(r, 0);
	assert_string_equal(img.manifest_digest, m2);
	assert_string_equal(img.manifest_media_type, CLIP_MT_OCI_MANIFEST);
	assert_string_equal(img.config_digest, c2);
	assert_int_equal(img.nlayers, 3);
	assert_string_equal(img.config.cmd[0], "two");
	assert_string_equal(img.config.working_dir, "/w");
	/* Fake layers: their blob digest doubles as diff_id. */
	for (size_t i = 0; i < img.nlayers; i++)
		assert_string_equal(img.layers[i].diff_id, img.layers[i].digest);
	clip_image_clear(&img);

	assert_int_equal(resolve(f, "t1", NULL, &img, &err), 0);
	assert_string_equal(img.config.cmd[0], "one");
	assert_int_equal(img.nlayers, 2);
	clip_image_clear(&img);

	assert_err(resolve(f, "t3", NULL, &img, &err), &err, -ENOENT,
		   "no image tagged \"t3\" in index.json (tags: t1, t2)");
	assert_non_null(strstr(err.msg, f->dir));
	assert_null(img.layers);

	/* Two entries, neither "latest": the default is ambiguous. */
	assert_err(resolve(f, NULL, NULL, &img, &err), &err, -EINVAL,
		   "index.json lists 2 images and none is tagged \"latest\"");
	assert_non_null(strstr(err.msg, "tags: t1, t2"));
	assert_non_null(strstr(err.msg, f->dir));
}

static void test_resolve_defaults(void **state)
{
	struct fixture *f = *state;
	struct clip_err err = { 0 };
	struct clip_image img;
	char m1[72], c1[72], m2[72], c2[72], m3[72], c3[72], entries[4096] = "";
	size_t s1 = make_image(f, "one", "amd64", 1, m1, c1);
	size_t s2 = make_image(f, "two", "amd64", 1, m2, c2);
	size_t s3 = make_image(f, "three", "amd64", 0, m3, c3);

	/* The only entry, untagged. */
	entry(entries, sizeof(entries), CLIP_MT_OCI_MANIFEST, m3, s3, NULL, NULL);
	write_index(f, entries);
	assert_int_equal(resolve(f, NULL, NULL, &img, &err), 0);
	assert_string_equal(img.config.cmd[0], "three");
	assert_int_equal(img.nlayers, 0);
	clip_image_clear(&img);
	/* ...but a tag must still be there when asked for. */
	assert_err(resolve(f, "latest", NULL, &img, &err), &err, -ENOENT, "(tags: <untagged>)");

	/* Several: "latest" wins, wherever it is. */
	entries[0] = '\0';
	entry(entries, sizeof(entries), CLIP_MT_OCI_MANIFEST, m1, s1, "v1", NULL);
	entry(entries, sizeof(entries), CLIP_MT_OCI_MANIFEST, m2, s2, "latest", NULL);
	entry(entries, sizeof(entries), CLIP_MT_OCI_MANIFEST, m3, s3, NULL, NULL);
	write_index(f, entries);
	assert_int_equal(resolve(f, NULL, NULL, &img, &err), 0);
	assert_string_equal(img.config.cmd[0], "two");
	assert_string_equal(img.manifest_digest, m2);
	clip_image_clear(&img);

	/* Two "latest" entries without platforms cannot be told apart. */
	entries[0] = '\0';
	entry(entries, sizeof(entries), CLIP_MT_OCI_MANIFEST, m1, s1, "latest", NULL);
	entry(entries, sizeof(entries), CLIP_MT_OCI_MANIFEST, m2, s2, "latest", NULL);
	write_index(f, entries);
	assert_err(resolve(f, NULL, NULL, &img, &err), &err, -EINVAL,
		   "2 entries tagged \"latest\"");

	write_index(f, "");
	assert_err(resolve(f, NULL, NULL, &img, &err), &err, -ENOENT, "index.json lists no images");
}

static void test_resolve_same_tag_platforms(void **state)
{
	struct fixture *f = *state;
	struct clip_err err = { 0 };
	struct clip_image img;
	char m1[72], c1[72], m2[72], c2[72], entries[4096] = "";
	size_t s1 = make_image(f, "amd", "amd64", 1, m1, c1);
	size_t s2 = make_image(f, "arm", "arm64", 1, m2, c2);
	entry(entries, sizeof(entries), CLIP_MT_OCI_MANIFEST, m1, s1, "v1",
	      "{\"os\":\"linux\",\"architecture\":\"amd64\"}");
	entry(entries, sizeof(entries), CLIP_MT_OCI_MANIFEST, m2, s2, "v1",
	      "{\"os\":\"linux\",\"architecture\":\"arm64\",\"variant\":\"v8\"}");
	write_index(f, entries);
	assert_int_equal(resolve(f, "v1", "linux/arm64", &img, &err), 0);
	assert_string_equal(img.config.cmd[0], "arm");
	clip_image_clear(&img);
	assert_int_equal(resolve(f, "v1", "linux/amd64", &img, &err), 0);
	assert_string_equal(img.config.cmd[0], "amd");
	clip_image_clear(&img);
	assert_err(resolve(f, "v1", "linux/riscv64", &img, &err), &err, -ENOENT,
		   "no manifest for linux/riscv64 in image index; available: linux/amd64, "
		   "linux/arm64/v8");
}

/* index.json -> index blob (2 platforms) -> manifests. */
static void test_resolve_nested_index(void **state)
{
	struct fixture *f = *state;
	struct clip_err err = { 0 };
	struct clip_image img;
	char m1[72], c1[72], m2[72], c2[72], idx[72], entries[4096] = "", blob[8192];
	size_t s1 = make_image(f, "amd", "amd64", 2, m1, c1);
	size_t s2 = make_image(f, "arm", "arm64", 1, m2, c2);
	entry(entries, sizeof(entries), CLIP_MT_OCI_MANIFEST, m1, s1, NULL,
	      "{\"os\":\"linux\",\"architecture\":\"amd64\"}");
	entry(entries, sizeof(entries), CLIP_MT_OCI_MANIFEST, m2, s2, NULL,
	      "{\"os\":\"linux\",\"architecture\":\"arm64\",\"variant\":\"v8\"}");
	snprintf(blob, sizeof(blob),
		 "{\"schemaVersion\":2,\"mediaType\":\"" CLIP_MT_OCI_INDEX "\",\"manifests\":[%s]}",
		 entries);
	put_blob(f, blob, idx);
	entries[0] = '\0';
	entry(entries, sizeof(entries), CLIP_MT_OCI_INDEX, idx, strlen(blob), "multi", NULL);
	write_index(f, entries);

	assert_int_equal(resolve(f, "multi", "linux/arm64/v8", &img, &err), 0);
	assert_string_equal(img.manifest_digest, m2);
	assert_string_equal(img.config.cmd[0], "arm");
	assert_string_equal(img.config.architecture, "arm64");
	clip_image_clear(&img);
	assert_int_equal(resolve(f, NULL, "linux/amd64", &img, &err), 0);
	assert_string_equal(img.manifest_digest, m1);
	assert_int_equal(img.nlayers, 2);
	clip_image_clear(&img);

	assert_err(resolve(f, "multi", "linux/s390x", &img, &err), &err, -ENOENT,
		   "no manifest for linux/s390x in image index; available: linux/amd64, "
		   "linux/arm64/v8");
	assert_non_null(strstr(err.msg, idx));
	assert_non_null(strstr(err.msg, "tag \"multi\""));

	/* A tampered index blob is caught before it is parsed. */
	char path[8192];
	blob_path(f, idx, path, sizeof(path));
	blob[strlen(blob) - 2] = ' ';
	write_file(f->dir, path + strlen(f->dir) + 1, blob, strlen(blob));
	assert_err(resolve(f, "multi", "linux/amd64", &img, &err), &err, -EBADMSG,
		   "digest mismatch");
	assert_non_null(strstr(err.msg, idx));
}

/* A chain of `depth` image indexes, each holding the next, ending in one
 * manifest. */
static void make_chain(struct fixture *f, int depth)
{
	char m[72], c[72], d[72], blob[8192];
	size_t size = make_image(f, "deep", "amd64", 1, m, c);
	const char *mt = CLIP_MT_OCI_MANIFEST;
	memcpy(d, m, sizeof(d));
	for (int i = 0; i < depth; i++) {
		char entries[1024] = "";
		entry(entries, sizeof(entries), mt, d, size, NULL,
		      "{\"os\":\"linux\",\"architecture\":\"amd64\"}");
		snprintf(blob, sizeof(blob), "{\"schemaVersion\":2,\"manifests\":[%s]}", entries);
		put_blob(f, blob, d);
		size = strlen(blob);
		mt = CLIP_MT_OCI_INDEX;
	}
	char entries[1024] = "";
	entry(entries, sizeof(entries), mt, d, size, "deep", NULL);
	write_index(f, entries);
}

static void test_resolve_nesting_limit(void **state)
{
	struct fixture *f = *state;
	struct clip_err err = { 0 };
	struct clip_image img;
	make_chain(f, 4);
	int r = resolve(f, "deep", "linux/amd64", &img, &err);
	if (r < 0)
		print_error("%s\n", err.msg);
	assert_int_equal(r, 0);
	assert_string_equal(img.config.cmd[0], "deep");
	clip_image_clear(&img);
	make_chain(f, 5);
	assert_err(resolve(f, "deep", "linux/amd64", &img, &err), &err, -ELOOP,
		   "nested more than 4 deep");
}

static void test_resolve_missing_blobs(void **state)
{
	struct fixture *f = *state;
	struct clip_err err = { 0 };
	struct clip_image img;
	char m1[72], c1[72], entries[4096] = "", path[8192];
	size_t s1 = make_image(f, "one", "amd64", 1, m1, c1);
	entry(entries, sizeof(entries), CLIP_MT_OCI_MANIFEST, m1, s1, "t1", NULL);
	write_index(f, entries);

	blob_path(f, c1, path, sizeof(path));
	assert_int_equal(unlink(path), 0);
	assert_err(resolve(f, "t1", NULL, &img, &err), &err, -ENOENT, "not found");
	assert_non_null(strstr(err.msg, c1));
	assert_non_null(strstr(err.msg, "config"));
	assert_null(img.layers);

	blob_path(f, m1, path, sizeof(path));
	assert_int_equal(unlink(path), 0);
	assert_err(resolve(f, "t1", NULL, &img, &err), &err, -ENOENT, "not found");
	assert_non_null(strstr(err.msg, m1));
	assert_non_null(strstr(err.msg, f->dir));
	assert_non_null(strstr(err.msg, "tag \"t1\""));
}

static void test_resolve_tampered(void **state)
{
	struct fixture *f = *state;
	struct clip_err err = { 0 };
	struct clip_image img;
	char m1[72], c1[72], entries[4096] = "", path[8192], buf[8192];
	size_t s1 = make_image(f, "one", "amd64", 1, m1, c1);
	entry(entries, sizeof(entries), CLIP_MT_OCI_MANIFEST, m1, s1, "t1", NULL);
	write_index(f, entries);
	assert_int_equal(resolve(f, "t1", NULL, &img, &err), 0);
	clip_image_clear(&img);

	/* Same size, one byte changed. */
	blob_path(f, m1, path, sizeof(path));
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	size_t n = fread(buf, 1, sizeof(buf), fp);
	fclose(fp);
	assert_int_equal(n, s1);
	char *p = strstr(buf, "\"size\":");
	assert_non_null(p);
	p[7] = p[7] == '9' ? '8' : '9';
	write_file(f->dir, path + strlen(f->dir) + 1, buf, n);
	assert_err(resolve(f, "t1", NULL, &img, &err), &err, -EBADMSG, "digest mismatch");
	assert_non_null(strstr(err.msg, m1));
	assert_non_null(strstr(err.msg, "manifest"));

	/* Longer than the descriptor says. */
	buf[n] = '\n';
	write_file(f->dir, path + strlen(f->dir) + 1, buf, n + 1);
	assert_err(resolve(f, "t1", NULL, &img, &err), &err, -EBADMSG, "descriptor says");
	assert_non_null(strstr(err.msg, m1));

	/* The config blob too. */
	make_image(f, "one", "amd64", 1, m1, c1);
	blob_path(f, c1, path, sizeof(path));
	write_file(f->dir, path + strlen(f->dir) + 1, "{}", 2);
	assert_err(resolve(f, "t1", NULL, &img, &err), &err, -EBADMSG, "config");
	assert_non_null(strstr(err.msg, c1));
}

static void test_resolve_bad_index_json(void **state)
{
	struct fixture *f = *state;
	struct clip_err err = { 0 };
	struct clip_image img;
	char m1[72], c1[72], entries[4096], big[64];
	size_t s1 = make_image(f, "one", "amd64", 1, m1, c1);
	static const struct {
		const char *json;
		int code;
		const char *needle;
	} cases[] = {
		{ "{\"schemaVersion\":2}", -EBADMSG, "\"manifests\" is missing or not an array" },
		{ "{\"manifests\":\"x\"}", -EBADMSG, "\"manifests\" is missing or not an array" },
		{ "{\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\",\"manifests\":[]}", -EBADMSG,
		  "not an image index" },
		{ "[", -EBADMSG, "index.json: invalid JSON" },
		{ "{\"manifests\":[1,2]}", -EBADMSG, "manifests[0]: expected an object" },
		{ "{\"manifests\":[{\"annotations\":[]},{}]}", -EBADMSG,
		  "\"annotations\" must be an object" },
		{ "{\"manifests\":[{\"annotations\":{\"org.opencontainers.image.ref.name\":1}},{}]"
		  "}",
		  -EBADMSG, "must be a string" },
		{ "{\"manifests\":[{\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\",\"digest\":\"" DX
		  "\"}]}",
		  -EBADMSG, "\"size\" is missing" },
		{ "{\"manifests\":[{\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\",\"digest\":\"" DX
		  "\",\"size\":-1}]}",
		  -EBADMSG, "\"size\" is missing or not a non-negative integer" },
		{ "{\"manifests\":[{\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\",\"digest\":\"sha256:"
		  "x\",\"size\":1}]}",
		  -EBADMSG, "invalid digest \"sha256:x\"" },
		{ "{\"manifests\":[{\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\",\"digest\":\"sha512:"
		  "abcd\",\"size\":1}]}",
		  -ENOTSUP, "unsupported digest algorithm" },
		{ "{\"manifests\":[{\"digest\":\"" DX "\",\"size\":1}]}", -EBADMSG,
		  "\"mediaType\" is missing" },
		{ "{\"manifests\":[{\"mediaType\":\"application/vnd.docker.distribution.manifest."
		  "v1+prettyjws\",\"digest\":\"" DX "\",\"size\":1}]}",
		  -ENOTSUP, "schema 1 is not supported" },
		{ "{\"manifests\":[{\"mediaType\":\"" MT_LAYER_GZ "\",\"digest\":\"" DX
		  "\",\"size\":1}]}",
		  -ENOTSUP, "unsupported media type" },
		{ "{\"manifests\":[{\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\",\"digest\":\"" DX
		  "\",\"size\":1}]}",
		  -ENOENT, "blob " DX " not found" },
		{ "{\"manifests\":[{\"mediaType\":\"" CLIP_MT_OCI_MANIFEST "\",\"digest\":\"" DX
		  "\",\"size\":4194305}]}",
		  -EFBIG, "more than the limit" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		write_str(f->dir, "index.json", cases[i].json);
		int r = resolve(f, NULL, NULL, &img, &err);
		if (r != cases[i].code || strstr(err.msg, cases[i].needle) == NULL)
			print_error("case %zu: %s\n", i, cases[i].json);
		assert_err(r, &err, cases[i].code, cases[i].needle);
		assert_non_null(strstr(err.msg, f->dir));
		assert_null(img.layers);
	}

	/* The descriptor's media type must agree with the manifest's own. */
	entries[0] = '\0';
	entry(entries, sizeof(entries), CLIP_MT_DOCKER_MANIFEST, m1, s1, NULL, NULL);
	write_index(f, entries);
	assert_err(resolve(f, NULL, NULL, &img, &err), &err, -EBADMSG, "descriptor says");

	/* A descriptor that understates the size. */
	entries[0] = '\0';
	entry(entries, sizeof(entries), CLIP_MT_OCI_MANIFEST, m1, s1 - 1, NULL, NULL);
	write_index(f, entries);
	snprintf(big, sizeof(big), "descriptor says %zu", s1 - 1);
	assert_err(resolve(f, NULL, NULL, &img, &err), &err, -EBADMSG, big);
}

static void test_open_blob(void **state)
{
	struct fixture *f = *state;
	struct clip_err err = { 0 };
	char d[72], buf[64];
	write_index(f, "");
	put_blob(f, "hello blob", d);
	struct clip_oci_layout *l = open_ok(f);
	int fd = -1;
	assert_int_equal(clip_oci_layout_open_blob(l, d, &fd, &err), 0);
	assert_true(fd >= 0);
	ssize_t n = read(fd, buf, sizeof(buf));
	assert_int_equal(n, 10);
	assert_memory_equal(buf, "hello blob", 10);
	close(fd);

	fd = -1;
	assert_err(clip_oci_layout_open_blob(l, DX, &fd, &err), &err, -ENOENT,
		   "blob " DX " not found");
	assert_non_null(strstr(err.msg, f->dir));
	assert_err(clip_oci_layout_open_blob(l, "sha256:../../etc/passwd", &fd, &err), &err,
		   -EINVAL, "invalid digest");
	assert_err(clip_oci_layout_open_blob(l, NULL, &fd, &err), &err, -EINVAL, "invalid digest");
	assert_int_equal(fd, -1);

	/* A FIFO must not hang the open, nor a directory pass for a blob. */
	char path[8192];
	blob_path(f, DX, path, sizeof(path));
	assert_int_equal(mkfifo(path, 0644), 0);
	assert_err(clip_oci_layout_open_blob(l, DX, &fd, &err), &err, -EINVAL,
		   "blob " DX ": not a regular file");
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkdir(path, 0755), 0);
	assert_err(clip_oci_layout_open_blob(l, DX, &fd, &err), &err, -EINVAL,
		   "not a regular file");
	assert_int_equal(fd, -1);
	clip_oci_layout_free(l);

	/* The same for the manifest blob during resolve. */
	char entries[1024] = "";
	entry(entries, sizeof(entries), CLIP_MT_OCI_MANIFEST, DX, 10, "t", NULL);
	write_index(f, entries);
	struct clip_image img;
	assert_err(resolve(f, "t", NULL, &img, &err), &err, -EINVAL, "not a regular file");
	assert_non_null(strstr(err.msg, DX));
}

/* ---- umoci ------------------------------------------------------------ */

static int run(char *const argv[])
{
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		if (null >= 0) {
			dup2(null, 1);
			dup2(null, 2);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	int status;
	if (waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_umoci_layout(void **state)
{
	struct fixture *f = *state;
	char layout[8192], image[8300], ref[8400];
	snprintf(layout, sizeof(layout), "%s/umoci", f->dir);
	snprintf(image, sizeof(image), "%s:t1", layout);

	char *version[] = { "umoci", "--version", NULL };
	if (run(version) != 0) {
		print_message("skipped: umoci is not installed\n");
		skip();
	}
	char *init[] = { "umoci", "init", "--layout", layout, NULL };
	char *new_image[] = { "umoci", "new", "--image", image, NULL };
	assert_int_equal(run(init), 0);
	assert_int_equal(run(new_image), 0);

	struct clip_err err = { 0 };
	char *dir = NULL, *tag = NULL;
	snprintf(ref, sizeof(ref), "oci:%s", image);
	assert_int_equal(clip_oci_layout_parse_ref(ref, &dir, &tag, &err), 0);
	assert_string_equal(dir, layout);
	assert_string_equal(tag, "t1");

	struct clip_oci_layout *l = NULL;
	struct clip_image img = { 0 };
	int r = clip_oci_layout_open(dir, &l, &err);
	if (r == 0)
		r = clip_oci_layout_resolve(l, tag, NULL, &img, &err);
	if (r < 0)
		print_error("%s\n", err.msg);
	assert_int_equal(r, 0);
	assert_true(clip_digest_valid(img.manifest_digest));
	assert_true(clip_digest_valid(img.config_digest));
	assert_int_equal(img.nlayers, 0);
	assert_string_equal(img.config.os, "linux");
	assert_non_null(img.config.architecture);
	clip_image_clear(&img);

	/* The only entry is the default, too. */
	r = clip_oci_layout_resolve(l, NULL, NULL, &img, &err);
	assert_int_equal(r, 0);
	clip_image_clear(&img);
	clip_oci_layout_free(l);
	free(dir);
	free(tag);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ref),
		cmocka_unit_test_setup_teardown(test_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve_tag, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve_same_tag_platforms, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve_nested_index, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve_nesting_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve_missing_blobs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve_tampered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolve_bad_index_json, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_blob, setup, teardown),
		cmocka_unit_test_setup_teardown(test_umoci_layout, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
