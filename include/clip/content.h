/* clip: reading file contents out of the layers an archive points at.
 *
 * This is where a byte read through `clip cat` or the FUSE mount goes. A
 * read of inode `ino` at `offset` becomes a read of its layer's uncompressed
 * tar at data_offset + offset, served through the tiers, fastest first: the
 * disk cache, the memory cache (what the disk could not keep), the remote
 * cache, checkpoint spans of gzip layers (or ranges of plain tar layers)
 * from the source, and the whole layer streamed from its start (zstd, gzip
 * without checkpoints).
 *
 * No byte reaches a reader or a cache unless a digest from the archive or
 * the manifest vouches for it: the digests of a span's compressed pieces,
 * the archive's chunk hashes (checked on the archive's grid whatever chunk
 * size the cache uses), or, for archives without chunk hashes, the blob
 * digest at the end of a whole-layer stream.
 *
 * Blobs come from the source recorded in the archive (a local OCI layout or
 * a registry repository), or from options->source (clip/source.h).
 *
 * Thread safety: clip_content_read and clip_content_prefetch may be called
 * from many threads at once; open and close from one.
 */
#ifndef CLIP_CONTENT_H
#define CLIP_CONTENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "clip/archive.h"
#include "clip/err.h"
#include "clip/gzindex.h"
#include "clip/profile.h"
#include "clip/rcache.h"
#include "clip/registry.h"
#include "clip/source.h"

struct clip_content_options {
	/* Where layer blobs come from. NULL: the source recorded in the archive
	 * (a local OCI layout or a registry repository). Otherwise "oci:DIR" or a
	 * plain directory (a local OCI layout), or a registry reference whose
	 * domain and repository are used (a mirror of the recorded one). */
	const char *source;
	const struct clip_registry_options *registry; /* NULL: defaults */
	/* A source of the caller's own (clip/source.h), borrowed; when set,
	 * `source` and the archive's record are not used. */
	const struct clip_source_ops *source_ops;
	bool no_checkpoints; /* gzip layers: fetch and inflate the whole layer */
	/* Disk cache (tier 1): NULL for none, as `clip cat` runs by default. */
	const char *cache_dir;
	uint64_t cache_max;  /* bytes; 0: unbounded */
	uint32_t chunk_size; /* cache chunk bytes; 0: the archive's (1 MiB) */
	/* Memory cache (clip/memcache.h), bytes: verified chunks the disk cache
	 * could not keep (no disk cache, a failed or declined put, or a full
	 * one), so that a full disk does not make every read produce its chunk
	 * again. 0: CLIP_DEFAULT_MEMORY_CACHE; CLIP_MEMORY_CACHE_OFF: none. Used
	 * with a disk or remote cache (without either, reads go straight to the
	 * source and nothing is kept). */
	uint64_t memory_cache_max;
	/* Remote content cache (tier 2, clip/rcache.h): a URL, or NULL. Used
	 * only when the archive has chunk hashes of this chunk size (see
	 * clip_content_remote_usable), since every chunk from it is verified. */
	const char *remote_cache;
	/* Hydration: once programs have read this percentage of a layer's
	 * checkpoint spans, the rest of the layer is fetched in the background
	 * into the disk cache, on every core. 0: CLIP_DEFAULT_HYDRATE_PERCENT;
	 * over 100: never. Needs a disk cache. */
	unsigned hydrate_percent;
	const struct clip_rcache_options *remote_cache_options; /* NULL: defaults */
	/* Startup profiles (clip/profile.h), both borrowed. Every read is noted
	 * in `record_profile`, which must outlive the content. The regions of
	 * `replay_profile` (checked against the archive at open: a profile that
	 * does not fit is an error) are fetched into the disk cache in their
	 * order once clip_content_start is called, by the engine's workers,
	 * after programs' reads and read-ahead; it may be freed after open. */
	struct clip_profile_recorder *record_profile;
	const struct clip_profile *replay_profile;
};

#define CLIP_DEFAULT_HYDRATE_PERCENT 50
#define CLIP_DEFAULT_MEMORY_CACHE    (64ull << 20)
#define CLIP_MEMORY_CACHE_OFF	     UINT64_MAX

