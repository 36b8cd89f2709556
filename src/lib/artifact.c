/* Archives as OCI artifacts next to their image: push, list, fetch. */
#include "clip/artifact.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clip/archive.h"
#include "clip/version.h"
#include "format.h"
#include "sha256.h"
#include "util.h"

#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_INDEX	"application/vnd.oci.image.index.v1+json"
#define MT_EMPTY	"application/vnd.oci.empty.v1+json"
#define EMPTY_JSON	"{}"
#define ANN_CREATED	"org.opencontainers.image.created"
#define ANN_TITLE	"org.opencontainers.image.title"

/* The image manifest an archive names (its SOURCE record), as a new string. */
static int archive_subject(const struct clip_archive *a, char out[72], struct clip_err *err)
{
	const char *src = clip_archive_source_json(a);
	json_t *root = src != NULL ? json_loads(src, 0, NULL) : NULL;
	const char *m = json_string_value(json_object_get(root, "manifest"));
	int r = 0;
	if (m == NULL || !clip_digest_valid(m))
		r = clip_err_set(err, EBADMSG, "archive %s names no image manifest",
				 clip_archive_path(a));
	else
		snprintf(out, 72, "%s", m);
	json_decref(root);
	return r;
}

static int read_file(const char *path, char **out, size_t *len, struct clip_err *err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return clip_err_set(err, errno, "archive %s: %s", path, strerror(errno));
	if ((uint64_t)st.st_size > CLIP_ARTIFACT_MAX_BYTES)
		return clip_err_set(err, EFBIG,
				    "archive %s: %lld bytes, more than the %llu an "
				    "artifact may hold",
				    path, (long long)st.st_size, CLIP_ARTIFACT_MAX_BYTES);
	char *buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL)
		return clip_err_nomem(err);
	ssize_t n = clip_pread_full(fd, buf, (size_t)st.st_size, 0);
	if (n != st.st_size) {
		free(buf);
		return clip_err_set(err, n < 0 ? (int)-n : EIO, "archive %s: short read", path);
	}
	*out = buf;
	*len = (size_t)n;
	return 0;
}

/* RFC 3339 UTC of `t`. */
static void rfc3339(time_t t, char out[32])
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *descriptor(const char *media_type, const char *digest, uint64_t size)
{
	return json_pack("{s:s, s:s, s:I}", "mediaType", media_type, "digest", digest, "size",
			 (json_int_t)size);
}

/* The artifact manifest, compact with sorted keys: the same archive gives
 * the same bytes, hence the same digest, however often it is pushed. */
static char *artifact_manifest(const struct clip_registry_document *subject,
			       const char *blob_digest, uint64_t blob_size, unsigned format,
			       const char *created)
{
	char empty_digest[72], layer_type[64], format_text[16];
	clip_digest_of(EMPTY_JSON, strlen(EMPTY_JSON), empty_digest);
	snprintf(layer_type, sizeof(layer_type), "%s%u", CLIP_ARTIFACT_LAYER_PREFIX, format);
	snprintf(format_text, sizeof(format_text), "%u", format);
	json_t *config = descriptor(MT_EMPTY, empty_digest, strlen(EMPTY_JSON));
	json_t *layer = descriptor(layer_type, blob_digest, blob_size);
	json_t *subj = descriptor(subject->media_type, subject->digest, subject->len);
	json_t *root = NULL;
	if (config && layer && subj) {
		json_object_set_new(config, "data", json_string("e30="));
		json_object_set_new(layer, "annotations",
				    json_pack("{s:s}", ANN_TITLE, "image.clip"));
		root = json_pack("{s:i, s:s, s:s, s:o, s:[o], s:o, s:{s:s, s:s, s:s}}",
				 "schemaVersion", 2, "mediaType", MT_OCI_MANIFEST, "artifactType",
				 CLIP_ARTIFACT_TYPE, "config", config, "layers", layer, "subject",
				 subj, "annotations", CLIP_ARTIFACT_ANN_FORMAT, format_text,
				 CLIP_ARTIFACT_ANN_VERSION, CLIP_VERSION, ANN_CREATED, created);
		config = layer = subj = NULL; /* the pack took them, or freed them */
	}
	json_decref(config);
	json_decref(layer);
	json_decref(subj);
	char *out = root ? json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(root);
	return out;
}

