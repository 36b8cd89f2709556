/* What content.c (the read tiers) and content_produce.c (producing verified
 * tar bytes from the source) share. Not installed. */
#ifndef CLIP_CONTENT_INTERNAL_H
#define CLIP_CONTENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "clip/archive.h"
#include "clip/content.h"
#include "clip/diskcache.h"
#include "clip/memcache.h"
#include "clip/profile.h"
#include "clip/rcache.h"
#include "clip/source.h"

struct layer_state {
	struct clip_archive_layer info;
	uint32_t index;
	char hex[65];		      /* the blob digest without "sha256:" */
	struct clip_source_blob blob; /* set up on first use */
	struct clip_gz_index *gz;     /* checkpoints, loaded on first use */
	bool ready;
	bool streaming;		 /* a whole-layer fetch is running */
	pthread_cond_t streamed; /* signalled when it ends */
	/* Access density (content_engine.c), under c->lock: which units of
	 * the layer (checkpoint spans; hash-grid chunks of a plain tar)
	 * programs have read, and the hydration this starts. */
	uint8_t *touched; /* a bitmap of nunits, allocated on first touch */
	uint64_t nunits, ntouched;
	atomic_bool hydrating; /* hydration started; hydrate_next is its cursor; set
				  under c->lock, read without it by reads */
	bool hydrated;	       /* every chunk was looked at */
	bool hydrate_failed;   /* the source stopped it: chunks were left out */
	uint64_t hydrate_next;
	unsigned hydrate_runs;		  /* runs under way */
	_Atomic uint64_t hydrated_chunks; /* chunks the hydration produced */
	enum clip_fallback fallback;	  /* set at open, never changed */
	_Atomic uint64_t reads, read_bytes, whole_layer_fetches, whole_layer_reads;
};

struct tier_counters {
	_Atomic uint64_t hits, misses, bytes, nanoseconds, errors;
};

/* The counters behind struct clip_content_stats, bumped with CLIP_COUNT. */
struct content_counters {
	_Atomic uint64_t reads, read_bytes, coalesced;
	struct tier_counters tier[CLIP_TIER_COUNT];
	_Atomic uint64_t spans, compressed_bytes, inflated_bytes;
	_Atomic uint64_t compressed_reused; /* of compressed_bytes: from the piece cache */
	_Atomic uint64_t remote_verify_failures;
	_Atomic uint64_t hydrate_errors; /* hydrations the source stopped */
	_Atomic uint64_t replay_done;	 /* profile regions replayed */
	_Atomic uint64_t replay_errors;	 /* ... of them, stopped by the source */
	_Atomic uint64_t whole_layer_fetches[CLIP_FALLBACK_COUNT]; /* by reason */
	_Atomic uint64_t whole_layer_reads[CLIP_FALLBACK_COUNT];   /* by reason */
};

#define ENGINE_MAX_WORKERS 8
#define SEQ_SLOTS	   64 /* files whose sequential reads are followed */

struct inflight;
struct readahead;

/* A file read in order: where its next read would start, and how far ahead
 * of it to fetch (0 for a reader that jumps around). */
struct seq_slot {
	uint32_t ino;
	uint64_t next;
	uint64_t window;
};

struct clip_content {
	const struct clip_archive *archive;
	struct clip_source source;
	bool no_checkpoints;
	struct clip_diskcache *cache;	/* disk tier; NULL: none */
	struct clip_memcache *memcache; /* what the disk tier could not keep; NULL: none */
	struct clip_rcache *rcache;	/* remote tier; NULL: none */
	struct content_pieces *pieces;	/* recent compressed pieces of remote blobs; NULL: none */
	uint64_t chunk_bytes;		/* the cache's grid */
	/* The grid of the archive's chunk hashes (0: it has none, format 1).
	 * Every tar byte is vouched for on this grid, whatever the cache's. */
	uint64_t hash_bytes;
	bool archive_hashes;  /* chunk_bytes == hash_bytes: a cache chunk has a hash */
	pthread_mutex_t lock; /* guards layer set-up, the in-flight list, read-ahead */
	struct layer_state *layers;
	uint32_t nlayers;
	struct inflight *inflight;
	/* The span engine (content_engine.c): worker threads, started on the
	 * first job (never before: the FUSE daemon forks after
	 * clip_content_open), that fetch read-ahead and hydrate layers,
	 * read-ahead first. Under `lock`. */
	struct readahead *ra_queue;
	unsigned ra_queued;
	/* A startup profile's regions (archive layers, tar ranges) in the
	 * order programs first read them: workers fetch them after read-ahead
	 * and before hydration, from clip_content_start on. */
	struct replay_region *replay;
	size_t nreplay, replay_next;
	bool replay_started;
	pthread_cond_t engine_wake; /* work was queued, or stop */
	pthread_cond_t engine_idle; /* a hydration ended */
	pthread_t workers[ENGINE_MAX_WORKERS];
	unsigned nworkers, engine_busy;
	atomic_bool engine_stop;     /* set under `lock`; replay reads it without */
	unsigned hydrate_percent;    /* share of units read that starts hydration; 0: never */
	struct clip_err hydrate_err; /* what stopped the first failed hydration */
	uint64_t cache_max;	     /* the disk cache's bound; 0: none */
	struct seq_slot seq[SEQ_SLOTS];
	struct content_counters counters;
	struct clip_profile_recorder *recorder; /* borrowed; NULL: not recording */
};

