/* clip: gzip checkpoints ("access points") and reads through them.
 *
 * A gzip layer can only be entered in the middle at a deflate block boundary,
 * and only with the exact resume state: the compressed offset, the 0-7 bits of
 * the previous byte not yet consumed, the uncompressed offset, and the last
 * 32 KiB of output (the window). This module
 *   - scans a gzip stream once with zlib (Z_BLOCK) and reports every block
 *     boundary (clip_gz_scanner_*), on the thread that inflates;
 *   - picks checkpoints among those boundaries, keeps of each window only the
 *     bytes the span after it can reach (the rest zeroed) and compresses it,
 *     and hashes the compressed stream in fixed pieces (clip_gz_builder_*),
 *     on a second thread that sees the same bytes;
 *   - reads any uncompressed range by inflating from the nearest checkpoint at
 *     or before it, handing the inflater each piece of the fetched bytes only
 *     once it is verified (clip_gz_index_read).
 * Multi-member gzip (concatenated members, optionally separated by zero
 * padding) is supported; each member's first block is a checkpoint with an
 * empty window.
 */
#ifndef CLIP_GZINDEX_H
#define CLIP_GZINDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "clip/err.h"

#define CLIP_GZ_WINDOW 32768u

/* ---- scanning (the inflating thread) ---------------------------------- */

/* A deflate block boundary. `in` compressed bytes have been consumed, of which
 * the last one still has `bits` (0-7) unused high bits; `out` bytes have been
 * produced. `member_start` is set for the boundary just after a gzip member's
 * header, before its first block (empty window). Boundaries after the last
 * block of a member are not reported. */
struct clip_gz_boundary {
	uint64_t in;
	uint64_t out;
	uint8_t bits;
	bool member_start;
};

struct clip_gz_scanner;

/* Make a scanner for one gzip stream (NULL when out of memory). */
struct clip_gz_scanner *clip_gz_scanner_new(void);

/* Inflate from `in` into `out` and record boundaries. Returns when the input
 * is used up (and nothing more can be produced without more), `out` is full,
 * or `bounds` is full, whichever comes first, with the amounts in *in_used,
 * *out_len, *nbounds; call again (with in_len 0 at the end of input) while
 * `out` or `bounds` came back full. After an error the scanner stays failed.
 * Boundaries are reported in stream order with `in`/`out` counted from the
 * start of the whole stream. Returns 0 or a negative errno with `err` set
 * ("not in gzip format", "invalid deflate data at compressed offset N",
 * "trailing garbage after gzip member at offset N"). */
int clip_gz_scanner_run(struct clip_gz_scanner *scanner, const void *in, size_t in_len,
			size_t *in_used, void *out, size_t out_cap, size_t *out_len,
			struct clip_gz_boundary *bounds, size_t bounds_cap, size_t *nbounds,
			struct clip_err *err);

/* Declare the end of input. Returns 0 if it ended after a complete member
 * (plus optional zero padding), -EBADMSG with err "truncated gzip stream"
 * otherwise (including an empty stream). */
int clip_gz_scanner_finish(struct clip_gz_scanner *scanner, struct clip_err *err);

void clip_gz_scanner_free(struct clip_gz_scanner *scanner);

/* ---- the index ---------------------------------------------------------- */

/* How windows are stored compressed (recorded in the archive). */
enum clip_gz_window_codec {
	CLIP_GZ_WINDOW_RAW = 0,	    /* stored as is */
	CLIP_GZ_WINDOW_DEFLATE = 1, /* raw deflate (zlib, windowBits -15) */
	CLIP_GZ_WINDOW_ZSTD = 2,    /* one zstd frame */
};

/* One checkpoint. Span i covers uncompressed [points[i].out, points[i+1].out)
 * (the last one up to usize) and compressed [clip_gz_span_start(i),
 * clip_gz_span_end(i)). The window is the last window_len bytes of output
 * before `out` (within the member), as a resumed inflate needs them for the
 * span: bytes no back-reference of the span reaches may be zero, and
 * window_len may stop short of 32 KiB (0 when nothing is reached).
 *
 * What vouches for the bytes depends on the index (struct clip_gz_index):
 * with piece digests, window_sha256 is the SHA-256 of the window_zlen stored
 * window bytes and the compressed bytes are checked piece by piece; without
 * (archives of format 1 and 2), span_sha256 is SHA-256(SHA-256(window) ||
 * SHA-256(compressed span bytes)) and a span is checked whole. Either way a
 * flipped byte in the window or the span is caught before the inflater sees
 * it. */
struct clip_gz_point {
	uint64_t in;
	uint64_t out;
	uint8_t bits;
	uint8_t window_codec;		 /* enum clip_gz_window_codec */
	uint32_t window_len;		 /* uncompressed window bytes, 0..32768 */
	uint32_t window_zlen;		 /* stored window bytes */
	const unsigned char *window_z;	 /* borrowed: from the builder's index or the archive */
	unsigned char window_sha256[32]; /* with piece digests */
	unsigned char span_sha256[32];	 /* without */
};