struct clip_content;

/* Prepare reads for `archive` (borrowed: it must outlive the content). Layer
 * blobs and the registry are contacted lazily, on first use. *out is owned by
 * the caller. */
int clip_content_open(const struct clip_archive *archive,
		      const struct clip_content_options *options, struct clip_content **out,
		      struct clip_err *err);

/* Read [offset, offset+len) of regular file `ino` into buf, like pread:
 * returns the bytes read (short or 0 at end of file) or a negative errno with
 * `err` naming the layer and reason (-EISDIR/-EINVAL for non-regular inodes,
 * -EBADMSG for data that fails verification, -EIO for an unreadable blob or
 * an unreachable registry). Safe to call from many threads at once;
 * concurrent reads of the same chunk share one fetch. */
ssize_t clip_content_read(struct clip_content *content, uint32_t ino, void *buf, size_t len,
			  uint64_t offset, struct clip_err *err);

/* The mount serves: start background work that the options asked for and
 * that must not start before (a daemon forks after open), such as replaying
 * a startup profile. Returns at once. */
void clip_content_start(struct clip_content *content);

/* Fetch every layer into the disk cache, until done or *stop becomes true:
 * hydration of every layer on the engine's workers (programs' reads go
 * first), and one whole-layer fetch for layers without checkpoints.
 * -ENOTSUP without a disk cache; the error of the first hydration the
 * source stopped (its retries spent, or bytes not matching their digest),
 * whose layer is left partly cached. */
int clip_content_prefetch(struct clip_content *content, const atomic_bool *stop,
			  struct clip_err *err);

/* The read tiers, fastest first. */
enum clip_tier {
	CLIP_TIER_DISK,	  /* local disk cache */
	CLIP_TIER_MEMORY, /* chunks the disk cache could not keep */
	CLIP_TIER_REMOTE, /* shared remote content cache */
	CLIP_TIER_SPAN,	  /* checkpoint spans (or plain tar ranges) from the source */
	CLIP_TIER_LAYER,  /* the whole layer from the source */
	CLIP_TIER_COUNT,
};

/* Why reads of a layer fall back to tier 5, fetching the whole layer from
 * its start, instead of the ranges they need. A layer's reason follows from
 * its compression, the archive and the options, so it is known before the
 * first read. */
enum clip_fallback {
	CLIP_FALLBACK_NONE,	       /* ranges are read: no fallback */
	CLIP_FALLBACK_OPTION,	       /* gzip, but --no-checkpoints was given */
	CLIP_FALLBACK_NO_CHECKPOINTS,  /* gzip, and the archive has no checkpoints */
	CLIP_FALLBACK_ZSTD,	       /* zstd: no resume points are recorded */
	CLIP_FALLBACK_NO_CHUNK_HASHES, /* plain tar in an archive without chunk
					  hashes (format 1): only the blob digest
					  vouches for its bytes */
	CLIP_FALLBACK_COUNT,
};

/* "none", "no_checkpoints_option", "no_checkpoints", "zstd",
 * "no_chunk_hashes": the names of the stats JSON and of `clip stats
 * --prometheus`'s reason label. */
const char *clip_fallback_name(enum clip_fallback reason);

struct clip_tier_stats {
	uint64_t hits;	      /* requests this tier answered */
	uint64_t misses;      /* requests it could not answer */
	uint64_t bytes;	      /* bytes it produced */
	uint64_t nanoseconds; /* time spent in it */
	uint64_t errors;      /* failures, including verification failures */
};