/* The fallback tag of image manifest `digest`: "sha256-<hex>". */
static void fallback_tag(const char *digest, char out[80])
{
	snprintf(out, 80, "sha256-%s", digest + 7);
}

/* Whether index `manifests` lists `digest`. */
static bool index_has(json_t *manifests, const char *digest)
{
	for (size_t i = 0; i < json_array_size(manifests); i++) {
		const char *d =
			json_string_value(json_object_get(json_array_get(manifests, i), "digest"));
		if (d != NULL && strcmp(d, digest) == 0)
			return true;
	}
	return false;
}

/* Random 50-150 ms: long enough that a racing writer that read the index
 * before our write has written its own by then, so that reading it again
 * tells whether ours survived. */
static void settle(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	unsigned ms = 50 + (unsigned)((ts.tv_nsec / 1000 + getpid()) % 100);
	struct timespec d = { .tv_sec = 0, .tv_nsec = (long)ms * 1000000L };
	nanosleep(&d, NULL);
}

/* Add the artifact to the fallback tag's index of `subject`: read, add,
 * write, then read again until it is seen there. */
static int fallback_add(struct clip_registry *reg, const char *subject, const char *manifest,
			const char *digest, struct clip_err *err)
{
	char tag[80];
	fallback_tag(subject, tag);
	json_t *entry = json_loads(manifest, 0, NULL);
	if (entry == NULL)
		return clip_err_nomem(err);
	/* The descriptor an index lists: what the referrers API would give. */
	json_t *desc = descriptor(MT_OCI_MANIFEST, digest, strlen(manifest));
	if (desc == NULL) {
		json_decref(entry);
		return clip_err_nomem(err);
	}
	json_object_set(desc, "artifactType", json_object_get(entry, "artifactType"));
	json_object_set(desc, "annotations", json_object_get(entry, "annotations"));
	json_decref(entry);

	int r = -EAGAIN;
	for (int attempt = 0; attempt < CLIP_ARTIFACT_FALLBACK_TRIES; attempt++) {
		struct clip_registry_document doc = { 0 };
		r = clip_registry_manifest_get(reg, tag, &doc, err);
		json_t *index = NULL;
		if (r == -ENOENT) {
			index = json_pack("{s:i, s:s, s:[]}", "schemaVersion", 2, "mediaType",
					  MT_OCI_INDEX, "manifests");
			r = index ? 0 : clip_err_nomem(err);
		} else if (r == 0) {
			index = json_loadb(doc.body, doc.len, 0, NULL);
			if (!json_is_array(json_object_get(index, "manifests")))
				r = clip_err_set(err, EBADMSG,
						 "registry %s: tag %s is not an image index, "
						 "cannot list referrers there",
						 clip_registry_name(reg), tag);
		}
		json_t *manifests = json_object_get(index, "manifests");
		if (r == 0 && index_has(manifests, digest)) {
			json_decref(index);
			clip_registry_document_clear(&doc);
			break; /* there: written now, or by an earlier push */
		}
		char *text = NULL;
		if (r == 0) {
			json_array_append(manifests, desc);
			text = json_dumps(index, JSON_COMPACT);
			if (text == NULL)
				r = clip_err_nomem(err);
		}
		if (r == 0)
			r = clip_registry_manifest_put(reg, tag, MT_OCI_INDEX, text, strlen(text),
						       doc.etag, NULL, err);
		free(text);
		json_decref(index);
		clip_registry_document_clear(&doc);
		if (r < 0 && r != -EAGAIN)
			break;
		settle();
		r = -EAGAIN;
	}
	json_decref(desc);
	if (r == -EAGAIN)
		clip_err_set(err, EAGAIN,
			     "registry %s: tag %s: the artifact was replaced by other writers "
			     "%d times in a row",
			     clip_registry_name(reg), tag, CLIP_ARTIFACT_FALLBACK_TRIES);
	return r;
}