/* Default size of the pieces the compressed blob is hashed in: a read hashes
 * the pieces its inflate consumes, about half a span on average, where a
 * whole-span digest made it hash all of it; and the digests cost 32 bytes per
 * 64 KiB (0.05 % of the layer). */
#define CLIP_GZ_DEFAULT_PIECE_BYTES (64u << 10)
#define CLIP_GZ_MIN_PIECE_BYTES	    4096u
#define CLIP_GZ_MAX_PIECE_BYTES	    (1u << 30)

struct clip_gz_index {
	uint64_t csize; /* compressed blob size */
	uint64_t usize; /* uncompressed size */
	size_t count;
	struct clip_gz_point *points; /* sorted by `out`, non-decreasing */
	/* Piece digests: the SHA-256 of compressed bytes [k * piece_bytes,
	 * (k + 1) * piece_bytes) of the blob (the last piece shorter), for k <
	 * npieces = ceil(csize / piece_bytes). piece_bytes is 0 for an index
	 * without them (then span_sha256 is used). Borrowed from the archive,
	 * or owned_pieces. */
	uint32_t piece_bytes;
	size_t npieces;
	const unsigned char *piece_sha256;
	/* clip_gz_index_free() releases points[] when owns_points is set, and
	 * owned_storage (the builder's windows) and owned_pieces when not NULL. */
	void *owned_storage;
	void *owned_pieces;
	bool owns_points;
};

/* First compressed byte span `i` needs (the byte holding its primed bits). */
uint64_t clip_gz_span_start(const struct clip_gz_index *index, size_t i);
/* One past the last compressed byte span `i` needs. */
uint64_t clip_gz_span_end(const struct clip_gz_index *index, size_t i);

/* Index of the last checkpoint with out <= `offset` (the latest one among
 * equal offsets), or -1 if there is none (empty list or before the first). */
ssize_t clip_gz_index_find(const struct clip_gz_index *index, uint64_t offset);

/* Release an index made by clip_gz_builder_finish() or
 * clip_archive_layer_gzindex(), including the struct itself. NULL is fine. */
void clip_gz_index_free(struct clip_gz_index *index);

/* ---- building (the consuming thread) ------------------------------------ */

struct clip_gz_builder_options {
	uint64_t span_bytes;	       /* uncompressed distance between periodic checkpoints */
	uint64_t large_file_threshold; /* files larger than this get a checkpoint before them */
	uint32_t piece_bytes;	       /* 0: CLIP_GZ_DEFAULT_PIECE_BYTES; else 4 KiB..1 GiB */
};

struct clip_gz_builder;

/* Make a builder (NULL when out of memory); `options` (not NULL) is copied.
 * Checkpoints: every member start, every boundary at least span_bytes after
 * the previous checkpoint, and the ones clip_gz_builder_file() asks for. A
 * checkpoint whose span would produce nothing (the next checkpoint, or the
 * end, at the same `out`) is dropped, so points[] is strictly increasing in
 * `out` and has none at usize. Windows are made sparse (see struct
 * clip_gz_point): which window bytes the first 32 KiB of output after a
 * checkpoint reach is found by inflating them twice with synthetic windows,
 * once they have been fed; a checkpoint whose 32 KiB take more than 256 KiB
 * of compressed input, or that is one of more than 8 checkpoints waiting at
 * once, keeps its whole window. They are stored zstd-compressed (raw when that
 * is not smaller). The compressed stream is hashed in pieces as it is fed and
 * not kept: memory stays bounded (about 1 MiB plus the index) however long a
 * deflate block is. */
struct clip_gz_builder *clip_gz_builder_new(const struct clip_gz_builder_options *options);

/* Feed the stream in order. Contract: when clip_gz_builder_boundary() is
 * called for boundary b, exactly b->in compressed and b->out uncompressed
 * bytes have been fed. */
int clip_gz_builder_compressed(struct clip_gz_builder *builder, const void *in, size_t len,
			       struct clip_err *err);
int clip_gz_builder_uncompressed(struct clip_gz_builder *builder, const void *out, size_t len,
				 struct clip_err *err);
int clip_gz_builder_boundary(struct clip_gz_builder *builder, const struct clip_gz_boundary *b,
			     struct clip_err *err);

/* A regular file whose data starts at uncompressed `data_offset` (already fed
 * or not) and is `size` bytes long. If size > large_file_threshold, the last
 * boundary at or before data_offset becomes a checkpoint (once). Call it
 * before the first boundary with out > data_offset is passed to
 * clip_gz_builder_boundary(), since only the latest boundary's window is
 * kept; later, it fails with -EINVAL unless that boundary is a checkpoint
 * anyway. (Feeding a segment between two boundaries to the tar parser before
 * passing the closing boundary satisfies this.) */
