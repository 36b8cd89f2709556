/* clip: OCI / Docker v2 image JSON (indexes, manifests, configs).
 *
 * Every document is untrusted: it comes from a registry or a directory we did
 * not write. So sizes are bounded before parsing, jansson's nesting limit
 * (JSON_PARSER_MAX_DEPTH) stops "[[[[..." bombs, duplicate keys are refused
 * (two parsers reading different values out of one manifest is a known
 * attack), and every member is type-checked before it is used.
 *
 * Error codes: -EFBIG for oversized input, -EBADMSG for anything malformed
 * (invalid JSON, wrong types, missing members, malformed digests, counts that
 * disagree), -ENOTSUP for well-formed things we do not handle (schema 1,
 * unknown media types, digest algorithms other than sha256), -ENOENT when no
 * index entry matches the platform, -ENOMEM.
 */
#include "clip/image.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "sha256.h"
#include "util.h"

#define SHA256_HEX_LEN	  64
#define SHA256_PREFIX	  "sha256:"
#define SHA256_PREFIX_LEN (sizeof(SHA256_PREFIX) - 1)

/* ---- digests ---------------------------------------------------------- */

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* Classify a digest string: 0 for a valid sha256 digest, -ENOTSUP for a
 * well-formed digest of another algorithm (OCI grammar: algorithm =
 * [a-z0-9]+ ([+._-] [a-z0-9]+)*, encoded = [a-zA-Z0-9=_-]+), -EINVAL for
 * anything else. */
static int digest_check(const char *digest)
{
	if (digest == NULL)
		return -EINVAL;
	if (strncmp(digest, SHA256_PREFIX, SHA256_PREFIX_LEN) == 0) {
		const char *hex = digest + SHA256_PREFIX_LEN;
		size_t i;
		for (i = 0; hex[i] != '\0'; i++) {
			if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
				return -EINVAL;
		}
		return i == SHA256_HEX_LEN ? 0 : -EINVAL;
	}

	const char *p = digest;
	for (;;) {
		if (!is_lower_alnum(*p))
			return -EINVAL;
		while (is_lower_alnum(*p))
			p++;
		if (*p == ':')
			break;
		if (*p != '+' && *p != '.' && *p != '_' && *p != '-')
			return -EINVAL;
		p++;
	}
	p++;
	if (*p == '\0')
		return -EINVAL;
	for (; *p != '\0'; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '=' || c == '_' || c == '-'))
			return -EINVAL;
	}
	return -ENOTSUP;
}

int clip_digest_valid(const char *digest)
{
	return digest_check(digest) == 0;
}

void clip_digest_of(const void *data, size_t len, char out[72])
{
	static const char hexdigits[] = "0123456789abcdef";
	unsigned char md[CLIP_SHA256_LEN];

	clip_sha256_once(data, len, md);
	memcpy(out, SHA256_PREFIX, SHA256_PREFIX_LEN);
	char *hex = out + SHA256_PREFIX_LEN;
	for (size_t i = 0; i < sizeof(md); i++) {
		hex[2 * i] = hexdigits[md[i] >> 4];
		hex[2 * i + 1] = hexdigits[md[i] & 0xf];
	}
	hex[SHA256_HEX_LEN] = '\0';
}

int clip_digest_verify(const void *data, size_t len, const char *digest, struct clip_err *err)
{
	int r = digest_check(digest);
	if (r == -ENOTSUP)
		return clip_err_set(err, ENOTSUP, "unsupported digest algorithm in \"%.100s\"",
				    digest);
	if (r < 0)
		return clip_err_set(err, EINVAL, "invalid digest \"%.100s\"",
				    digest != NULL ? digest : "(null)");
	char actual[72];
	clip_digest_of(data, len, actual);
	if (strcmp(actual, digest) != 0)
		return clip_err_set(err, EBADMSG, "digest mismatch (content is %s)", actual);
	return 0;
}

/* ---- JSON helpers ----------------------------------------------------- */

static const char *json_type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a real number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	case JSON_NULL: return "null";
	}
	return "unknown";
}

/* Parse `len` bytes as a JSON object; `what` names the document in errors.
 * *out is a new reference on success. */