/* The part of one cache chunk a reader waits for: whoever produces that
 * chunk copies [off, off+len) of it to buf and sets done. The bytes count
 * only once the producing call returned success. */
struct chunk_want {
	uint64_t chunk;
	void *buf;
	size_t len, off;
	bool done;
};

/* A buffer a worker reuses from one run to the next: a fresh one per run
 * would be a fresh mapping each time, whose page faults cost the inflater a
 * good part of its time. */
struct content_buf {
	unsigned char *data;
	size_t cap;
};

/* `len` bytes: buf's (grown as needed), or with buf NULL a new allocation
 * left in *own for the caller to free. NULL when out of memory. */
unsigned char *content_buf_get(struct content_buf *buf, size_t len, unsigned char **own);

/* What one run needs: its tar bytes, and its compressed bytes when they
 * come from a remote source. */
struct run_buffers {
	struct content_buf tar, compressed;
};

/* A byte range of a layer's tar: the file a read is for. */
struct extent {
	uint64_t start, end;
};

/* A region of a startup profile, to fetch ahead of programs. */
struct replay_region {
	uint32_t layer;
	struct extent range;
};

uint64_t content_now_ns(void);

/* Count one request of `tier`: outcome > 0 a hit, 0 a miss, < 0 an error. */
void content_count_tier(struct clip_content *c, enum clip_tier tier, int outcome, uint64_t bytes,
			uint64_t t0);

uint64_t content_chunk_count(const struct clip_content *c, const struct layer_state *l);

/* Bytes in cache chunk k (the last one is shorter). */
size_t content_chunk_len(const struct clip_content *c, const struct layer_state *l, uint64_t k);

void content_want_fill(struct chunk_want *w, uint64_t k, const unsigned char *data);

/* Keep a verified cache chunk in the disk cache, in the memory cache when the
 * disk cache cannot be counted on to keep it, and, with `to_remote`, in the
 * remote cache. Failures only cost speed: counted, not returned. */
void content_chunk_store(struct clip_content *c, const struct layer_state *l, uint64_t k,
			 const void *data, size_t len, const unsigned char hash[32],
			 bool to_remote);

/* The piece cache (content_pieces.c). */
#define CONTENT_PIECES_MAX (32u << 20)
struct content_pieces;
struct content_pieces *content_pieces_new(size_t piece_bytes, size_t max);
void content_pieces_free(struct content_pieces *pieces);
/* Piece `index` of layer `layer` into buf when it is kept with exactly `len`
 * bytes: len, else 0. */
size_t content_pieces_get(struct content_pieces *pieces, uint32_t layer, uint64_t index, void *buf,
			  size_t len);
void content_pieces_put(struct content_pieces *pieces, uint32_t layer, uint64_t index,
			const void *data, size_t len);

/* The regions of `profile` for the engine to replay, once it fits the
 * archive (clip_profile_match's errors). */
int content_load_replay(struct clip_content *c, const struct clip_profile *profile,
			struct clip_err *err);

/* The chunks [*first, *last] one fetch for chunk k of `file` produces. */
void content_span_batch(const struct clip_content *c, const struct layer_state *l, uint64_t k,
			const struct extent *file, uint64_t *first, uint64_t *last);

/* Make sure chunk k is in the caches, fetching it (and its batch) from the
 * remote cache when `try_remote` and it has them, else from the source; a
 * caller whose chunk another fetch had under way waits for that one and gets
 * 1 (look again). 0 or a negative errno. */
int content_chunk_fetch(struct clip_content *c, struct layer_state *l, uint64_t k,
			const struct extent *file, struct chunk_want *want, bool try_remote,
			struct clip_err *err);

/* Load the blob and checkpoints of layer l once. */
int content_layer_prepare(struct clip_content *c, struct layer_state *l, struct clip_err *err);

/* Under c->lock: the chunk after the in-flight fetch holding chunk k, or k
 * when none holds it. */
