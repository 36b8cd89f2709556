/* File contents: from an inode to the bytes of its layer. */
#include "clip/content.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "clip/ocilayout.h"
#include "util.h"

struct layer_state {
	struct clip_archive_layer info;
	int fd;			  /* blob, opened on first use */
	struct clip_gz_index *gz; /* checkpoints, loaded on first use */
	bool ready;
};

struct clip_content {
	const struct clip_archive *archive;
	struct clip_oci_layout *layout;
	bool no_checkpoints;
	pthread_mutex_t lock; /* guards lazy layer set-up and stats */
	struct layer_state *layers;
	uint32_t nlayers;
	struct clip_gz_read_stats stats;
};

/* The layout directory recorded at index time. */
static int recorded_source_dir(const struct clip_archive *archive, char **dir, struct clip_err *err)
{
	json_error_t jerr;
	json_t *src = json_loads(clip_archive_source_json(archive), 0, &jerr);
	if (src == NULL)
		return clip_err_set(err, EBADMSG, "archive source record is not JSON: %s",
				    jerr.text);
	const char *type = json_string_value(json_object_get(src, "type"));
	const char *path = json_string_value(json_object_get(src, "path"));
	int rc = 0;
	if (type == NULL || strcmp(type, "oci-layout") != 0 || path == NULL)
		rc = clip_err_set(
			err, ENOTSUP,
			"archive source is not a local OCI layout (type %s); give one with "
			"--source",
			type ? type : "missing");
	else if ((*dir = strdup(path)) == NULL)
		rc = clip_err_set(err, ENOMEM, "out of memory");
	json_decref(src);
	return rc;
}

