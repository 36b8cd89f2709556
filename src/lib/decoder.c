/* One streaming decoder for none, gzip and zstd layers (clip/decoder.h). */
#include "clip/decoder.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "util.h"

struct clip_decoder {
	enum clip_compression compression;
	struct clip_gz_scanner *gz;
	ZSTD_DCtx *zstd;
	/* zstd: what the last call that moved anything returned; 0 right
	 * after a frame ended. A call that moves nothing says nothing about
	 * it (after an end, zstd asks for the next frame's header). */
	size_t zstd_ret;
	uint64_t consumed; /* compressed bytes used so far, for messages */
	int failed;
};

int clip_decoder_new(enum clip_compression compression, struct clip_decoder **out,
		     struct clip_err *err)
{
	struct clip_decoder *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return clip_err_nomem(err);
	d->compression = compression;
	d->zstd_ret = 1; /* an empty stream is a truncated one */
	switch (compression) {
	case CLIP_COMPRESSION_NONE: break;
	case CLIP_COMPRESSION_GZIP: d->gz = clip_gz_scanner_new(); break;
	case CLIP_COMPRESSION_ZSTD: d->zstd = ZSTD_createDCtx(); break;
	default:
		free(d);
		return clip_err_set(err, ENOTSUP, "compression %d is not known", (int)compression);
	}
	if ((compression == CLIP_COMPRESSION_GZIP && d->gz == NULL) ||
	    (compression == CLIP_COMPRESSION_ZSTD && d->zstd == NULL)) {
		clip_decoder_free(d);
		return clip_err_nomem(err);
	}
	*out = d;
	return 0;
}

static int run_zstd(struct clip_decoder *d, const void *in, size_t in_len, size_t *in_used,
		    void *out, size_t out_cap, size_t *out_len, struct clip_err *err)
{
	ZSTD_inBuffer zin = { in, in_len, 0 };
	ZSTD_outBuffer zout = { out, out_cap, 0 };
	size_t r = ZSTD_decompressStream(d->zstd, &zout, &zin);
	if (ZSTD_isError(r))
		return clip_err_set(err, EBADMSG,
				    "invalid zstd data near compressed offset %llu: %s",
				    (unsigned long long)d->consumed, ZSTD_getErrorName(r));
	if (zin.pos || zout.pos)
		d->zstd_ret = r;
	*in_used = zin.pos;
	*out_len = zout.pos;
	return 0;
}

int clip_decoder_run(struct clip_decoder *d, const void *in, size_t in_len, size_t *in_used,
		     void *out, size_t out_cap, size_t *out_len, struct clip_gz_boundary *bounds,
		     size_t bounds_cap, size_t *nbounds, struct clip_err *err)
{
	*in_used = *out_len = 0;
	size_t nb_local = 0;
	if (nbounds == NULL)
		nbounds = &nb_local;
	*nbounds = 0;
	if (d->failed)
		return clip_err_set(err, d->failed, "decoder already failed");
	int rc = 0;
	switch (d->compression) {
	case CLIP_COMPRESSION_NONE:
		*in_used = *out_len = in_len < out_cap ? in_len : out_cap;
		memcpy(out, in, *out_len);
		break;
	case CLIP_COMPRESSION_GZIP: {
		/* The scanner wants somewhere to put boundaries even when the
		 * caller does not. */
		struct clip_gz_boundary scratch[16];
		if (bounds == NULL || nbounds == &nb_local) {
			bounds = scratch;
			bounds_cap = CLIP_ARRAY_SIZE(scratch);
		}
		rc = clip_gz_scanner_run(d->gz, in, in_len, in_used, out, out_cap, out_len, bounds,
					 bounds_cap, nbounds, err);
		break;
	}
	default: rc = run_zstd(d, in, in_len, in_used, out, out_cap, out_len, err); break;
	}
	if (rc == 0 && in_len > 0 && out_cap > 0 && *in_used == 0 && *out_len == 0 && *nbounds == 0)
		rc = clip_err_set(err, EIO, "decoder made no progress at compressed offset %llu",
				  (unsigned long long)d->consumed);
	if (nbounds == &nb_local)
		*nbounds = 0; /* boundaries nobody asked for */
	if (rc < 0) {
		d->failed = rc;
		return rc;
	}
	d->consumed += *in_used;
	return 0;
}

int clip_decoder_finish(struct clip_decoder *d, struct clip_err *err)
{
	if (d->failed)
		return clip_err_set(err, d->failed, "decoder already failed");
	switch (d->compression) {
	case CLIP_COMPRESSION_GZIP: return clip_gz_scanner_finish(d->gz, err);
	case CLIP_COMPRESSION_ZSTD:
		if (d->zstd_ret != 0)
			return clip_err_set(err, EBADMSG, "truncated zstd stream");
		return 0;
	default: return 0;
	}
}

void clip_decoder_free(struct clip_decoder *d)
{
	if (d == NULL)
		return;
	clip_gz_scanner_free(d->gz);
	ZSTD_freeDCtx(d->zstd);
	free(d);
}
