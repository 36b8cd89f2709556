/* Where an image's blobs come from: a local OCI layout or a registry
 * (clip/source.h). */
#include "clip/source.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

static int open_registry(const char *text, const struct clip_registry_options *ro,
			 struct clip_source *s, struct clip_err *err)
{
	struct clip_ref ref;
	int rc = clip_ref_parse(text, &ref, err);
	if (rc < 0)
		return rc;
	rc = clip_registry_open(&ref, ro, &s->registry, err);
	clip_ref_clear(&ref);
	return rc;
}

int clip_source_open_image(const char *image, const struct clip_registry_options *ro,
			   struct clip_source *s, struct clip_ref *ref, char **tag,
			   struct clip_err *err)
{
	*s = (struct clip_source){ 0 };
	*tag = NULL;
	if (strncmp(image, "oci:", 4) == 0) {
		cleanup_free char *dir = NULL;
		int rc = clip_oci_layout_parse_ref(image, &dir, tag, err);
		if (rc == 0)
			rc = clip_oci_layout_open(dir, &s->layout, err);
		if (rc < 0) {
			free(*tag);
			*tag = NULL;
		}
		return rc;
	}
	int rc = clip_ref_parse(image, ref, err);
	if (rc == 0)
		rc = clip_registry_open(ref, ro, &s->registry, err);
	if (rc < 0)
		clip_ref_clear(ref);
	return rc;
}

int clip_source_open_text(const char *text, const struct clip_registry_options *ro,
			  struct clip_source *s, struct clip_err *err)
{
	*s = (struct clip_source){ 0 };
	struct stat st;
	if (strncmp(text, "oci:", 4) == 0)
		return clip_oci_layout_open(text + 4, &s->layout, err);
	if (stat(text, &st) == 0 && S_ISDIR(st.st_mode))
		return clip_oci_layout_open(text, &s->layout, err);
	return open_registry(text, ro, s, err);
}

int clip_source_open_record(const char *record, const struct clip_registry_options *ro,
			    struct clip_source *s, struct clip_err *err)
{
	*s = (struct clip_source){ 0 };
	json_error_t jerr;
	json_t *src = json_loads(record, 0, &jerr);
	if (src == NULL)
		return clip_err_set(err, EBADMSG, "archive source record is not JSON: %s",
				    jerr.text);
	const char *type = json_string_value(json_object_get(src, "type"));
	const char *path = json_string_value(json_object_get(src, "path"));
	const char *registry = json_string_value(json_object_get(src, "registry"));
	const char *repository = json_string_value(json_object_get(src, "repository"));
	int rc;
	if (type && strcmp(type, "oci-layout") == 0 && path) {
		rc = clip_oci_layout_open(path, &s->layout, err);
	} else if (type && strcmp(type, "registry") == 0 && registry && repository) {
		cleanup_free char *text = NULL;
		if (asprintf(&text, "%s/%s", registry, repository) < 0) {
			text = NULL;
			rc = clip_err_nomem(err);
		} else {
			rc = open_registry(text, ro, s, err);
		}
	} else {
		rc = clip_err_set(err, ENOTSUP,
				  "archive source of type %s is not known; give one with --source",
				  type ? type : "missing");
	}
	json_decref(src);
	return rc;
}

void clip_source_open_ops(const struct clip_source_ops *ops, struct clip_source *s)
{
	*s = (struct clip_source){ .ops = ops };
}

int clip_source_resolve(struct clip_source *s, const struct clip_ref *ref, const char *tag,
			const struct clip_platform *platform, struct clip_image *out,
			struct clip_err *err)
{
	if (s->registry)
		return clip_registry_resolve(s->registry, clip_ref_manifest_reference(ref),
					     platform, out, err);
	if (s->layout == NULL)
		return clip_err_set(err, ENOTSUP, "this source holds blobs only, no image");
	return clip_oci_layout_resolve(s->layout, tag, platform, out, err);
}

void clip_source_clear(struct clip_source *s)
{
	clip_oci_layout_free(s->layout);
	clip_registry_free(s->registry);
	*s = (struct clip_source){ 0 };
}

/* ---- blobs --------------------------------------------------------------- */