static int load_object(const void *data, size_t len, const char *what, json_t **out,
		       struct clip_err *err)
{
	if (data == NULL && len > 0)
		return clip_err_set(err, EINVAL, "%s: no data", what);
	if (len > CLIP_IMAGE_MAX_JSON)
		return clip_err_set(err, EFBIG, "%s: %zu bytes is more than the limit of %u", what,
				    len, CLIP_IMAGE_MAX_JSON);
	json_error_t jerr;
	json_t *root = json_loadb(data != NULL ? data : "", len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL)
		return clip_err_set(err, EBADMSG, "%s: invalid JSON at line %d column %d: %s", what,
				    jerr.line, jerr.column, jerr.text);
	if (!json_is_object(root)) {
		int r = clip_err_set(err, EBADMSG, "%s: expected a JSON object, got %s", what,
				     json_type_name(root));
		json_decref(root);
		return r;
	}
	*out = root;
	return 0;
}

/* Borrow the string member `key` of `obj` into *out: NULL when absent (or
 * JSON null) unless `required`; -EBADMSG for any other type. */
static int get_string(const json_t *obj, const char *key, bool required, const char *what,
		      const char **out, struct clip_err *err)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (v == NULL || (json_is_null(v) && !required)) {
		if (required)
			return clip_err_set(err, EBADMSG, "%s: \"%s\" is missing", what, key);
		return 0;
	}
	if (!json_is_string(v))
		return clip_err_set(err, EBADMSG, "%s: \"%s\" must be a string, not %s", what, key,
				    json_type_name(v));
	*out = json_string_value(v);
	return 0;
}

/* Required non-negative integer member. */
static int get_size(const json_t *obj, const char *key, const char *what, uint64_t *out,
		    struct clip_err *err)
{
	json_t *v = json_object_get(obj, key);
	if (v == NULL)
		return clip_err_set(err, EBADMSG, "%s: \"%s\" is missing", what, key);
	if (!json_is_integer(v))
		return clip_err_set(err, EBADMSG, "%s: \"%s\" must be an integer, not %s", what,
				    key, json_type_name(v));
	json_int_t n = json_integer_value(v);
	if (n < 0)
		return clip_err_set(err, EBADMSG, "%s: \"%s\" is negative (%lld)", what, key,
				    (long long)n);
	*out = (uint64_t)n;
	return 0;
}

/* Required array member; borrowed. */
static int get_array(const json_t *obj, const char *key, const char *what, json_t **out,
		     struct clip_err *err)
{
	json_t *v = json_object_get(obj, key);
	if (v == NULL)
		return clip_err_set(err, EBADMSG, "%s: \"%s\" is missing", what, key);
	if (!json_is_array(v))
		return clip_err_set(err, EBADMSG, "%s: \"%s\" must be an array, not %s", what, key,
				    json_type_name(v));
	*out = v;
	return 0;
}

/* Required object member (optional: NULL when absent or null); borrowed. */
static int get_object(const json_t *obj, const char *key, bool required, const char *what,
		      json_t **out, struct clip_err *err)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (v == NULL || (json_is_null(v) && !required)) {
		if (required)
			return clip_err_set(err, EBADMSG, "%s: \"%s\" is missing", what, key);
		return 0;
	}
	if (!json_is_object(v))
		return clip_err_set(err, EBADMSG, "%s: \"%s\" must be an object, not %s", what, key,
				    json_type_name(v));
	*out = v;
	return 0;
}

/* Required digest member: a string, and a sha256 digest. */
static int get_digest(const json_t *obj, const char *key, const char *what, const char **out,
		      struct clip_err *err)
{
	int r = get_string(obj, key, true, what, out, err);
	if (r < 0)
		return r;
	r = digest_check(*out);
	if (r == -ENOTSUP)
		return clip_err_set(err, ENOTSUP, "%s: unsupported digest algorithm in \"%.100s\"",
				    what, *out);
	if (r < 0)
		return clip_err_set(err, EBADMSG, "%s: invalid digest \"%.100s\"", what, *out);
	return 0;
}

/* schemaVersion must be 2; 1 is Docker's signed schema 1, which we refuse
 * by name so that users know to convert the image. */