struct clip_content_stats {
	uint64_t reads, read_bytes; /* clip_content_read calls and bytes returned */
	uint64_t coalesced;	    /* chunk fetches that waited for another's */
	struct clip_tier_stats tier[CLIP_TIER_COUNT];
	struct clip_gz_read_stats gz;	 /* spans inflated, bytes fetched and inflated */
	uint64_t source_requests;	 /* registry requests (0 for a local layout) */
	uint64_t source_bytes;		 /* bytes fetched from the source */
	uint64_t remote_verify_failures; /* remote chunks that failed their hash */
	/* Of gz.compressed_bytes: pieces of remote blobs a read took from the
	 * ones the last reads fetched, not from the source again. */
	uint64_t compressed_reused;
	/* Startup profile replay: regions to fetch, fetched (or found cached),
	 * and of those stopped by a source error. */
	uint64_t replay_regions, replay_done, replay_errors;
	/* Whole-layer fetches (streams of a layer from its start, for a read
	 * or a prefetch; readers waiting on one count once), by the layer's
	 * reason; [CLIP_FALLBACK_NONE] stays 0. */
	uint64_t whole_layer_fetches[CLIP_FALLBACK_COUNT];
	/* Of `reads`, those that fell back to a whole-layer fetch: that ran
	 * one or waited for one (not those the caches answered after), by
	 * the layer's reason. */
	uint64_t whole_layer_reads[CLIP_FALLBACK_COUNT];
};

/* What programs read of one layer, and its hydration. */
struct clip_content_layer_stats {
	uint64_t units;	  /* checkpoint spans (plain tar: hash-grid chunks); 0: not counted */
	uint64_t touched; /* of them, read by programs */
	bool hydrating;	  /* hydration started */
	bool hydrated;	  /* ... and every chunk was looked at */
	uint64_t hydrated_chunks;     /* chunks the hydration fetched */
	uint64_t chunks;	      /* cache chunks of the layer */
	uint64_t reads, read_bytes;   /* clip_content_read calls that succeeded, bytes returned */
	enum clip_fallback fallback;  /* why its reads fetch it whole, or none */
	uint64_t whole_layer_fetches; /* streams of it from its start */
	uint64_t whole_layer_reads;   /* of `reads`, those that ran or waited for one */
};

/* The stats of layer `index` (< the archive's layer count). */
void clip_content_layer_stats(struct clip_content *content, uint32_t index,
			      struct clip_content_layer_stats *out);

/* Replay `profile` (checked against the archive: clip_profile_match's
 * errors) as options.replay_profile would, for a profile found after open;
 * call it before clip_content_start. -EBUSY when one is loaded already. */
int clip_content_replay(struct clip_content *content, const struct clip_profile *profile,
			struct clip_err *err);

/* Share `profile` through the remote cache, at "<prefix>profile:<manifest
 * hex>" of the archive's image, stored only if no profile is there yet (the
 * first node's stays; merge several with clip optimize). The store is
 * queued; closing the content waits for it. -ENOTSUP without a remote cache
 * or a manifest digest in the archive, or the store's error. */
int clip_content_profile_share(struct clip_content *content, const struct clip_profile *profile,
			       struct clip_err *err);

/* The profile shared for the archive's image: 1 with *out (the caller's),
 * 0 when there is none (or no remote cache), or a negative errno when it
 * cannot be read or is damaged (it is not used then). */
int clip_content_profile_shared(struct clip_content *content, struct clip_profile **out,
				struct clip_err *err);

/* What the mount's recorder holds so far, as a profile's JSON text (*text
 * malloc'ed): for `clip stats --save-profile`. -ENOENT when not recording. */
int clip_content_recorded_profile(struct clip_content *content, char **text, struct clip_err *err);

/* Whether a remote cache given in the options is used: false for archives
 * without chunk hashes (format 1) or with another chunk size. */
bool clip_content_remote_usable(const struct clip_content *content);

/* "disk", "memory", "remote", "span", "layer". */
const char *clip_tier_name(enum clip_tier tier);

/* Totals of what reads cost so far. */
void clip_content_stats(const struct clip_content *content, struct clip_content_stats *out);

/* The same as a JSON object (a new string, NULL when out of memory), the
 * format `clip stats` prints (documented in README.md). */
char *clip_content_stats_json(const struct clip_content *content);

/* Give up every read from the source under way (the engine's runs, a
 * prefetch) and fail later ones with -ECANCELED, within about a second even
 * when the registry stalls: for an unmount, which should not wait for bytes
 * nobody will read. No bytes of a cancelled read are kept or returned.
 * There is no undoing it. Safe from any thread. */
void clip_content_cancel(struct clip_content *content);

/* Stop the engine (cancelling its reads, as clip_content_cancel) and free
 * `content` (NULL is fine). No other call may be running. */
void clip_content_close(struct clip_content *content);

#endif