int clip_source_blob_open(struct clip_source *s, const char *digest, uint64_t size,
			  struct clip_source_blob *b, struct clip_err *err)
{
	*b = (struct clip_source_blob){ s, digest, size, -1 };
	if (s->layout == NULL)
		return 0;
	int rc = clip_oci_layout_open_blob(s->layout, digest, &b->fd, err);
	if (rc < 0)
		return rc;
	struct stat st;
	if (fstat(b->fd, &st) < 0)
		rc = clip_err_errno(err, errno, "blob %s", digest);
	else if ((uint64_t)st.st_size != size)
		rc = clip_err_set(err, EBADMSG,
				  "digest mismatch: blob is %lld bytes, expected %llu",
				  (long long)st.st_size, (unsigned long long)size);
	if (rc < 0)
		clip_source_blob_close(b);
	return rc;
}

void clip_source_blob_close(struct clip_source_blob *b)
{
	if (b->fd >= 0)
		close(b->fd);
	b->fd = -1;
}

ssize_t clip_source_blob_pread(struct clip_source_blob *b, void *buf, size_t len, uint64_t offset,
			       struct clip_err *err)
{
	if (b->source->registry)
		return clip_registry_blob_read(b->source->registry, b->digest, buf, len, offset,
					       err);
	if (b->source->ops)
		return b->source->ops->pread(b->source->ops->opaque, b->digest, buf, len, offset,
					     err);
	ssize_t n = clip_pread_full(b->fd, buf, len, offset);
	if (n < 0)
		return clip_err_errno(err, (int)n, "read at offset %llu",
				      (unsigned long long)offset);
	return n;
}

/* A local blob read in order. */
struct fd_stream {
	struct clip_source_blob *blob;
	uint64_t pos;
};

static ssize_t fd_stream_read(void *opaque, void *buf, size_t len, struct clip_err *err)
{
	struct fd_stream *fs = opaque;
	ssize_t n = clip_source_blob_pread(fs->blob, buf, len, fs->pos, err);
	if (n > 0)
		fs->pos += (uint64_t)n;
	return n;
}

static void fd_stream_close(void *opaque)
{
	free(opaque);
}

int clip_source_blob_stream(struct clip_source_blob *b, struct clip_stream *out,
			    struct clip_err *err)
{
	if (b->source->registry)
		return clip_registry_blob_stream(b->source->registry, b->digest, b->size, out, err);
	struct fd_stream *fs = calloc(1, sizeof(*fs));
	if (fs == NULL)
		return clip_err_nomem(err);
	fs->blob = b;
	*out = (struct clip_stream){ fd_stream_read, fd_stream_close, fs };
	return 0;
}

static ssize_t reader_pread(void *opaque, void *buf, size_t len, uint64_t offset,
			    struct clip_err *err)
{
	return clip_source_blob_pread(opaque, buf, len, offset, err);
}

/* clip_blob_source.map for a local blob (gzindex.h). OCI tools never rewrite
 * a blob in place (they write a new file and rename it: the name is its
 * digest), so a mapping is not cut short under the reader; the size is
 * checked first so that a short blob is an error, never a SIGBUS. */
static int reader_map(void *opaque, uint64_t offset, size_t len, struct clip_blob_map *m,
		      struct clip_err *err)
{
	const struct clip_source_blob *b = opaque;
	struct stat st;
	if (fstat(b->fd, &st) < 0)
		return clip_err_errno(err, errno, "compressed blob");
	uint64_t size = (uint64_t)st.st_size;
	if (size < offset || size - offset < len)
		return clip_err_set(err, EIO,
				    "compressed blob: ends at %llu, index expects %llu bytes",
				    (unsigned long long)size, (unsigned long long)(offset + len));
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t base_off = offset - offset % page;
	size_t base_len = len + (size_t)(offset - base_off);
	void *p = mmap(NULL, base_len, PROT_READ, MAP_PRIVATE, b->fd, (off_t)base_off);
	if (p == MAP_FAILED)
		return clip_err_errno(err, errno, "compressed blob: mapping %zu bytes at %llu", len,
				      (unsigned long long)offset);
	m->base = p;
	m->base_len = base_len;
	m->data = (const unsigned char *)p + (offset - base_off);
	return 0;
}

struct clip_blob_source clip_source_blob_reader(struct clip_source_blob *b)
{
	struct clip_blob_source src = { .pread = reader_pread, .opaque = b };
	if (b->fd >= 0)
		src.map = reader_map;
	return src;
}