static int check_schema_version(const json_t *obj, const char *what, struct clip_err *err)
{
	json_t *v = json_object_get(obj, "schemaVersion");
	if (v == NULL)
		return clip_err_set(err, EBADMSG, "%s: \"schemaVersion\" is missing", what);
	if (!json_is_integer(v))
		return clip_err_set(err, EBADMSG,
				    "%s: \"schemaVersion\" must be an integer, not %s", what,
				    json_type_name(v));
	json_int_t n = json_integer_value(v);
	if (n == 1)
		return clip_err_set(err, ENOTSUP,
				    "%s: Docker image manifest schema 1 is not supported "
				    "(convert the image to schema 2 or OCI)",
				    what);
	if (n != 2)
		return clip_err_set(err, ENOTSUP, "%s: unsupported schemaVersion %lld", what,
				    (long long)n);
	return 0;
}

static char *dup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

/* ---- platforms -------------------------------------------------------- */

static int copy_field(char *dst, size_t cap, const char *src, size_t n)
{
	if (n >= cap)
		return -1;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return 0;
}

int clip_platform_parse(const char *text, struct clip_platform *out, struct clip_err *err)
{
	if (text == NULL)
		return clip_err_set(err, EINVAL, "platform: none given");
	struct clip_platform p;
	memset(&p, 0, sizeof(p));
	char *fields[3] = { p.os, p.architecture, p.variant };
	const char *s = text;
	int nfields = 0;
	for (;;) {
		const char *slash = strchr(s, '/');
		size_t n = slash != NULL ? (size_t)(slash - s) : strlen(s);
		if (nfields == 3)
			return clip_err_set(err, EINVAL,
					    "platform \"%.100s\": expected os/arch[/variant]",
					    text);
		if (n == 0)
			return clip_err_set(err, EINVAL, "platform \"%.100s\": empty component",
					    text);
		if (copy_field(fields[nfields], sizeof(p.os), s, n) < 0)
			return clip_err_set(err, EINVAL, "platform \"%.100s\": component too long",
					    text);
		nfields++;
		if (slash == NULL)
			break;
		s = slash + 1;
	}
	if (nfields < 2)
		return clip_err_set(err, EINVAL, "platform \"%.100s\": expected os/arch[/variant]",
				    text);
	*out = p;
	return 0;
}

void clip_platform_host(struct clip_platform *out)
{
	/* uname(2) names machines the kernel's way; OCI uses Go's GOARCH names. */
	static const struct {
		const char *machine;
		const char *arch;
		const char *variant;
	} names[] = {
		{ "x86_64", "amd64", "" },
		{ "amd64", "amd64", "" },
		{ "aarch64", "arm64", "" },
		{ "arm64", "arm64", "" },
		{ "armv8l", "arm", "v8" },
		{ "armv7l", "arm", "v7" },
		{ "armv7", "arm", "v7" },
		{ "armv6l", "arm", "v6" },
		{ "armv5tel", "arm", "v5" },
		{ "i386", "386", "" },
		{ "i486", "386", "" },
		{ "i586", "386", "" },
		{ "i686", "386", "" },
		{ "ppc64le", "ppc64le", "" },
		{ "ppc64", "ppc64", "" },
		{ "s390x", "s390x", "" },
		{ "riscv64", "riscv64", "" },
		{ "mips64", "mips64", "" },
		{ "loongarch64", "loong64", "" },
	};
	struct utsname u;

	memset(out, 0, sizeof(*out));
	snprintf(out->os, sizeof(out->os), "linux");
	if (uname(&u) != 0) {
		snprintf(out->architecture, sizeof(out->architecture), "unknown");
		return;
	}
	for (size_t i = 0; i < CLIP_ARRAY_SIZE(names); i++) {
		if (strcmp(u.machine, names[i].machine) == 0) {
			snprintf(out->architecture, sizeof(out->architecture), "%s", names[i].arch);
			snprintf(out->variant, sizeof(out->variant), "%s", names[i].variant);
			return;
		}
	}
	snprintf(out->architecture, sizeof(out->architecture), "%.31s", u.machine);
}

/* arm64 images are published both as linux/arm64 and linux/arm64/v8. */
static const char *normal_variant(const char *arch, const char *variant)
{
	if (variant == NULL)
		variant = "";
	if (strcmp(arch, "arm64") == 0 && (variant[0] == '\0' || strcmp(variant, "8") == 0))
		return "v8";
	return variant;
}

enum platform_match { MATCH_NONE, MATCH_COMPATIBLE, MATCH_EXACT };

