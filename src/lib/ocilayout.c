/* clip: a local OCI image layout.
 *
 * index.json names images; everything else is a content-addressed blob under
 * blobs/sha256/. Nothing in the directory is trusted: every blob read here is
 * bounded by CLIP_IMAGE_MAX_JSON, must have exactly the size its descriptor
 * gives, and must hash to its name before it is parsed. Layer blobs are only
 * opened (clip_oci_layout_open_blob); their digests are checked by whoever
 * streams them.
 */
#include "clip/ocilayout.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define REF_NAME_ANNOTATION "org.opencontainers.image.ref.name"
#define OCI_LAYOUT_MAX	    (64u << 10)
#define MAX_NESTED_INDEXES  4

struct clip_oci_layout {
	char *dir;
	int dirfd;
};

/* A descriptor taken out of an index; owns its strings so that it outlives
 * the JSON it came from. */
struct descriptor {
	char digest[72];
	char *media_type;
	uint64_t size;
};

static void descriptor_clear(struct descriptor *d)
{
	free(d->media_type);
	memset(d, 0, sizeof(*d));
}

/* ---- references ------------------------------------------------------- */

static bool is_ascii_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* The ref.name grammar skopeo checks (OCI annotations.md):
 * component ("/" component)*, component = alnum+ (separator alnum+)*,
 * separator = one of - . _ : @ + or "--". */
static bool ref_name_valid(const char *s)
{
	for (;;) {
		if (!is_ascii_alnum(*s))
			return false;
		while (is_ascii_alnum(*s))
			s++;
		if (*s == '\0')
			return true;
		if (s[0] == '-' && s[1] == '-')
			s += 2;
		else if (strchr("-._:@+/", *s) != NULL)
			s++;
		else
			return false;
	}
}

int clip_oci_layout_parse_ref(const char *ref, char **dir, char **tag, struct clip_err *err)
{
	static const char prefix[] = "oci:";

	if (ref == NULL || strncmp(ref, prefix, sizeof(prefix) - 1) != 0)
		return clip_err_set(err, EINVAL,
				    "reference \"%.200s\": does not start with \"oci:\"",
				    ref != NULL ? ref : "(null)");
	const char *path = ref + sizeof(prefix) - 1;
	const char *colon = strchr(path, ':');
	size_t path_len = colon != NULL ? (size_t)(colon - path) : strlen(path);
	if (path_len == 0)
		return clip_err_set(err, EINVAL, "reference \"%.200s\": no directory", ref);
	const char *name = colon != NULL && colon[1] != '\0' ? colon + 1 : NULL;
	if (name != NULL && !ref_name_valid(name))
		return clip_err_set(err, EINVAL, "reference \"%.200s\": invalid tag \"%.200s\"",
				    ref, name);

	cleanup_free char *d = clip_strdup_len(path, path_len);
	cleanup_free char *t = name != NULL ? strdup(name) : NULL;
	if (d == NULL || (name != NULL && t == NULL))
		return clip_err_nomem(err);
	*dir = clip_steal(d);
	*tag = clip_steal(t);
	return 0;
}

/* ---- files ------------------------------------------------------------ */

/* Read all of the regular file open at `fd`, at most `max` bytes, into a new
 * NUL-terminated buffer. */
static int read_fd(int fd, size_t max, char **buf, size_t *len, struct clip_err *err)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return clip_err_errno(err, errno, "stat");
	if (!S_ISREG(st.st_mode))
		return clip_err_set(err, EINVAL, "not a regular file");
	if ((uint64_t)st.st_size > max)
		return clip_err_set(err, EFBIG, "%llu bytes is more than the limit of %zu",
				    (unsigned long long)st.st_size, max);
	size_t size = (size_t)st.st_size;
	/* One byte more than expected so that a file that grew is noticed. */
	cleanup_free char *b = malloc(size + 2);
	if (b == NULL)
		return clip_err_nomem(err);
	size_t got = 0;
	while (got < size + 1) {
		ssize_t n = read(fd, b + got, size + 1 - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return clip_err_errno(err, errno, "read");
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got != size)
		return clip_err_set(err, EIO, "changed size while being read");
	b[got] = '\0';
	*buf = clip_steal(b);
	*len = got;
	return 0;
}