int clip_content_open(const struct clip_archive *archive, const struct clip_content_options *o,
		      struct clip_content **out, struct clip_err *err)
{
	cleanup_free char *dir = NULL;
	int rc;
	if (o && o->source_dir) {
		dir = strdup(o->source_dir);
		if (dir == NULL)
			return clip_err_set(err, ENOMEM, "out of memory");
	} else {
		rc = recorded_source_dir(archive, &dir, err);
		if (rc < 0)
			return rc;
	}
	struct clip_content *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return clip_err_set(err, ENOMEM, "out of memory");
	c->archive = archive;
	c->no_checkpoints = o && o->no_checkpoints;
	pthread_mutex_init(&c->lock, NULL);
	struct clip_archive_stats st;
	clip_archive_stats(archive, &st);
	c->nlayers = st.layers;
	c->layers = calloc(c->nlayers ? c->nlayers : 1, sizeof(*c->layers));
	if (c->layers == NULL) {
		clip_content_close(c);
		return clip_err_set(err, ENOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < c->nlayers; i++) {
		c->layers[i].fd = -1;
		clip_archive_layer(archive, i, &c->layers[i].info);
	}
	rc = clip_oci_layout_open(dir, &c->layout, err);
	if (rc < 0) {
		clip_content_close(c);
		return clip_err_prefix(err, "image source");
	}
	*out = c;
	return 0;
}

static int layer_prepare(struct clip_content *c, uint32_t index, struct clip_err *err)
{
	struct layer_state *l = &c->layers[index];
	int rc = 0;
	pthread_mutex_lock(&c->lock);
	if (!l->ready) {
		rc = clip_oci_layout_open_blob(c->layout, l->info.digest, &l->fd, err);
		if (rc == 0 && l->info.compression == CLIP_COMPRESSION_GZIP && !c->no_checkpoints &&
		    l->info.ncheckpoints > 0)
			rc = clip_archive_layer_gzindex(c->archive, index, &l->gz, err);
		if (rc == 0) {
			struct stat st;
			if (fstat(l->fd, &st) == 0 &&
			    (uint64_t)st.st_size != l->info.compressed_size)
				rc = clip_err_set(err, EBADMSG,
						  "blob is %lld bytes, the archive expects %llu",
						  (long long)st.st_size,
						  (unsigned long long)l->info.compressed_size);
		}
		if (rc == 0) {
			l->ready = true;
		} else if (l->fd >= 0) {
			close(l->fd);
			l->fd = -1;
			clip_gz_index_free(l->gz);
			l->gz = NULL;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

static ssize_t blob_pread(void *opaque, void *buf, size_t len, uint64_t offset,
			  struct clip_err *err)
{
	const struct layer_state *l = opaque;
	size_t got = 0;
	while (got < len) {
		ssize_t n =
			pread(l->fd, (unsigned char *)buf + got, len - got, (off_t)(offset + got));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return clip_err_set(err, errno, "read at offset %llu: %s",
					    (unsigned long long)(offset + got), strerror(errno));
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* zstd layers have no checkpoints yet: inflate from the start and discard. */
static ssize_t zstd_read_from_start(const struct clip_blob_source *src, void *buf, size_t len,
				    uint64_t offset, struct clip_gz_read_stats *stats,
				    struct clip_err *err)
{
	ZSTD_DCtx *dctx = ZSTD_createDCtx();
	unsigned char *in = malloc(1 << 18), *scratch = malloc(1 << 18);
	ssize_t result = 0;
	if (dctx == NULL || in == NULL || scratch == NULL) {
		result = clip_err_set(err, ENOMEM, "out of memory");
		goto out;
	}
	uint64_t cpos = 0, upos = 0;
	size_t copied = 0;
	size_t ret = 1;
	while (copied < len) {
		ssize_t n = src->pread(src->opaque, in, 1 << 18, cpos, err);
		if (n < 0) {
			result = n;
			goto out;
		}
		if (n == 0) {
			if (ret != 0) {
				result = clip_err_set(err, EBADMSG, "truncated zstd stream");
				goto out;
			}
			break;
		}
		cpos += (uint64_t)n;
		if (stats)
			stats->compressed_bytes += (uint64_t)n;
		ZSTD_inBuffer zin = { in, (size_t)n, 0 };
		while ((zin.pos < zin.size || ret != 0) && copied < len) {
			ZSTD_outBuffer zout = { scratch, 1 << 18, 0 };
			ret = ZSTD_decompressStream(dctx, &zout, &zin);
			if (ZSTD_isError(ret)) {
				result = clip_err_set(err, EBADMSG, "invalid zstd data: %s",
						      ZSTD_getErrorName(ret));
				goto out;
			}
			if (stats)
				stats->inflated_bytes += zout.pos;
			/* Copy the part of this output that falls in the range. */
			uint64_t ostart = upos, oend = upos + zout.pos;
			uint64_t want_start = offset + copied, want_end = offset + len;
			if (oend > want_start && ostart < want_end) {
				uint64_t from = want_start > ostart ? want_start : ostart;
				uint64_t to = want_end < oend ? want_end : oend;
				memcpy((unsigned char *)buf + copied, scratch + (from - ostart),
				       (size_t)(to - from));
				copied += (size_t)(to - from);
			}
			upos = oend;
			if (zout.pos == 0 && zin.pos == zin.size)
				break;
		}
	}
	result = (ssize_t)copied;
out:
	ZSTD_freeDCtx(dctx);
	free(in);
	free(scratch);
	return result;
}

ssize_t clip_content_read(struct clip_content *c, uint32_t ino, void *buf, size_t len,
			  uint64_t offset, struct clip_err *err)
{
	struct clip_archive_inode inode;
	if (clip_archive_inode(c->archive, ino, &inode) < 0)
		return clip_err_set(err, ENOENT, "inode %u does not exist", ino);
	if (S_ISDIR(inode.mode))
		return clip_err_set(err, EISDIR, "inode %u is a directory", ino);
	if (!S_ISREG(inode.mode))
		return clip_err_set(err, EINVAL, "inode %u is not a regular file", ino);
	if (offset >= inode.size || len == 0)
		return 0;
	if (len > inode.size - offset)
		len = (size_t)(inode.size - offset);
	int rc = layer_prepare(c, inode.layer, err);
	struct layer_state *l = &c->layers[inode.layer];
	if (rc < 0)
		return clip_err_prefix(err, "layer %s", l->info.digest);
	struct clip_blob_source src = { blob_pread, l };
	struct clip_gz_read_stats stats = { 0 };
	uint64_t tar_off = inode.data_offset + offset;
	ssize_t n;
	switch (l->info.compression) {
	case CLIP_COMPRESSION_NONE:
		n = blob_pread(l, buf, len, tar_off, err);
		if (n >= 0)
			stats.compressed_bytes += (uint64_t)n;
		break;
	case CLIP_COMPRESSION_GZIP:
		if (l->gz)
			n = clip_gz_index_read(l->gz, &src, buf, len, tar_off, &stats, err);
		else
			n = clip_gz_read_from_start(&src, buf, len, tar_off, &stats, err);
		break;
	case CLIP_COMPRESSION_ZSTD:
		n = zstd_read_from_start(&src, buf, len, tar_off, &stats, err);
		break;
	default: n = clip_err_set(err, ENOTSUP, "unknown compression"); break;
	}
	if (n < 0)
		return clip_err_prefix(err, "layer %s", l->info.digest);
	if ((size_t)n < len)
		return clip_err_set(err, EIO, "layer %s: file data ends early (%zd of %zu bytes)",
				    l->info.digest, n, len);
	pthread_mutex_lock(&c->lock);
	c->stats.spans += stats.spans;
	c->stats.compressed_bytes += stats.compressed_bytes;
	c->stats.inflated_bytes += stats.inflated_bytes;
	pthread_mutex_unlock(&c->lock);
	return n;
}

void clip_content_stats(const struct clip_content *c, struct clip_gz_read_stats *out)
{
	pthread_mutex_lock((pthread_mutex_t *)&c->lock);
	*out = c->stats;
	pthread_mutex_unlock((pthread_mutex_t *)&c->lock);
}

void clip_content_close(struct clip_content *c)
{
	if (c == NULL)
		return;
	for (uint32_t i = 0; c->layers && i < c->nlayers; i++) {
		if (c->layers[i].fd >= 0)
			close(c->layers[i].fd);
		clip_gz_index_free(c->layers[i].gz);
	}
	free(c->layers);
	clip_oci_layout_free(c->layout);
	pthread_mutex_destroy(&c->lock);
	free(c);
}