static enum platform_match platform_match(const char *os, const char *arch, const char *variant,
					  const struct clip_platform *want)
{
	if (strcmp(os, want->os) != 0 || strcmp(arch, want->architecture) != 0)
		return MATCH_NONE;
	const char *have_v = normal_variant(arch, variant);
	const char *want_v = normal_variant(want->architecture, want->variant);
	if (strcmp(have_v, want_v) == 0)
		return MATCH_EXACT;
	if (have_v[0] == '\0' || want_v[0] == '\0')
		return MATCH_COMPATIBLE;
	return MATCH_NONE;
}

static void format_platform(char *buf, size_t cap, const char *os, const char *arch,
			    const char *variant)
{
	if (variant != NULL && variant[0] != '\0')
		snprintf(buf, cap, "%.40s/%.40s/%.40s", os, arch, variant);
	else
		snprintf(buf, cap, "%.40s/%.40s", os, arch);
}

/* ---- image index ------------------------------------------------------ */

int clip_media_type_is_index(const char *media_type)
{
	return media_type != NULL && (strcmp(media_type, CLIP_MT_OCI_INDEX) == 0 ||
				      strcmp(media_type, CLIP_MT_DOCKER_LIST) == 0);
}

int clip_image_index_select(const void *json, size_t len, const struct clip_platform *platform,
			    char **digest, char **media_type, struct clip_err *err)
{
	static const char what[] = "image index";
	struct clip_platform host;
	json_t *root = NULL;
	int r;

	if (platform == NULL) {
		clip_platform_host(&host);
		platform = &host;
	}
	r = load_object(json, len, what, &root, err);
	if (r < 0)
		return r;

	const char *mt;
	json_t *manifests;
	r = get_string(root, "mediaType", false, what, &mt, err);
	if (r < 0)
		goto out;
	if (mt != NULL && !clip_media_type_is_index(mt)) {
		r = clip_err_set(err, EBADMSG, "%s: media type \"%.100s\" is not an image index",
				 what, mt);
		goto out;
	}
	r = get_array(root, "manifests", what, &manifests, err);
	if (r < 0)
		goto out;

	/* An exact variant match beats a compatible one (a side gives no
	 * variant) wherever it is listed: asking for linux/arm/v7 must not take
	 * a variant-less linux/arm entry just because it comes first. */
	json_t *chosen = NULL;
	size_t chosen_i = 0;
	enum platform_match best = MATCH_NONE;
	char avail[640];
	size_t avail_len = 0;
	bool avail_full = false;
	avail[0] = '\0';
	for (size_t i = 0; i < json_array_size(manifests); i++) {
		json_t *entry = json_array_get(manifests, i);
		char ewhat[64];
		snprintf(ewhat, sizeof(ewhat), "%s: manifests[%zu]", what, i);
		if (!json_is_object(entry)) {
			r = clip_err_set(err, EBADMSG, "%s: expected an object, got %s", ewhat,
					 json_type_name(entry));
			goto out;
		}
		json_t *plat;
		const char *os, *arch, *variant;
		r = get_object(entry, "platform", false, ewhat, &plat, err);
		if (r < 0)
			goto out;
		if (plat == NULL)
			continue;
		snprintf(ewhat, sizeof(ewhat), "%s: manifests[%zu].platform", what, i);
		if ((r = get_string(plat, "os", true, ewhat, &os, err)) < 0 ||
		    (r = get_string(plat, "architecture", true, ewhat, &arch, err)) < 0 ||
		    (r = get_string(plat, "variant", false, ewhat, &variant, err)) < 0)
			goto out;
		/* BuildKit's attestation manifests are not images. */
		if (strcmp(os, "unknown") == 0 && strcmp(arch, "unknown") == 0)
			continue;

		enum platform_match m = platform_match(os, arch, variant, platform);
		if (m > best) {
			best = m;
			chosen = entry;
			chosen_i = i;
		}

		/* Keep room for ", ..." so that a long list says it was cut. */
		if (!avail_full) {
			char name[128];
			size_t room = sizeof(avail) - avail_len;
			format_platform(name, sizeof(name), os, arch, variant);
			int n = snprintf(avail + avail_len, room, "%s%s", avail_len > 0 ? ", " : "",
					 name);
			if (n >= 0 && (size_t)n + 6 <= room) {
				avail_len += (size_t)n;
			} else {
				snprintf(avail + avail_len, room, "%s",
					 avail_len > 0 ? ", ..." : "...");
				avail_full = true;
			}
		}
	}

	if (chosen == NULL) {
		char want[128];
		format_platform(want, sizeof(want), platform->os, platform->architecture,
				platform->variant);
		r = clip_err_set(err, ENOENT, "no manifest for %s in %s; available: %s", want, what,
				 avail[0] != '\0' ? avail : "none");
		goto out;
	}

	char cwhat[64];
	const char *d, *cmt;
	snprintf(cwhat, sizeof(cwhat), "%s: manifests[%zu]", what, chosen_i);
	if ((r = get_digest(chosen, "digest", cwhat, &d, err)) < 0 ||
	    (r = get_string(chosen, "mediaType", true, cwhat, &cmt, err)) < 0)
		goto out;

	char *dcopy = strdup(d);
	char *mcopy = strdup(cmt);
	if (dcopy == NULL || mcopy == NULL) {
		free(dcopy);
		free(mcopy);
		r = clip_err_nomem(err);
		goto out;
	}
	*digest = dcopy;
	*media_type = mcopy;
	r = 0;
out:
	json_decref(root);
	return r;
}