/* Open `path` under `dirfd` read-only; -EINVAL when it is not a regular
 * file. O_NONBLOCK keeps a FIFO planted in the layout from hanging the open;
 * it is cleared again so that callers get an ordinary descriptor. */
static int open_regular(int dirfd, const char *path, int *out)
{
	cleanup_close int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
		return -errno;
	*out = clip_steal_fd(fd);
	return 0;
}

static int read_file_at(int dirfd, const char *name, size_t max, char **buf, size_t *len,
			struct clip_err *err)
{
	cleanup_close int fd = -1;
	int r = open_regular(dirfd, name, &fd);
	if (r == -ENOENT)
		return clip_err_set(err, ENOENT, "%s: not found", name);
	if (r == -EINVAL)
		return clip_err_set(err, EINVAL, "%s: not a regular file", name);
	if (r < 0)
		return clip_err_errno(err, r, "%s", name);
	r = read_fd(fd, max, buf, len, err);
	if (r < 0)
		return clip_err_prefix(err, "%s", name);
	return 0;
}

static int load_object(const char *buf, size_t len, const char *what, json_t **out,
		       struct clip_err *err)
{
	json_error_t jerr;
	json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL)
		return clip_err_set(err, EBADMSG, "%s: invalid JSON at line %d column %d: %s", what,
				    jerr.line, jerr.column, jerr.text);
	if (!json_is_object(root)) {
		json_decref(root);
		return clip_err_set(err, EBADMSG, "%s: expected a JSON object", what);
	}
	*out = root;
	return 0;
}

/* ---- layout ----------------------------------------------------------- */

int clip_oci_layout_open(const char *dir, struct clip_oci_layout **out, struct clip_err *err)
{
	if (dir == NULL || dir[0] == '\0')
		return clip_err_set(err, EINVAL, "oci layout: no directory given");

	cleanup_close int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return clip_err_errno(err, errno, "oci layout %s", dir);

	cleanup_free char *buf = NULL;
	size_t len;
	int r = read_file_at(dirfd, "oci-layout", OCI_LAYOUT_MAX, &buf, &len, err);
	if (r == -ENOENT)
		return clip_err_set(err, ENOENT,
				    "oci layout %s: no oci-layout file (not an OCI image layout)",
				    dir);
	if (r < 0)
		return clip_err_prefix(err, "oci layout %s", dir);

	json_t *root;
	r = load_object(buf, len, "oci-layout", &root, err);
	if (r < 0)
		return clip_err_prefix(err, "oci layout %s", dir);
	json_t *v = json_object_get(root, "imageLayoutVersion");
	if (!json_is_string(v)) {
		json_decref(root);
		return clip_err_set(err, EBADMSG,
				    "oci layout %s: oci-layout: \"imageLayoutVersion\" is missing "
				    "or not a string",
				    dir);
	}
	/* Image-spec 1.x all write "1.0.0"; a new major version may change the
	 * layout under us. */
	if (strncmp(json_string_value(v), "1.", 2) != 0) {
		r = clip_err_set(err, ENOTSUP,
				 "oci layout %s: unsupported imageLayoutVersion \"%.50s\"", dir,
				 json_string_value(v));
		json_decref(root);
		return r;
	}
	json_decref(root);

	struct stat st;
	if (fstatat(dirfd, "index.json", &st, 0) < 0) {
		if (errno == ENOENT)
			return clip_err_set(err, ENOENT, "oci layout %s: no index.json", dir);
		return clip_err_errno(err, errno, "oci layout %s: index.json", dir);
	}
	if (!S_ISREG(st.st_mode))
		return clip_err_set(err, EINVAL, "oci layout %s: index.json: not a regular file",
				    dir);

	struct clip_oci_layout *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return clip_err_nomem(err);
	l->dir = strdup(dir);
	if (l->dir == NULL) {
		free(l);
		return clip_err_nomem(err);
	}
	l->dirfd = clip_steal_fd(dirfd);
	*out = l;
	return 0;
}