int clip_artifact_push(struct clip_registry *reg, const char *path,
		       struct clip_artifact_pushed *out, struct clip_err *err)
{
	struct clip_err scratch;
	if (err == NULL)
		err = &scratch;
	struct clip_artifact_pushed res = { 0 };
	struct clip_archive *a = NULL;
	int r = clip_archive_open(path, &a, err);
	if (r < 0)
		return r;
	struct clip_archive_stats st;
	clip_archive_stats(a, &st);
	r = archive_subject(a, res.subject, err);
	clip_archive_close(a);
	if (r < 0)
		return r;
	struct stat sb;
	if (stat(path, &sb) < 0)
		return clip_err_set(err, errno, "archive %s: %s", path, strerror(errno));
	cleanup_free char *data = NULL;
	size_t len = 0;
	r = read_file(path, &data, &len, err);
	if (r < 0)
		return r;
	clip_digest_of(data, len, res.blob_digest);

	struct clip_registry_document subject = { 0 };
	r = clip_registry_manifest_get(reg, res.subject, &subject, err);
	if (r == -ENOENT)
		return clip_err_set(err, ENOENT,
				    "registry %s: image manifest %s, which archive %s indexes, is "
				    "not in this repository (push the image first, or push the "
				    "archive to the repository that has it)",
				    clip_registry_name(reg), res.subject, path);
	if (r < 0)
		return r;
	char empty_digest[72], created[32];
	clip_digest_of(EMPTY_JSON, strlen(EMPTY_JSON), empty_digest);
	/* The file's time, not now: pushing one file again gives one manifest. */
	rfc3339(sb.st_mtime, created);
	cleanup_free char *manifest =
		artifact_manifest(&subject, res.blob_digest, len, st.version, created);
	clip_registry_document_clear(&subject);
	if (manifest == NULL)
		return clip_err_nomem(err);
	clip_digest_of(manifest, strlen(manifest), res.digest);

	r = clip_registry_blob_put(reg, empty_digest, EMPTY_JSON, strlen(EMPTY_JSON), err);
	if (r == 0)
		r = clip_registry_blob_put(reg, res.blob_digest, data, len, err);
	if (r == 0)
		r = clip_registry_manifest_put(reg, res.digest, MT_OCI_MANIFEST, manifest,
					       strlen(manifest), NULL, &res.referrers_api, err);
	if (r == 0 && !res.referrers_api) {
		r = fallback_add(reg, res.subject, manifest, res.digest, err);
		res.fallback_tag = r == 0;
	}
	if (r < 0)
		return r;
	if (out != NULL)
		*out = res;
	return 0;
}

/* ---- listing ------------------------------------------------------------- */

void clip_artifact_list_clear(struct clip_artifact_list *list)
{
	for (size_t i = 0; i < list->n; i++)
		free(list->items[i].created);
	free(list->items);
	memset(list, 0, sizeof(*list));
}

static unsigned parse_format(const char *s)
{
	if (s == NULL || *s < '1' || *s > '9' || strlen(s) > 6)
		return 0;
	char *end;
	unsigned long v = strtoul(s, &end, 10);
	return *end == '\0' ? (unsigned)v : 0;
}

static bool list_has(const struct clip_artifact_list *l, const char *digest)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->items[i].digest, digest) == 0)
			return true;
	return false;
}