/* ---- manifest --------------------------------------------------------- */

static const struct {
	const char *media_type;
	enum clip_compression compression;
} layer_types[] = {
	{ "application/vnd.oci.image.layer.v1.tar", CLIP_COMPRESSION_NONE },
	{ "application/vnd.oci.image.layer.v1.tar+gzip", CLIP_COMPRESSION_GZIP },
	{ "application/vnd.oci.image.layer.v1.tar+zstd", CLIP_COMPRESSION_ZSTD },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar", CLIP_COMPRESSION_NONE },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", CLIP_COMPRESSION_GZIP },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", CLIP_COMPRESSION_ZSTD },
	{ "application/vnd.docker.image.rootfs.diff.tar.gzip", CLIP_COMPRESSION_GZIP },
	{ "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", CLIP_COMPRESSION_GZIP },
	/* Not in Docker's schema 2 text, but containerd defines them and BuildKit
	 * pushes them for uncompressed layers in Docker manifests. */
	{ "application/vnd.docker.image.rootfs.diff.tar", CLIP_COMPRESSION_NONE },
	{ "application/vnd.docker.image.rootfs.foreign.diff.tar", CLIP_COMPRESSION_NONE },
};

static int layer_compression(const char *media_type, enum clip_compression *out)
{
	for (size_t i = 0; i < CLIP_ARRAY_SIZE(layer_types); i++) {
		if (strcmp(media_type, layer_types[i].media_type) == 0) {
			*out = layer_types[i].compression;
			return 0;
		}
	}
	return -1;
}

static void layers_free(struct clip_image_layer *layers, size_t n)
{
	if (layers == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free(layers[i].digest);
		free(layers[i].diff_id);
		free(layers[i].media_type);
	}
	free(layers);
}

/* The manifest's mediaType into *mt: OCI's or Docker's, or none (then OCI's,
 * when the document has "config" and "layers"); an index is not one. */
static int manifest_media_type(const json_t *root, const char *what, const char **mt,
			       struct clip_err *err)
{
	int r = get_string(root, "mediaType", false, what, mt, err);
	if (r < 0)
		return r;
	if (*mt == NULL) {
		/* Image-spec before 1.0.2 had no mediaType in manifests (umoci still
		 * writes none); accept them when they look like one. */
		if (json_object_get(root, "config") == NULL ||
		    json_object_get(root, "layers") == NULL)
			return clip_err_set(
				err, EBADMSG,
				"%s: no \"mediaType\" and no \"config\" and \"layers\": "
				"not an image manifest",
				what);
		*mt = CLIP_MT_OCI_MANIFEST;
		return 0;
	}
	if (clip_media_type_is_index(*mt))
		return clip_err_set(err, EBADMSG,
				    "%s: media type \"%s\" is an image index, not a manifest", what,
				    *mt);
	if (strcmp(*mt, CLIP_MT_OCI_MANIFEST) != 0 && strcmp(*mt, CLIP_MT_DOCKER_MANIFEST) != 0)
		return clip_err_set(err, ENOTSUP, "%s: unsupported media type \"%.100s\"", what,
				    *mt);
	return 0;
}

/* The config descriptor: its digest (borrowed from `root`) and size, and a
 * media type of an OCI or Docker image config. */