void clip_oci_layout_free(struct clip_oci_layout *layout)
{
	if (layout == NULL)
		return;
	if (layout->dirfd >= 0)
		close(layout->dirfd);
	free(layout->dir);
	free(layout);
}

const char *clip_oci_layout_dir(const struct clip_oci_layout *layout)
{
	return layout->dir;
}

/* open_blob without the layout's name in errors (resolve adds its own). */
static int open_blob(struct clip_oci_layout *layout, const char *digest, int *fd,
		     struct clip_err *err)
{
	if (!clip_digest_valid(digest))
		return clip_err_set(err, EINVAL, "invalid digest \"%.100s\"",
				    digest != NULL ? digest : "(null)");
	/* The digest is 64 hex digits, so the path cannot leave blobs/. */
	char path[96];
	snprintf(path, sizeof(path), "blobs/sha256/%s", digest + strlen("sha256:"));
	int r = open_regular(layout->dirfd, path, fd);
	if (r == -ENOENT)
		return clip_err_set(err, ENOENT, "blob %s not found", digest);
	if (r == -EINVAL)
		return clip_err_set(err, EINVAL, "blob %s: not a regular file", digest);
	if (r < 0)
		return clip_err_errno(err, r, "blob %s", digest);
	return 0;
}

int clip_oci_layout_open_blob(struct clip_oci_layout *layout, const char *digest, int *fd,
			      struct clip_err *err)
{
	int r = open_blob(layout, digest, fd, err);
	if (r < 0)
		return clip_err_prefix(err, "oci layout %s", layout->dir);
	return 0;
}

/* Read the blob `d` names, which must have the descriptor's size and digest. */
static int read_blob(struct clip_oci_layout *layout, const struct descriptor *d, char **buf,
		     size_t *len, struct clip_err *err)
{
	if (d->size > CLIP_IMAGE_MAX_JSON)
		return clip_err_set(err, EFBIG, "descriptor size %llu is more than the limit of %u",
				    (unsigned long long)d->size, CLIP_IMAGE_MAX_JSON);
	cleanup_close int fd = -1;
	int r = open_blob(layout, d->digest, &fd, err);
	if (r < 0)
		return r;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return clip_err_errno(err, errno, "blob %s", d->digest);
	if ((uint64_t)st.st_size != d->size)
		return clip_err_set(err, EBADMSG, "blob is %llu bytes, descriptor says %llu",
				    (unsigned long long)st.st_size, (unsigned long long)d->size);
	cleanup_free char *b = NULL;
	r = read_fd(fd, (size_t)d->size, &b, len, err);
	if (r < 0)
		return clip_err_prefix(err, "blob %s", d->digest);
	r = clip_digest_verify(b, *len, d->digest, err);
	if (r < 0)
		return r;
	*buf = clip_steal(b);
	return 0;
}

/* ---- index.json ------------------------------------------------------- */

/* Fill *d from the index entry `entry`; `what` names it in errors. */
static int descriptor_from(const json_t *entry, const char *what, struct descriptor *d,
			   struct clip_err *err)
{
	if (!json_is_object(entry))
		return clip_err_set(err, EBADMSG, "%s: expected an object", what);
	json_t *digest = json_object_get(entry, "digest");
	json_t *mt = json_object_get(entry, "mediaType");
	json_t *size = json_object_get(entry, "size");
	if (!json_is_string(digest))
		return clip_err_set(err, EBADMSG, "%s: \"digest\" is missing or not a string",
				    what);
	const char *ds = json_string_value(digest);
	if (!clip_digest_valid(ds)) {
		/* clip_digest_verify tells a malformed digest (-EINVAL) from another
		 * algorithm's (-ENOTSUP) before it hashes anything. */
		if (clip_digest_verify("", 0, ds, NULL) == -ENOTSUP)
			return clip_err_set(err, ENOTSUP,
					    "%s: unsupported digest algorithm in \"%.100s\"", what,
					    ds);
		return clip_err_set(err, EBADMSG, "%s: invalid digest \"%.100s\"", what, ds);
	}
	if (!json_is_string(mt))
		return clip_err_set(err, EBADMSG, "%s: \"mediaType\" is missing or not a string",
				    what);
	if (!json_is_integer(size) || json_integer_value(size) < 0)
		return clip_err_set(err, EBADMSG,
				    "%s: \"size\" is missing or not a non-negative integer", what);
	char *m = strdup(json_string_value(mt));
	if (m == NULL)
		return clip_err_nomem(err);
	descriptor_clear(d);
	snprintf(d->digest, sizeof(d->digest), "%s", ds);
	d->media_type = m;
	d->size = (uint64_t)json_integer_value(size);
	return 0;
}