uint64_t content_inflight_end(struct clip_content *c, const struct layer_state *l, uint64_t k);

/* Under c->lock: shrink [*first, *last] around chunk `keep` (itself not in
 * flight) so that no in-flight fetch overlaps it. */
void content_inflight_trim(struct clip_content *c, const struct layer_state *l, uint64_t keep,
			   uint64_t *first, uint64_t *last);

/* Entered with c->lock held and [first, last] overlapping no fetch in
 * flight: fetch those chunks (with `try_remote`, each from the remote cache
 * when it has it, the rest from the source) and keep them; returns without
 * the lock. */
int content_fetch_run(struct clip_content *c, struct layer_state *l, uint64_t first, uint64_t last,
		      struct chunk_want *want, bool try_remote, struct run_buffers *bufs,
		      struct clip_err *err);

/* Whether chunk k is in the disk or the memory cache (a cheap probe for
 * chunks this process verified already). */
bool content_chunk_cached(struct clip_content *c, const struct layer_state *l, uint64_t k);

/* ---- content_engine.c: read-ahead and hydration --------------------------- */

/* Queue a read-ahead of chunk k of `file` and `budget` bytes after it;
 * dropped when the queue is full (read-ahead only ever saves time). */
void content_engine_readahead(struct clip_content *c, const struct layer_state *l, uint64_t k,
			      const struct extent *file, uint64_t budget);

/* A program read tar bytes [off, off+len) of layer l: count the units it
 * touched, and start hydrating the layer once their share passes the
 * threshold. */
void content_engine_touch(struct clip_content *c, struct layer_state *l, uint64_t off,
			  uint64_t len);

/* Hydrate layer l in the background: every chunk not in the cache yet,
 * in order, on every worker. No-op for a layer hydrating already. */
void content_engine_hydrate(struct clip_content *c, struct layer_state *l);

/* Wait until no layer is hydrating, or *stop. */
void content_engine_wait(struct clip_content *c, const atomic_bool *stop);

/* Stop the workers and free the queue. The runs under way finish first,
 * unless the source was cancelled (clip_content_cancel). */
void content_engine_stop(struct clip_content *c);

/* True on the engine's worker threads (background work nobody waits on). */
bool content_engine_in_worker(void);

/* Queue the regions of `profile` (whose layer i is archive layer map[i]) for
 * replay, once clip_content_start is called. Only at open. */
int content_engine_replay_load(struct clip_content *c, const struct clip_profile *profile,
			       const uint32_t *map, struct clip_err *err);

/* Start replaying the profile's regions, if any. */
void content_engine_replay_start(struct clip_content *c);

/* ---- content_produce.c: tar bytes that a digest vouches for -------------- */

/* Check `len` bytes of chunk i on the archive's hash grid against the
 * archive's hash, and leave their SHA-256 in `hash`: 0, or -EBADMSG naming
 * the chunk. The one check that vouches for plain tar ranges and for whole
 * layers; a chunk the archive has no hash for is refused, never passed. */
int content_chunk_verify(struct clip_content *c, const struct layer_state *l, uint64_t i,
			 const void *data, size_t len, unsigned char hash[32],
			 struct clip_err *err);

/* Whether any range of this layer can be produced on its own and vouched
 * for: gzip with checkpoints (spans checked by their compressed digests), or
 * a plain tar when the archive has chunk hashes. Otherwise only the whole
 * layer, checked against its blob digest, can be. */
bool content_ranges_vouched(const struct clip_content *c, const struct layer_state *l);

/* Tar bytes [off, off+len) of a layer whose ranges are vouched for, into
 * buf: the length, or a negative errno. `compressed`, when not NULL, holds
 * the compressed bytes fetched from a remote source (reused run to run). */
ssize_t content_span_read(struct clip_content *c, struct layer_state *l, void *buf, size_t len,
			  uint64_t off, struct content_buf *compressed, struct clip_err *err);

/* Tier 4: stream the whole layer once and keep every cache chunk of it (in
 * the disk cache when there is one), filling `want` on the way. A chunk
 * reaches the cache only once a digest vouched for it: the archive's chunk
 * hashes as the stream goes, or else the blob digest at its end (until then
 * the chunks are staged out of sight). */
int content_layer_fetch(struct clip_content *c, struct layer_state *l, struct chunk_want *want,
			struct clip_err *err);

/* Without caches: the smallest read that answers [off, off+len) of the tar
 * and that a digest vouches for. */
ssize_t content_direct_read(struct clip_content *c, struct layer_state *l, void *buf, size_t len,
			    uint64_t off, struct clip_err *err);

#endif