static int manifest_config(const json_t *root, const char *what, const char **digest,
			   uint64_t *size, struct clip_err *err)
{
	json_t *config;
	const char *config_mt;
	int r = get_object(root, "config", true, what, &config, err);
	if (r < 0)
		return r;
	if ((r = get_digest(config, "digest", "manifest: config", digest, err)) < 0 ||
	    (r = get_string(config, "mediaType", true, "manifest: config", &config_mt, err)) < 0 ||
	    (r = get_size(config, "size", "manifest: config", size, err)) < 0)
		return r;
	if (strcmp(config_mt, CLIP_MT_OCI_CONFIG) != 0 &&
	    strcmp(config_mt, CLIP_MT_DOCKER_CONFIG) != 0)
		return clip_err_set(err, ENOTSUP, "%s: config: unsupported media type \"%.100s\"",
				    what, config_mt);
	return 0;
}

/* Descriptor `i` of the layers array into *layer (digest and media type
 * copied; diff_id left for the config). */
static int manifest_layer(const json_t *l, size_t i, struct clip_image_layer *layer,
			  struct clip_err *err)
{
	char lwhat[48];
	const char *ld, *lmt;
	int r;

	snprintf(lwhat, sizeof(lwhat), "layer %zu", i);
	if (!json_is_object(l))
		return clip_err_set(err, EBADMSG, "%s: expected an object, got %s", lwhat,
				    json_type_name(l));
	if ((r = get_string(l, "mediaType", true, lwhat, &lmt, err)) < 0 ||
	    (r = get_digest(l, "digest", lwhat, &ld, err)) < 0 ||
	    (r = get_size(l, "size", lwhat, &layer->size, err)) < 0)
		return r;
	if (layer_compression(lmt, &layer->compression) < 0)
		return clip_err_set(err, ENOTSUP, "%s: unsupported media type %.100s", lwhat, lmt);
	layer->digest = strdup(ld);
	layer->media_type = strdup(lmt);
	if (layer->digest == NULL || layer->media_type == NULL)
		return clip_err_nomem(err);
	return 0;
}

/* The layers array into a new array *out of *n layers (NULL when empty),
 * at most CLIP_IMAGE_MAX_LAYERS of them. */
static int manifest_layers(const json_t *root, const char *what, struct clip_image_layer **out,
			   size_t *n, struct clip_err *err)
{
	json_t *jlayers;
	int r = get_array(root, "layers", what, &jlayers, err);
	if (r < 0)
		return r;
	size_t count = json_array_size(jlayers);
	if (count > CLIP_IMAGE_MAX_LAYERS)
		return clip_err_set(err, E2BIG, "%s: %zu layers, more than the limit of %d", what,
				    count, CLIP_IMAGE_MAX_LAYERS);
	struct clip_image_layer *layers = NULL;
	if (count > 0) {
		layers = calloc(count, sizeof(*layers));
		if (layers == NULL)
			return clip_err_nomem(err);
	}
	for (size_t i = 0; i < count; i++) {
		r = manifest_layer(json_array_get(jlayers, i), i, &layers[i], err);
		if (r < 0) {
			layers_free(layers, i + 1);
			return r;
		}
	}
	*out = layers;
	*n = count;
	return 0;
}

int clip_image_parse_manifest(const void *json, size_t len, struct clip_image *img,
			      struct clip_err *err)
{
	static const char what[] = "manifest";
	json_t *root = NULL;
	struct clip_image_layer *layers = NULL;
	size_t nlayers = 0;
	const char *mt, *config_digest;
	uint64_t config_size;
	cleanup_free char *md = NULL;
	cleanup_free char *mmt = NULL;
	cleanup_free char *cd = NULL;

	int r = load_object(json, len, what, &root, err);
	if (r < 0)
		return r;
	if ((r = check_schema_version(root, what, err)) < 0 ||
	    (r = manifest_media_type(root, what, &mt, err)) < 0 ||
	    (r = manifest_config(root, what, &config_digest, &config_size, err)) < 0 ||
	    (r = manifest_layers(root, what, &layers, &nlayers, err)) < 0)
		goto out;

	char manifest_digest[72];
	clip_digest_of(json, len, manifest_digest);
	md = strdup(manifest_digest);
	mmt = strdup(mt);
	cd = strdup(config_digest);
	if (md == NULL || mmt == NULL || cd == NULL) {
		r = clip_err_nomem(err);
		goto out;
	}