/* The ref.name annotation of an index entry (borrowed, NULL when none). */
static int entry_ref_name(const json_t *entry, size_t i, const char **out, struct clip_err *err)
{
	*out = NULL;
	if (!json_is_object(entry))
		return clip_err_set(err, EBADMSG, "index.json: manifests[%zu]: expected an object",
				    i);
	json_t *ann = json_object_get(entry, "annotations");
	if (ann == NULL || json_is_null(ann))
		return 0;
	if (!json_is_object(ann))
		return clip_err_set(err, EBADMSG,
				    "index.json: manifests[%zu]: \"annotations\" must be an object",
				    i);
	json_t *name = json_object_get(ann, REF_NAME_ANNOTATION);
	if (name == NULL)
		return 0;
	if (!json_is_string(name))
		return clip_err_set(err, EBADMSG,
				    "index.json: manifests[%zu]: annotation %s must be a string", i,
				    REF_NAME_ANNOTATION);
	*out = json_string_value(name);
	return 0;
}

/* "a, b, <untagged>" for error messages; cut with "..." when long. */
static void list_tags(const json_t *manifests, char *buf, size_t cap)
{
	size_t len = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < json_array_size(manifests); i++) {
		json_t *entry = json_array_get(manifests, i);
		const char *name;
		if (entry_ref_name(entry, i, &name, NULL) < 0)
			name = NULL;
		int n = snprintf(buf + len, cap - len, "%s%.100s", len > 0 ? ", " : "",
				 name != NULL ? name : "<untagged>");
		if (n < 0 || (size_t)n + 6 > cap - len) {
			snprintf(buf + len, cap - len, "%s", len > 0 ? ", ..." : "...");
			return;
		}
		len += (size_t)n;
	}
}

/* clip_image_index_select names the entry it chose by digest and media type;
 * find it again (the first such) for the rest of the descriptor. */
static json_t *find_entry(const json_t *manifests, const char *digest, const char *media_type,
			  size_t *index)
{
	for (size_t i = 0; i < json_array_size(manifests); i++) {
		json_t *entry = json_array_get(manifests, i);
		json_t *dg = json_object_get(entry, "digest");
		json_t *mt = json_object_get(entry, "mediaType");
		if (json_is_string(dg) && strcmp(json_string_value(dg), digest) == 0 &&
		    json_is_string(mt) && strcmp(json_string_value(mt), media_type) == 0) {
			*index = i;
			return entry;
		}
	}
	return NULL;
}

/* Several entries fit the reference but each names a platform (a multi-arch
 * image written entry by entry): choose among them as in an image index. */
static int pick_by_platform(json_t *cands, const struct clip_platform *platform,
			    struct descriptor *d, struct clip_err *err)
{
	json_t *index = json_pack("{sO}", "manifests", cands);
	if (index == NULL)
		return clip_err_nomem(err);
	cleanup_free char *text = json_dumps(index, JSON_COMPACT);
	json_decref(index);
	if (text == NULL)
		return clip_err_nomem(err);
	cleanup_free char *digest = NULL;
	cleanup_free char *media_type = NULL;
	int r = clip_image_index_select(text, strlen(text), platform, &digest, &media_type, err);
	if (r < 0)
		return clip_err_prefix(err, "index.json");

	size_t i;
	json_t *entry = find_entry(cands, digest, media_type, &i);
	if (entry == NULL)
		return clip_err_set(err, EIO, "index.json: selected entry %s vanished", digest);
	return descriptor_from(entry, "index.json", d, err);
}

