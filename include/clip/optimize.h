/* clip: optimize an archive for a startup profile (`clip optimize`).
 *
 * A cold read of a gzip layer fetches and inflates a whole span, from the
 * checkpoint before the chunk it wants to the next checkpoint. The indexer
 * places checkpoints every few MiB, not knowing what programs read. Given a
 * profile (clip/profile.h) of what they do read, optimize adds checkpoints
 * at the deflate block boundaries on each side of every edge of a hot chunk
 * (the last before it, the first after it), so that reading hot chunks
 * fetches little more than them, and two reads of neighbouring chunks share
 * one deflate block, not a span. It finds those boundaries by inflating only the spans
 * involved, in parallel, from the image source, each span checked against
 * the archive's piece digests first. The new archive is the old one byte for
 * byte except for the checkpoints and an embedded copy of the profile, which
 * a mount replays unless told not to: the same image, the same digests.
 *
 * Extra checkpoints cost archive bytes (a 72-byte record and a sparse,
 * compressed window each), so they are chosen by the compressed bytes they
 * save a cold start per byte they cost, within a bound on the growth.
 */
#ifndef CLIP_OPTIMIZE_H
#define CLIP_OPTIMIZE_H

#include <stddef.h>
#include <stdint.h>

#include "clip/archive.h"
#include "clip/err.h"
#include "clip/profile.h"
#include "clip/source.h"

/* A checkpoint that saves less than this (compressed bytes a cold start of
 * the profile no longer fetches) is not worth its window. */
#define CLIP_OPTIMIZE_DEFAULT_MIN_GAIN (64u << 10)

struct clip_optimize_options {
	const struct clip_profile *profile; /* what programs read (merged) */
	struct clip_source *source;	    /* where the blobs are, opened */
	uint64_t max_growth;		    /* bytes the archive may grow by; 0: no bound */
	uint64_t min_gain;		    /* 0: CLIP_OPTIMIZE_DEFAULT_MIN_GAIN */
	unsigned threads;		    /* spans inflated at once; 0: online CPUs */
	/* Called after each span (from any thread, one call at a time). */
	void (*progress)(void *opaque, size_t spans_done, size_t spans_total);
	void *opaque;
};

struct clip_optimize_report {
	size_t runs;			  /* runs of hot chunks in gzip layers */
	size_t spans;			  /* spans inflated to find boundaries */
	size_t found;			  /* boundaries found for them */
	size_t added;			  /* checkpoints added (within the bound, worth it) */
	size_t checkpoints;		  /* checkpoints in the new archive */
	uint64_t fetched;		  /* compressed bytes fetched to find them */
	uint64_t window_bytes;		  /* stored window bytes added */
	uint64_t size_before, size_after; /* archive file sizes */
	/* Compressed bytes of the spans the profile's hot chunks lie in, each
	 * span counted once, with the old and the new checkpoints (what a cold
	 * start that fetched each span once would take). */
	uint64_t hot_before, hot_after;
	uint64_t image_bytes; /* compressed size of all layers */
};

/* Write to `path` the archive `archive` (opened from a file) with extra
 * checkpoints for `o->profile` and the profile embedded. Deterministic: the
 * same archive, profile and options give the same bytes, whatever the
 * threads. -EINVAL when the profile does not fit the archive (another image,
 * regions past a layer's end), -ENOTSUP for an archive of an older format,
 * -EBADMSG when the source's bytes do not match the archive, or the errno
 * of the source or of writing; `err` says which. Nothing is left at `path`
 * on failure. `report` may be NULL. */
int clip_optimize(const char *path, const struct clip_archive *archive,
		  const struct clip_optimize_options *o, struct clip_optimize_report *report,
		  struct clip_err *err);

/* The profile embedded in `archive` by clip_optimize, decoded and checked
 * (*out the caller's), and the checkpoints it added (*added, may be NULL).
 * Returns 1, 0 (with *out NULL) when there is none, or -EINVAL when the
 * embedded profile is damaged. */
int clip_optimize_embedded(const struct clip_archive *archive, struct clip_profile **out,
			   size_t *added, struct clip_err *err);

#endif