	/* Replace only once everything parsed: a failed parse leaves img as it was. */
	free(img->manifest_digest);
	free(img->manifest_media_type);
	free(img->config_digest);
	layers_free(img->layers, img->nlayers);
	img->manifest_digest = clip_steal(md);
	img->manifest_media_type = clip_steal(mmt);
	img->config_digest = clip_steal(cd);
	img->config_size = config_size;
	img->layers = clip_steal(layers);
	img->nlayers = nlayers;
	nlayers = 0;
	r = 0;
out:
	layers_free(layers, nlayers);
	json_decref(root);
	return r;
}

/* ---- config ----------------------------------------------------------- */

static void strv_free(char **v)
{
	if (v == NULL)
		return;
	for (char **p = v; *p != NULL; p++)
		free(*p);
	free(v);
}

static void config_free(struct clip_image_config *c)
{
	strv_free(c->entrypoint);
	strv_free(c->cmd);
	strv_free(c->env);
	free(c->working_dir);
	free(c->user);
	free(c->os);
	free(c->architecture);
	free(c->variant);
	free(c->runtime_json);
	memset(c, 0, sizeof(*c));
}

/* Optional array of strings into a new NULL-terminated vector (*out NULL
 * when absent or null). */
static int get_strv(const json_t *obj, const char *key, const char *what, char ***out,
		    struct clip_err *err)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_array(v))
		return clip_err_set(err, EBADMSG, "%s: \"%s\" must be an array of strings, not %s",
				    what, key, json_type_name(v));
	size_t n = json_array_size(v);
	char **strv = calloc(n + 1, sizeof(*strv));
	if (strv == NULL)
		return clip_err_nomem(err);
	for (size_t i = 0; i < n; i++) {
		json_t *s = json_array_get(v, i);
		if (!json_is_string(s)) {
			strv_free(strv);
			return clip_err_set(err, EBADMSG,
					    "%s: \"%s\"[%zu] must be a string, not %s", what, key,
					    i, json_type_name(s));
		}
		strv[i] = strdup(json_string_value(s));
		if (strv[i] == NULL) {
			strv_free(strv);
			return clip_err_nomem(err);
		}
	}
	*out = strv;
	return 0;
}

static int dup_string(const json_t *obj, const char *key, bool required, const char *what,
		      char **out, struct clip_err *err)
{
	const char *s;
	int r = get_string(obj, key, required, what, &s, err);
	if (r < 0)
		return r;
	*out = dup_or_null(s);
	if (s != NULL && *out == NULL)
		return clip_err_nomem(err);
	return 0;
}

/* The runtime fields of a config (see clip_image_config.runtime_json) into
 * *out, a new string or NULL when there are none; -EBADMSG naming the field
 * when one has the wrong type. */
static int runtime_fields(const json_t *root, const json_t *cc, char **out, struct clip_err *err)
{
	static const struct {
		bool in_config; /* under "config", else at the top */
		const char *key;
		json_type type;
	} fields[] = {
		{ true, "Labels", JSON_OBJECT },       { true, "StopSignal", JSON_STRING },
		{ true, "ExposedPorts", JSON_OBJECT }, { true, "Volumes", JSON_OBJECT },
		{ false, "created", JSON_STRING },     { false, "author", JSON_STRING },
	};
	*out = NULL;
	json_t *o = json_object();
	if (o == NULL)
		return clip_err_nomem(err);
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		const json_t *from = fields[i].in_config ? cc : root;
		json_t *v = from ? json_object_get(from, fields[i].key) : NULL;
		if (v == NULL || json_is_null(v))
			continue;
		if (json_typeof(v) != fields[i].type) {
			json_decref(o);
			return clip_err_set(err, EBADMSG, "config: %s\"%s\" must be %s, not %s",
					    fields[i].in_config ? "config: " : "", fields[i].key,
					    fields[i].type == JSON_OBJECT ? "an object"
									  : "a string",
					    json_type_name(v));
		}
		if (strcmp(fields[i].key, "Labels") == 0) {
			const char *k;
			json_t *lv;
			json_object_foreach (v, k, lv)
				if (!json_is_string(lv)) {
					json_decref(o);
					return clip_err_set(
						err, EBADMSG,
						"config: config: Labels[\"%.100s\"] must be a "
						"string, not %s",
						k, json_type_name(lv));
				}
		}
		json_object_set(o, fields[i].key, v);
	}
	if (json_object_size(o) > 0) {
		*out = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
		if (*out == NULL) {
			json_decref(o);
			return clip_err_nomem(err);
		}
	}
	json_decref(o);
	return 0;
}