static int list_from_index(const char *body, size_t len, struct clip_artifact_list *out,
			   struct clip_err *err)
{
	json_error_t je;
	json_t *root = json_loadb(body, len, 0, &je);
	json_t *manifests = json_object_get(root, "manifests");
	if (!json_is_array(manifests)) {
		json_decref(root);
		return clip_err_set(err, EBADMSG, "not an image index: %s",
				    root ? "no \"manifests\" array" : je.text);
	}
	size_t cap = json_array_size(manifests);
	out->items = calloc(cap ? cap : 1, sizeof(*out->items));
	if (out->items == NULL) {
		json_decref(root);
		return clip_err_nomem(err);
	}
	for (size_t i = 0; i < cap; i++) {
		json_t *e = json_array_get(manifests, i);
		const char *type = json_string_value(json_object_get(e, "artifactType"));
		const char *d = json_string_value(json_object_get(e, "digest"));
		json_t *size = json_object_get(e, "size");
		if (type == NULL || strcmp(type, CLIP_ARTIFACT_TYPE) != 0 || d == NULL ||
		    !clip_digest_valid(d) || !json_is_integer(size) ||
		    json_integer_value(size) <= 0 || list_has(out, d))
			continue;
		json_t *ann = json_object_get(e, "annotations");
		struct clip_artifact_candidate *c = &out->items[out->n];
		snprintf(c->digest, sizeof(c->digest), "%s", d);
		c->size = (uint64_t)json_integer_value(size);
		c->format = parse_format(
			json_string_value(json_object_get(ann, CLIP_ARTIFACT_ANN_FORMAT)));
		const char *created = json_string_value(json_object_get(ann, ANN_CREATED));
		if (created != NULL && (c->created = strdup(created)) == NULL) {
			json_decref(root);
			return clip_err_nomem(err);
		}
		out->n++;
	}
	json_decref(root);
	return 0;
}

int clip_artifact_list(struct clip_registry *reg, const char *manifest_digest,
		       struct clip_artifact_list *out, struct clip_err *err)
{
	struct clip_err scratch;
	if (err == NULL)
		err = &scratch;
	if (manifest_digest == NULL || !clip_digest_valid(manifest_digest))
		return clip_err_set(err, EINVAL, "invalid image manifest digest \"%.100s\"",
				    manifest_digest ? manifest_digest : "(null)");
	struct clip_artifact_list list = { 0 };
	struct clip_registry_document doc = { 0 };
	int r = clip_registry_referrers(reg, manifest_digest, CLIP_ARTIFACT_TYPE, &doc, NULL, err);
	if (r == 0) {
		list.referrers_api = true;
	} else if (r == -ENOENT) {
		char tag[80];
		fallback_tag(manifest_digest, tag);
		r = clip_registry_manifest_get(reg, tag, &doc, err);
		if (r == -ENOENT) {
			*out = list; /* no archive listed */
			return 0;
		}
	}
	if (r == 0) {
		r = list_from_index(doc.body, doc.len, &list, err);
		if (r < 0)
			clip_err_prefix(err, "registry %s: referrers of %s",
					clip_registry_name(reg), manifest_digest);
	}
	clip_registry_document_clear(&doc);
	if (r < 0) {
		clip_artifact_list_clear(&list);
		return r;
	}
	clip_artifact_list_rank(&list, CLIP_FORMAT_VERSION);
	*out = list;
	return 0;
}

static int candidate_cmp(const void *pa, const void *pb, void *opaque)
{
	const struct clip_artifact_candidate *a = pa, *b = pb;
	unsigned max_format = *(const unsigned *)opaque;
	bool ra = a->format >= 1 && a->format <= max_format;
	bool rb = b->format >= 1 && b->format <= max_format;
	if (ra != rb)
		return ra ? -1 : 1;
	if (a->format != b->format)
		return a->format > b->format ? -1 : 1;
	/* RFC 3339 times in one zone sort as strings; none is oldest. */
	const char *ca = a->created ? a->created : "", *cb = b->created ? b->created : "";
	int c = strcmp(ca, cb);
	if (c != 0)
		return c > 0 ? -1 : 1;
	return strcmp(a->digest, b->digest);
}

void clip_artifact_list_rank(struct clip_artifact_list *list, unsigned max_format)
{
	if (list->n > 1)
		qsort_r(list->items, list->n, sizeof(*list->items), candidate_cmp, &max_format);
}

/* ---- fetching ------------------------------------------------------------ */