static bool all_have_platforms(const json_t *cands)
{
	for (size_t i = 0; i < json_array_size(cands); i++) {
		json_t *entry = json_array_get(cands, i);
		if (!json_is_object(json_object_get(entry, "platform")))
			return false;
	}
	return true;
}

/* Choose the descriptor in index.json that `tag` (or the default rule) names. */
static int pick_from_index_json(struct clip_oci_layout *layout, const char *tag,
				const struct clip_platform *platform, struct descriptor *d,
				struct clip_err *err)
{
	cleanup_free char *buf = NULL;
	size_t len;
	int r = read_file_at(layout->dirfd, "index.json", CLIP_IMAGE_MAX_JSON, &buf, &len, err);
	if (r < 0)
		return r;
	json_t *root = NULL, *cands = NULL;
	r = load_object(buf, len, "index.json", &root, err);
	if (r < 0)
		return r;

	json_t *mt = json_object_get(root, "mediaType");
	json_t *manifests = json_object_get(root, "manifests");
	if (mt != NULL &&
	    !(json_is_string(mt) && clip_media_type_is_index(json_string_value(mt)))) {
		r = clip_err_set(err, EBADMSG, "index.json: \"mediaType\" is not an image index");
		goto out;
	}
	if (!json_is_array(manifests)) {
		r = clip_err_set(err, EBADMSG,
				 "index.json: \"manifests\" is missing or not an array");
		goto out;
	}
	size_t n = json_array_size(manifests);
	if (n == 0) {
		r = clip_err_set(err, ENOENT, "index.json lists no images");
		goto out;
	}

	cands = json_array();
	if (cands == NULL) {
		r = clip_err_nomem(err);
		goto out;
	}
	const char *want = tag;
	if (want == NULL && n == 1) {
		if (json_array_append(cands, json_array_get(manifests, 0)) < 0) {
			r = clip_err_nomem(err);
			goto out;
		}
	} else {
		/* Without a tag, "latest" is what docker and skopeo would pick. */
		if (want == NULL)
			want = "latest";
		for (size_t i = 0; i < json_array_size(manifests); i++) {
			json_t *entry = json_array_get(manifests, i);
			const char *name;
			r = entry_ref_name(entry, i, &name, err);
			if (r < 0)
				goto out;
			if (name != NULL && strcmp(name, want) == 0 &&
			    json_array_append(cands, entry) < 0) {
				r = clip_err_nomem(err);
				goto out;
			}
		}
	}

	size_t nc = json_array_size(cands);
	char tags[512];
	if (nc == 0) {
		list_tags(manifests, tags, sizeof(tags));
		if (tag != NULL)
			r = clip_err_set(err, ENOENT,
					 "no image tagged \"%s\" in index.json (tags: %s)", tag,
					 tags);
		else
			r = clip_err_set(
				err, EINVAL,
				"index.json lists %zu images and none is tagged \"latest\"; "
				"name one with oci:DIR:TAG (tags: %s)",
				n, tags);
		goto out;
	}
	if (nc == 1) {
		r = descriptor_from(json_array_get(cands, 0), "index.json", d, err);
		goto out;
	}
	if (all_have_platforms(cands)) {
		r = pick_by_platform(cands, platform, d, err);
		goto out;
	}
	r = clip_err_set(err, EINVAL,
			 "index.json has %zu entries tagged \"%s\" and they do not all name a "
			 "platform",
			 nc, want);
out:
	json_decref(cands);
	json_decref(root);
	return r;
}

/* ---- resolve ---------------------------------------------------------- */

