/* clip: indexing an image into a .clip archive.
 *
 * Each layer is streamed once through a two-thread pipeline: one thread reads
 * and decompresses (zlib with Z_BLOCK for gzip, so that it sees every deflate
 * block boundary; zstd; or nothing for plain tar), the other hashes the
 * compressed and uncompressed streams, parses the tar, and builds gzip
 * checkpoints. Layers themselves are indexed in parallel, up to the number of
 * cores, then merged in image order.
 */
#ifndef CLIP_INDEXER_H
#define CLIP_INDEXER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "clip/err.h"
#include "clip/gzindex.h"
#include "clip/image.h"
#include "clip/stream.h"
#include "clip/tree.h"

struct clip_registry_options;

#define CLIP_DEFAULT_SPAN_BYTES	 (2ull << 20)
#define CLIP_DEFAULT_LARGE_FILE	 (512ull << 10)
#define CLIP_MIN_SPAN_BYTES	 (256ull << 10)
#define CLIP_MAX_SPAN_BYTES	 (64ull << 20)
#define CLIP_DEFAULT_CHUNK_BYTES (1ull << 20)
#define CLIP_MIN_CHUNK_BYTES	 (64ull << 10)
#define CLIP_MAX_CHUNK_BYTES	 (64ull << 20)

/* Everything learnt from one layer. */
struct clip_layer_result {
	struct clip_tree_layer *entries; /* owned */
	struct clip_gz_index *gz;	 /* owned; NULL unless gzip */
	char digest[72];		 /* "sha256:..." of the blob as read */
	char diff_id[72];		 /* "sha256:..." of the uncompressed tar */
	uint64_t compressed_size;
	uint64_t uncompressed_size;
	unsigned char (*chunk_hashes)[32]; /* owned; SHA-256 of each chunk of the tar */
	size_t nchunks;
};

struct clip_layer_options {
	enum clip_compression compression;
	uint64_t span_bytes;
	uint64_t large_file_threshold;
	bool no_checkpoints;  /* gzip without building checkpoints */
	uint64_t chunk_bytes; /* chunk size of the chunk hashes; 0: default */
};

/* Index one layer from `stream` (consumed, and closed on return). On success
 * *result is filled (release with clip_layer_result_clear). The caller checks
 * the digests against what it expected. */
int clip_index_layer(struct clip_stream *stream, const struct clip_layer_options *options,
		     struct clip_layer_result *result, struct clip_err *err);

void clip_layer_result_clear(struct clip_layer_result *result);

struct clip_index_options {
	const char *image_ref;		      /* "oci:DIR[:TAG]" or a registry ref (clip/ref.h) */
	const char *output;		      /* archive path */
	const struct clip_platform *platform; /* NULL: the host's */
	uint64_t span_bytes;		      /* 0: default */
	uint64_t large_file_threshold;	      /* 0: default; UINT64_MAX: none */
	unsigned jobs;			      /* layers indexed at once; 0: number of cores */
	uint64_t chunk_bytes;		      /* cache chunk size hashed; 0: default (1 MiB) */
	const struct clip_registry_options *registry; /* for registry references; NULL: defaults */
	/* Called from the layer threads as blobs are read (may be NULL): bytes
	 * of layer `layer` read so far out of `total` (its size). */
	void (*progress)(void *opaque, size_t layer, size_t nlayers, uint64_t bytes,
			 uint64_t total);
	void *progress_opaque;
};

struct clip_index_summary {
	size_t layers;
	size_t entries;
	size_t inodes;
	size_t checkpoints;
	uint64_t compressed_bytes;
	uint64_t uncompressed_bytes;
};

/* Index the image named by options->image_ref into options->output. Every
 * layer's blob digest and diff_id are verified; on any error (with `err`
 * naming the layer and reason) no archive is written. `summary` may be NULL. */
int clip_index_image(const struct clip_index_options *options, struct clip_index_summary *summary,
		     struct clip_err *err);

#endif