/* What an artifact manifest says, once checked against the image wanted. */
struct artifact_blob {
	char digest[72];
	uint64_t size;
	unsigned format;
};

static int parse_artifact(const struct clip_registry_document *doc, const char *manifest_digest,
			  struct artifact_blob *out, struct clip_err *err)
{
	json_error_t je;
	json_t *root = json_loadb(doc->body, doc->len, 0, &je);
	int r = 0;
	const char *type = json_string_value(json_object_get(root, "artifactType"));
	json_t *layers = json_object_get(root, "layers");
	json_t *layer = json_array_get(layers, 0);
	const char *subject =
		json_string_value(json_object_get(json_object_get(root, "subject"), "digest"));
	const char *lt = json_string_value(json_object_get(layer, "mediaType"));
	const char *ld = json_string_value(json_object_get(layer, "digest"));
	json_t *ls = json_object_get(layer, "size");
	if (root == NULL)
		r = clip_err_set(err, EBADMSG, "invalid JSON: %s", je.text);
	else if (type == NULL || strcmp(type, CLIP_ARTIFACT_TYPE) != 0)
		r = clip_err_set(err, EBADMSG, "artifact type is \"%.100s\", not %s",
				 type ? type : "(none)", CLIP_ARTIFACT_TYPE);
	else if (subject == NULL || strcmp(subject, manifest_digest) != 0)
		r = clip_err_set(err, EBADMSG, "refers to image %.80s, not %s",
				 subject ? subject : "(none)", manifest_digest);
	else if (json_array_size(layers) != 1 || lt == NULL || ld == NULL ||
		 !clip_digest_valid(ld) || !json_is_integer(ls) || json_integer_value(ls) <= 0)
		r = clip_err_set(err, EBADMSG,
				 "expected exactly one archive layer with a "
				 "digest and a size");
	else if (strncmp(lt, CLIP_ARTIFACT_LAYER_PREFIX, strlen(CLIP_ARTIFACT_LAYER_PREFIX)) != 0 ||
		 (out->format = parse_format(lt + strlen(CLIP_ARTIFACT_LAYER_PREFIX))) == 0)
		r = clip_err_set(err, EBADMSG, "layer media type \"%.100s\" is not %s<N>", lt,
				 CLIP_ARTIFACT_LAYER_PREFIX);
	else if (out->format > CLIP_FORMAT_VERSION)
		r = clip_err_set(err, ENOTSUP,
				 "archive format %u; this clip (%s) reads formats 1 to %u",
				 out->format, CLIP_VERSION, CLIP_FORMAT_VERSION);
	else if ((uint64_t)json_integer_value(ls) > CLIP_ARTIFACT_MAX_BYTES)
		r = clip_err_set(err, EFBIG, "archive of %lld bytes, more than %llu",
				 (long long)json_integer_value(ls), CLIP_ARTIFACT_MAX_BYTES);
	if (r == 0) {
		snprintf(out->digest, sizeof(out->digest), "%s", ld);
		out->size = (uint64_t)json_integer_value(ls);
	}
	json_decref(root);
	return r;
}

/* Stream the blob into `fd`, hashing it: its digest must be `b->digest`. */
static int download(struct clip_registry *reg, const struct artifact_blob *b, int fd,
		    struct clip_err *err)
{
	struct clip_stream s;
	int r = clip_registry_blob_stream(reg, b->digest, b->size, &s, err);
	if (r < 0)
		return r;
	struct clip_sha256 h;
	clip_sha256_init(&h);
	enum { BUF = 256 << 10 };
	unsigned char *buf = malloc(BUF);
	uint64_t total = 0;
	if (buf == NULL)
		r = clip_err_nomem(err);
	while (r == 0) {
		ssize_t n = s.read(s.opaque, buf, BUF, err);
		if (n < 0) {
			r = (int)n;
			break;
		}
		if (n == 0)
			break;
		clip_sha256_update(&h, buf, (size_t)n);
		total += (uint64_t)n;
		r = clip_write_full(fd, buf, (size_t)n);
		if (r < 0)
			r = clip_err_set(err, -r, "writing: %s", strerror(-r));
	}
	s.close(s.opaque);
	free(buf);
	if (r < 0)
		return r;
	unsigned char md[CLIP_SHA256_LEN];
	clip_sha256_final(&h, md);
	char got[72] = "sha256:";
	for (int i = 0; i < CLIP_SHA256_LEN; i++)
		snprintf(got + 7 + 2 * i, 3, "%02x", md[i]);
	if (total != b->size)
		return clip_err_set(err, EBADMSG, "archive blob is %llu bytes, manifest says %llu",
				    (unsigned long long)total, (unsigned long long)b->size);
	if (strcmp(got, b->digest) != 0)
		return clip_err_set(err, EBADMSG, "archive blob digest mismatch: got %s", got);
	return 0;
}