/* From the image index blob `buf`, replace *d by the entry for `platform`. */
static int follow_index(const char *buf, size_t len, const struct clip_platform *platform,
			struct descriptor *d, struct clip_err *err)
{
	cleanup_free char *digest = NULL;
	cleanup_free char *media_type = NULL;
	int r = clip_image_index_select(buf, len, platform, &digest, &media_type, err);
	if (r < 0)
		return r;
	/* index_select names the entry but not its size; the blob parsed once
	 * already, so this cannot fail on syntax. */
	json_t *root = json_loadb(buf, len, 0, NULL);
	size_t i;
	json_t *entry = find_entry(json_object_get(root, "manifests"), digest, media_type, &i);
	if (entry == NULL) {
		r = clip_err_set(err, EIO, "selected entry %s vanished", digest);
	} else {
		char what[48];
		snprintf(what, sizeof(what), "manifests[%zu]", i);
		r = descriptor_from(entry, what, d, err);
	}
	json_decref(root);
	return r;
}

static bool is_manifest_type(const char *mt)
{
	return strcmp(mt, CLIP_MT_OCI_MANIFEST) == 0 || strcmp(mt, CLIP_MT_DOCKER_MANIFEST) == 0;
}

static int resolve(struct clip_oci_layout *layout, const char *tag,
		   const struct clip_platform *platform, struct clip_image *img,
		   struct clip_err *err)
{
	struct descriptor d;
	cleanup_free char *buf = NULL;
	size_t len;
	int r;

	memset(&d, 0, sizeof(d));
	r = pick_from_index_json(layout, tag, platform, &d, err);
	if (r < 0)
		goto out;

	for (int depth = 0; clip_media_type_is_index(d.media_type); depth++) {
		if (depth == MAX_NESTED_INDEXES) {
			r = clip_err_set(err, ELOOP,
					 "image index %s: image indexes nested more than %d deep",
					 d.digest, MAX_NESTED_INDEXES);
			goto out;
		}
		char index_digest[72];
		memcpy(index_digest, d.digest, sizeof(index_digest));
		free(buf);
		buf = NULL;
		r = read_blob(layout, &d, &buf, &len, err);
		if (r < 0 || (r = follow_index(buf, len, platform, &d, err)) < 0) {
			clip_err_prefix(err, "image index %s", index_digest);
			goto out;
		}
	}

	if (!is_manifest_type(d.media_type)) {
		if (strstr(d.media_type, "docker.distribution.manifest.v1") != NULL)
			r = clip_err_set(err, ENOTSUP,
					 "manifest %s: Docker image manifest schema 1 is not "
					 "supported (convert the image to schema 2 or OCI)",
					 d.digest);
		else
			r = clip_err_set(err, ENOTSUP, "%s: unsupported media type \"%.100s\"",
					 d.digest, d.media_type);
		goto out;
	}
	free(buf);
	buf = NULL;
	r = read_blob(layout, &d, &buf, &len, err);
	if (r < 0 || (r = clip_image_parse_manifest(buf, len, img, err)) < 0) {
		clip_err_prefix(err, "manifest %s", d.digest);
		goto out;
	}
	if (strcmp(img->manifest_media_type, d.media_type) != 0) {
		r = clip_err_set(err, EBADMSG, "manifest %s: media type %s, descriptor says %s",
				 d.digest, img->manifest_media_type, d.media_type);
		goto out;
	}

	struct descriptor config = { .size = img->config_size };
	snprintf(config.digest, sizeof(config.digest), "%s", img->config_digest);
	free(buf);
	buf = NULL;
	r = read_blob(layout, &config, &buf, &len, err);
	if (r < 0 || (r = clip_image_parse_config(buf, len, img, err)) < 0) {
		clip_err_prefix(err, "config %s", config.digest);
		goto out;
	}
	r = 0;
out:
	descriptor_clear(&d);
	return r;
}

int clip_oci_layout_resolve(struct clip_oci_layout *layout, const char *tag,
			    const struct clip_platform *platform, struct clip_image *img,
			    struct clip_err *err)
{
	struct clip_image tmp;
	memset(&tmp, 0, sizeof(tmp));
	int r = resolve(layout, tag, platform, &tmp, err);
	if (r < 0) {
		clip_image_clear(&tmp);
		if (tag != NULL)
			return clip_err_prefix(err, "oci layout %s: tag \"%s\"", layout->dir, tag);
		return clip_err_prefix(err, "oci layout %s", layout->dir);
	}
	*img = tmp;
	return 0;
}
