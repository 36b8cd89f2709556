/* clip: startup profiles: what a container read, to fetch it ahead of time
 * on the next cold start.
 *
 * A mount records the reads programs make (layer and uncompressed tar range,
 * when first read) with a recorder; at the end the reads become regions:
 * ranges of a layer closer than CLIP_PROFILE_MERGE_GAP merged, ordered by
 * their first access. The profile names its layers by blob digest, so it
 * fits any archive of the same layers, whatever the archive's chunk size or
 * checkpoints; a mount given one fetches its regions in that order on the
 * span engine before programs ask (clip/content.h).
 *
 * File format (docs/FORMAT.md, "Startup profiles"): a JSON object
 *   {"clip_profile": 1, "layers": ["sha256:...", ...],
 *    "regions": [[layer, offset, length, first_ms], ...], "sha256": "..."}
 * where "sha256" is the digest of the compact, key-sorted JSON of the rest,
 * so that a profile cut short or edited is refused. Written atomically.
 *
 * Thread safety: clip_profile_recorder_add may be called from many threads
 * at once; everything else from one.
 */
#ifndef CLIP_PROFILE_H
#define CLIP_PROFILE_H

#include <stddef.h>
#include <stdint.h>

#include "clip/archive.h"
#include "clip/err.h"

#define CLIP_PROFILE_VERSION   1
#define CLIP_PROFILE_MERGE_GAP (64u << 10) /* reads closer than this make one region */

struct clip_profile_region {
	uint32_t layer;	   /* index into the profile's layers */
	uint32_t first_ms; /* first read, ms after the profile's first read */
	uint64_t offset;   /* in the layer's uncompressed tar */
	uint64_t length;
};

struct clip_profile {
	char **layers; /* blob digests, "sha256:<64 hex>" */
	uint32_t nlayers;
	struct clip_profile_region *regions; /* in first-access order */
	size_t nregions;
};

void clip_profile_free(struct clip_profile *profile);

/* Read and check the profile at `path`: its version, shape and checksum.
 * -EINVAL (bad JSON, a wrong checksum, a region out of bounds...) or the
 * errno of the file, `err` naming the file and the reason. */
int clip_profile_load(const char *path, struct clip_profile **out, struct clip_err *err);

/* Write `profile` to `path` atomically (a temporary file renamed over it). */
int clip_profile_save(const struct clip_profile *profile, const char *path, struct clip_err *err);

/* The profile as the one-line JSON text of its file, with its checksum
 * (*text malloc'ed, NUL-terminated, no newline). */
int clip_profile_encode(const struct clip_profile *profile, char **text, struct clip_err *err);

/* clip_profile_load() of a profile's JSON text (`len` bytes), named `name`
 * in messages. */
int clip_profile_decode(const char *text, size_t len, const char *name, struct clip_profile **out,
			struct clip_err *err);

/* One profile from several (of several nodes or runs): every region of
 * each, overlapping and near ones (closer than the merge gap) joined, each
 * keeping the earliest first access of any of them, in first-access order.
 * So what any run read early is fetched early, and a region read by one run
 * only is kept. *out is the caller's. */
int clip_profile_merge(const struct clip_profile *const *profiles, size_t n,
		       struct clip_profile **out, struct clip_err *err);

/* Check that `profile` fits `archive`: each of its layers is a layer of the
 * archive and each region lies within its layer. On success, map[i] (the
 * caller's, profile->nlayers entries) is the archive's index of profile
 * layer i. -EINVAL naming the first misfit. */
int clip_profile_match(const struct clip_profile *profile, const struct clip_archive *archive,
		       uint32_t *map, struct clip_err *err);

/* Totals for `clip profile show`: bytes of the regions of layer `layer`
 * (UINT32_MAX: of every layer) and how many regions there are. */
void clip_profile_totals(const struct clip_profile *profile, uint32_t layer, uint64_t *bytes,
			 size_t *regions);

/* ---- recording ---- */

struct clip_profile_recorder;

/* A recorder for reads of `archive`'s layers, keeping the reads of the first
 * `seconds` after the first read (0: all). */
int clip_profile_recorder_new(const struct clip_archive *archive, uint32_t seconds,
			      struct clip_profile_recorder **out, struct clip_err *err);

/* Note a read of [offset, offset+length) of archive layer `layer`. Never
 * fails: memory stays bounded by merging what was recorded so far. */
void clip_profile_recorder_add(struct clip_profile_recorder *recorder, uint32_t layer,
			       uint64_t offset, uint64_t length);

/* The profile of everything recorded so far (a new one, the caller's). */
int clip_profile_recorder_profile(struct clip_profile_recorder *recorder, struct clip_profile **out,
				  struct clip_err *err);

void clip_profile_recorder_free(struct clip_profile_recorder *recorder);

#endif