int clip_image_parse_config(const void *json, size_t len, struct clip_image *img,
			    struct clip_err *err)
{
	static const char what[] = "config";
	struct clip_image_config c;
	json_t *root = NULL;
	char **diff_ids = NULL;
	size_t ndiff = 0;
	int r;

	memset(&c, 0, sizeof(c));
	r = load_object(json, len, what, &root, err);
	if (r < 0)
		return r;

	json_t *cc, *rootfs, *jdiff;
	r = get_object(root, "config", false, what, &cc, err);
	if (r < 0)
		goto out;
	if (cc != NULL) {
		static const char cwhat[] = "config: config";
		if ((r = get_strv(cc, "Entrypoint", cwhat, &c.entrypoint, err)) < 0 ||
		    (r = get_strv(cc, "Cmd", cwhat, &c.cmd, err)) < 0 ||
		    (r = get_strv(cc, "Env", cwhat, &c.env, err)) < 0 ||
		    (r = dup_string(cc, "WorkingDir", false, cwhat, &c.working_dir, err)) < 0 ||
		    (r = dup_string(cc, "User", false, cwhat, &c.user, err)) < 0)
			goto out;
	}
	if ((r = dup_string(root, "os", true, what, &c.os, err)) < 0 ||
	    (r = dup_string(root, "architecture", true, what, &c.architecture, err)) < 0 ||
	    (r = dup_string(root, "variant", false, what, &c.variant, err)) < 0 ||
	    (r = runtime_fields(root, cc, &c.runtime_json, err)) < 0)
		goto out;

	const char *type;
	r = get_object(root, "rootfs", true, what, &rootfs, err);
	if (r < 0)
		goto out;
	if ((r = get_string(rootfs, "type", true, "config: rootfs", &type, err)) < 0)
		goto out;
	if (strcmp(type, "layers") != 0) {
		r = clip_err_set(err, EBADMSG, "config: rootfs: type is \"%.100s\", not \"layers\"",
				 type);
		goto out;
	}
	r = get_array(rootfs, "diff_ids", "config: rootfs", &jdiff, err);
	if (r < 0)
		goto out;
	size_t n = json_array_size(jdiff);
	if (n != img->nlayers) {
		r = clip_err_set(err, EBADMSG, "config: %zu diff_ids for %zu layers", n,
				 img->nlayers);
		goto out;
	}
	diff_ids = calloc(n + 1, sizeof(*diff_ids));
	if (diff_ids == NULL) {
		r = clip_err_nomem(err);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *d = json_array_get(jdiff, i);
		char dwhat[48];
		snprintf(dwhat, sizeof(dwhat), "config: rootfs: diff_ids[%zu]", i);
		if (!json_is_string(d)) {
			r = clip_err_set(err, EBADMSG, "%s: must be a string, not %s", dwhat,
					 json_type_name(d));
			goto out;
		}
		const char *s = json_string_value(d);
		int dr = digest_check(s);
		if (dr == -ENOTSUP) {
			r = clip_err_set(err, ENOTSUP,
					 "%s: unsupported digest algorithm in \"%.100s\"", dwhat,
					 s);
			goto out;
		}
		if (dr < 0) {
			r = clip_err_set(err, EBADMSG, "%s: invalid digest \"%.100s\"", dwhat, s);
			goto out;
		}
		diff_ids[i] = strdup(s);
		ndiff = i + 1;
		if (diff_ids[i] == NULL) {
			r = clip_err_nomem(err);
			goto out;
		}
	}

	config_free(&img->config);
	img->config = c;
	memset(&c, 0, sizeof(c));
	for (size_t i = 0; i < n; i++) {
		free(img->layers[i].diff_id);
		img->layers[i].diff_id = diff_ids[i];
		diff_ids[i] = NULL;
	}
	r = 0;
out:
	if (diff_ids != NULL) {
		for (size_t i = 0; i < ndiff; i++)
			free(diff_ids[i]);
		free(diff_ids);
	}
	config_free(&c);
	json_decref(root);
	return r;
}

void clip_image_clear(struct clip_image *img)
{
	if (img == NULL)
		return;
	free(img->manifest_digest);
	free(img->manifest_media_type);
	free(img->config_digest);
	layers_free(img->layers, img->nlayers);
	config_free(&img->config);
	memset(img, 0, sizeof(*img));
}