/* The downloaded file must be an archive of the format announced that
 * indexes the image wanted. */
static int check_archive(const char *tmp, const struct artifact_blob *b,
			 const char *manifest_digest, struct clip_err *err)
{
	struct clip_archive *a = NULL;
	int r = clip_archive_open(tmp, &a, err);
	if (r < 0 && r != -ENOTSUP) {
		/* Whatever made it unreadable, for the caller it is a bad artifact. */
		char why[sizeof(err->msg)];
		snprintf(why, sizeof(why), "%s", err->msg);
		return clip_err_set(err, EBADMSG, "%s", why);
	}
	if (r < 0)
		return r;
	struct clip_archive_stats st;
	clip_archive_stats(a, &st);
	char subject[72];
	r = archive_subject(a, subject, err);
	if (r == 0 && st.version != b->format)
		r = clip_err_set(err, EBADMSG, "archive is format %u, its media type says %u",
				 st.version, b->format);
	if (r == 0 && strcmp(subject, manifest_digest) != 0)
		r = clip_err_set(err, EBADMSG, "the archive indexes image %s, not %s", subject,
				 manifest_digest);
	clip_archive_close(a);
	return r;
}

int clip_artifact_fetch(struct clip_registry *reg, const char *artifact_digest,
			const char *manifest_digest, const char *path, uint64_t *bytes,
			struct clip_err *err)
{
	struct clip_err scratch;
	if (err == NULL)
		err = &scratch;
	if (artifact_digest == NULL || !clip_digest_valid(artifact_digest) ||
	    manifest_digest == NULL || !clip_digest_valid(manifest_digest))
		return clip_err_set(err, EINVAL, "artifact: invalid digest");
	struct clip_registry_document doc = { 0 };
	struct artifact_blob b = { 0 };
	int r = clip_registry_manifest_get(reg, artifact_digest, &doc, err);
	if (r == 0)
		r = parse_artifact(&doc, manifest_digest, &b, err);
	clip_registry_document_clear(&doc);
	if (r < 0)
		return clip_err_prefix(err, "artifact %s", artifact_digest);

	cleanup_free char *tmp = NULL;
	if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0)
		return clip_err_nomem(err);
	int fd = mkstemp(tmp);
	if (fd < 0)
		return clip_err_set(err, errno, "%s: %s", tmp, strerror(errno));
	r = download(reg, &b, fd, err);
	if (r == 0 && fsync(fd) < 0)
		r = clip_err_set(err, errno, "%s: fsync: %s", tmp, strerror(errno));
	if (r == 0 && fchmod(fd, 0644) < 0)
		r = clip_err_set(err, errno, "%s: chmod: %s", tmp, strerror(errno));
	close(fd);
	if (r == 0)
		r = check_archive(tmp, &b, manifest_digest, err);
	if (r == 0 && rename(tmp, path) < 0)
		r = clip_err_set(err, errno, "rename to %s: %s", path, strerror(errno));
	if (r < 0) {
		unlink(tmp);
		return clip_err_prefix(err, "artifact %s", artifact_digest);
	}
	if (bytes != NULL)
		*bytes = b.size;
	return 0;
}