int clip_gz_builder_file(struct clip_gz_builder *builder, uint64_t data_offset, uint64_t size,
			 struct clip_err *err);

/* End of stream: csize/usize of the index are the bytes fed. On success *out
 * is a new index owned by the caller (clip_gz_index_free); the builder can
 * then only be freed. After any error the builder stays failed. */
int clip_gz_builder_finish(struct clip_gz_builder *builder, struct clip_gz_index **out,
			   struct clip_err *err);

void clip_gz_builder_free(struct clip_gz_builder *builder);

/* ---- reading ------------------------------------------------------------ */

/* Compressed bytes mapped in place (see clip_blob_source.map). */
struct clip_blob_map {
	const unsigned char *data; /* the bytes asked for */
	void *base;		   /* munmap(base, base_len) when done; NULL: nothing to unmap */
	size_t base_len;
};

/* Where compressed bytes come from. pread returns the number of bytes read
 * (short only at end of blob) or a negative errno with `err` set.
 *
 * map is optional (NULL: pread is used). For a local file it maps
 * [offset, offset+len) instead of copying it, which saves a cold read the
 * copy and the page faults of a buffer as large as the span: 0, or a
 * negative errno with `err` set, -EIO when the blob is shorter than
 * offset+len (it never maps past the end of the file). */
struct clip_blob_source {
	ssize_t (*pread)(void *opaque, void *buf, size_t len, uint64_t offset,
			 struct clip_err *err);
	void *opaque;
	int (*map)(void *opaque, uint64_t offset, size_t len, struct clip_blob_map *m,
		   struct clip_err *err);
};

struct clip_gz_read_stats {
	uint64_t spans;		   /* spans inflated */
	uint64_t compressed_bytes; /* bytes fetched from the source */
	uint64_t inflated_bytes;   /* bytes produced by inflate, including skipped */
};

/* Read uncompressed [offset, offset+len) into buf, like pread on the
 * uncompressed blob: returns bytes read (short or 0 at/after usize), or a
 * negative errno with `err` set: -EIO for a source error, -EBADMSG when a
 * digest does not match ("span N: digest mismatch ...") or the data does not
 * inflate. One fetch covers the spans the range needs (with piece digests,
 * widened to whole pieces). No byte reaches the inflater unverified, but with
 * piece digests a failure can come after part of buf was written. `stats`
 * may be NULL; it is added to. */
ssize_t clip_gz_index_read(const struct clip_gz_index *index, const struct clip_blob_source *source,
			   void *buf, size_t len, uint64_t offset, struct clip_gz_read_stats *stats,
			   struct clip_err *err);

/* Read by inflating from the start of the blob (no checkpoints), with the
 * return values of clip_gz_index_read(). No digest vouches for these bytes
 * (a member's CRC is checked only at its end), so the read tiers never use
 * it: they stream whole layers through clip/decoder.h and check them. Tests
 * and fuzzers use it as the reference that checkpoint reads must equal. */
ssize_t clip_gz_read_from_start(const struct clip_blob_source *source, void *buf, size_t len,
				uint64_t offset, struct clip_gz_read_stats *stats,
				struct clip_err *err);

/* ---- refining (clip optimize) ------------------------------------------ */

/* A checkpoint wanted inside a span: at the last block boundary at or before
 * `at`, or (after) at the first one at or after it. */
struct clip_gz_want {
	uint64_t at;
	bool after;
};

/* Find the boundaries `wants` ask for in span `span` of `index` and make
 * each a checkpoint: the span's compressed bytes are fetched from `source`
 * (widened to whole pieces) and checked against the piece digests, the span
 * is inflated from its checkpoint with every block boundary noted, and each
 * new checkpoint gets its own sparse, compressed window (window_z malloc'ed:
 * clip_gz_points_free). Only boundaries at least 32 KiB into the span count
 * (their window is then all the span's own output), and a want with none
 * adds nothing. New points are appended to *points (*count entries,
 * realloc'ed), in the order found, each boundary once; picked[w] (NULL, or
 * nwants entries) is the index in *points of the one want w got, SIZE_MAX
 * for none. `stats` (may be NULL) is added to. Returns 0, or a negative errno with `err` naming the span:
 * -ENOTSUP for an index without piece digests, -EBADMSG when a piece does not
 * match its digest or the span does not inflate to the bytes the index says,
 * -EIO from the source. */
int clip_gz_index_refine(const struct clip_gz_index *index, const struct clip_blob_source *source,
			 size_t span, const struct clip_gz_want *wants, size_t nwants,
			 struct clip_gz_point **points, size_t *count, size_t *picked,
			 struct clip_gz_read_stats *stats, struct clip_err *err);

/* Free points made by clip_gz_index_refine and their windows. */
void clip_gz_points_free(struct clip_gz_point *points, size_t count);

#endif
