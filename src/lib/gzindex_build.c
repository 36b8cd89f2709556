/* clip: gzip checkpoints — the builder.
 *
 * The second thread of indexing sees the same compressed and uncompressed
 * bytes as the scanner (gzindex_scan.c) and the boundaries it reports, picks
 * checkpoints among them (periodic, member starts, before large files), keeps
 * of each window only the bytes its span can reach, compresses it, and hashes
 * the compressed stream in fixed pieces, without ever holding the stream.
 */
#include "clip/gzindex.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "gzindex_internal.h"
#include "sha256.h"
#include "util.h"

#define W CLIP_GZ_WINDOW

/* Sparse windows. Output more than 32 KiB after a checkpoint cannot reach
 * its window (deflate distances are at most 32 KiB), and which window bytes
 * the first 32 KiB do reach is fixed by the compressed bits alone, so the
 * builder can tell exactly (clip_gz_sparse_run()) and store every other window byte as
 * zero, which zstd then all but drops. It needs the compressed bytes that
 * produce those 32 KiB, so a checkpoint's window waits (pending) until they
 * have been fed; they are kept from the oldest waiting checkpoint on, up to
 * LOOK_CAP. A checkpoint whose 32 KiB take more than that (thousands of empty
 * blocks), or that is the oldest of PENDING_MAX waiting when one more is
 * chosen (checkpoints closer than 32 KiB), keeps its whole window: always
 * correct, only larger. */
#define LOOK_CAP    (256u * 1024)
#define PENDING_MAX 8

enum cand_state {
	CAND_NONE,   /* no boundary seen yet */
	CAND_OPEN,   /* most recent boundary, may still become a checkpoint */
	CAND_CHOSEN, /* most recent boundary is the last checkpoint */
};

/* A checkpoint whose window is not stored yet. */
struct pending_window {
	size_t point;	       /* index in points[] */
	unsigned char partial; /* byte in - 1, holding the primed bits */
	size_t len;
	unsigned char window[W]; /* the real one */
};

struct clip_gz_builder {
	struct clip_gz_builder_options opt;
	int failed;
	uint64_t fed_in, fed_out;
	unsigned char last_byte; /* holds the primed bits of a boundary at fed_in */

	/* Last 32 KiB of output of the current member (a ring). */
	unsigned char hist[W];
	size_t hist_pos, hist_len;

	/* Checkpoints so far. Windows enter the arena in checkpoint order once
	 * they are sparse (and their window_sha256 is set then); window_z is
	 * only set at finish (the arena moves), until then wz_off[i] locates
	 * it. after_out[i] is the `out` of the boundary that followed points[i]
	 * (UINT64_MAX while unknown), to tell whether a late file hint is
	 * already served. */
	struct clip_gz_point *points;
	uint64_t *wz_off, *after_out;
	size_t count, cap;
	unsigned char *arena;
	size_t arena_len, arena_cap;

	/* Piece digests of the compressed stream, which do not depend on where
	 * the checkpoints fall: `piece` runs over the current piece, piece_fill
	 * bytes into it. */
	uint32_t piece_bytes;
	struct clip_sha256 piece;
	uint32_t piece_fill;
	unsigned char (*pieces)[32];
	size_t npieces, pieces_cap;

	/* The most recent boundary and its window. */
	enum cand_state cand_state;
	struct clip_gz_boundary cand;
	unsigned char cand_partial;
	unsigned char cand_window[W];
	size_t cand_window_len;

	/* Windows waiting to be made sparse, oldest first (a ring), and the
	 * compressed stream [look_base, look_base + look_len) they need: from
	 * the oldest one's `in` (or the open candidate's, which may become
	 * one) to at most LOOK_CAP past it. */
	struct pending_window *pending;
	size_t pending_head, npending;
	unsigned char *look;
	uint64_t look_base;
	size_t look_len;

	/* Finds which window bytes a checkpoint's span reaches. */
	struct clip_gz_sparse sparse;

	/* Pending large-file hints (data offsets), a min-heap. */
	uint64_t *hints;
	size_t nhints, hints_cap;

	ZSTD_CCtx *zc;
};

struct clip_gz_builder *clip_gz_builder_new(const struct clip_gz_builder_options *options)
{
	struct clip_gz_builder *b = calloc(1, sizeof(*b));
	if (b == NULL)
		return NULL;
	b->opt = *options;
	b->piece_bytes = options->piece_bytes ? options->piece_bytes : CLIP_GZ_DEFAULT_PIECE_BYTES;
	if (b->piece_bytes < CLIP_GZ_MIN_PIECE_BYTES || b->piece_bytes > CLIP_GZ_MAX_PIECE_BYTES) {
		free(b);
		return NULL;
	}
	clip_sha256_init(&b->piece);
	b->look = malloc(LOOK_CAP);
	b->pending = malloc(PENDING_MAX * sizeof(*b->pending));
	b->zc = ZSTD_createCCtx();
	if (b->look == NULL || b->pending == NULL || b->zc == NULL ||
	    clip_gz_sparse_init(&b->sparse) < 0) {
		clip_gz_builder_free(b);
		return NULL;
	}
	return b;
}

void clip_gz_builder_free(struct clip_gz_builder *b)
{
	if (b == NULL)
		return;
	free(b->points);
	free(b->wz_off);
	free(b->after_out);
	free(b->arena);
	free(b->pieces);
	free(b->look);
	free(b->pending);
	clip_gz_sparse_end(&b->sparse);
	free(b->hints);
	ZSTD_freeCCtx(b->zc);
	free(b);
}

static int build_fail(struct clip_gz_builder *b, struct clip_err *err, int code, const char *what)
{
	b->failed = clip_err_set(err, code, "gzip index builder: %s", what);
	return b->failed;
}

/* Close the current piece digest. */
static int piece_close(struct clip_gz_builder *b)
{
	if (b->npieces == b->pieces_cap) {
		size_t cap = b->pieces_cap ? b->pieces_cap * 2 : 256;
		unsigned char(*p)[32] = realloc(b->pieces, cap * sizeof(*p));
		if (p == NULL)
			return -ENOMEM;
		b->pieces = p;
		b->pieces_cap = cap;
	}
	clip_sha256_final(&b->piece, b->pieces[b->npieces++]);
	clip_sha256_init(&b->piece);
	b->piece_fill = 0;
	return 0;
}

static int piece_feed(struct clip_gz_builder *b, const unsigned char *p, size_t len)
{
	while (len > 0) {
		size_t n = clip_gz_min_size(len, b->piece_bytes - b->piece_fill);
		clip_sha256_update(&b->piece, p, n);
		b->piece_fill += (uint32_t)n;
		p += n;
		len -= n;
		if (b->piece_fill == b->piece_bytes && piece_close(b) < 0)
			return -ENOMEM;
	}
	return 0;
}

static void snapshot_window(struct clip_gz_builder *b)
{
	size_t start = (b->hist_pos + W - b->hist_len) % W;
	size_t first = clip_gz_min_size(b->hist_len, W - start);
	memcpy(b->cand_window, b->hist + start, first);
	memcpy(b->cand_window + first, b->hist, b->hist_len - first);
	b->cand_window_len = b->hist_len;
}

static int arena_reserve(struct clip_gz_builder *b, size_t n)
{
	if (b->arena_cap - b->arena_len >= n)
		return 0;
	size_t cap = b->arena_cap ? b->arena_cap : 256 * 1024;
	while (cap - b->arena_len < n)
		cap *= 2;
	unsigned char *p = realloc(b->arena, cap);
	if (p == NULL)
		return -ENOMEM;
	b->arena = p;
	b->arena_cap = cap;
	return 0;
}

/* ---- sparse windows ----------------------------------------------------- */

static struct pending_window *pending_oldest(struct clip_gz_builder *b)
{
	return &b->pending[b->pending_head];
}

/* Where the compressed bytes someone may still want start: at the oldest
 * pending window's checkpoint, else at the open candidate (a checkpoint to
 * be, maybe); false when nobody wants any. */
static bool look_from(struct clip_gz_builder *b, uint64_t *from)
{
	if (b->npending > 0)
		*from = b->points[pending_oldest(b)->point].in;
	else if (b->cand_state == CAND_OPEN)
		*from = b->cand.in;
	else
		return false;
	return true;
}

/* Forget the kept compressed bytes nobody can use any more. */
static void look_trim(struct clip_gz_builder *b)
{
	uint64_t from;
	if (!look_from(b, &from))
		from = b->fed_in;
	if (from <= b->look_base)
		return;
	size_t drop =
		(size_t)(from - b->look_base < b->look_len ? from - b->look_base : b->look_len);
	memmove(b->look, b->look + drop, b->look_len - drop);
	b->look_len -= drop;
	b->look_base = b->look_len ? b->look_base + drop : from;
}

/* Compress window `win` of checkpoint `i` into the arena and hash what is
 * stored. */
static int store_window(struct clip_gz_builder *b, size_t i, const unsigned char *win, size_t len)
{
	size_t bound = ZSTD_compressBound(W);
	if (arena_reserve(b, bound))
		return -ENOMEM;
	unsigned char *dst = b->arena + b->arena_len;
	uint8_t codec = CLIP_GZ_WINDOW_RAW;
	size_t zlen = len;
	if (len > 0) {
		size_t z =
			ZSTD_compressCCtx(b->zc, dst, bound, win, len, CLIP_GZ_WINDOW_ZSTD_LEVEL);
		if (!ZSTD_isError(z) && z < len) {
			codec = CLIP_GZ_WINDOW_ZSTD;
			zlen = z;
		} else {
			memcpy(dst, win, len);
		}
	}
	struct clip_gz_point *p = &b->points[i];
	p->window_codec = codec;
	p->window_len = (uint32_t)len;
	p->window_zlen = (uint32_t)zlen;
	b->wz_off[i] = b->arena_len;
	b->arena_len += zlen;
	clip_sha256_once(dst, zlen, p->window_sha256);
	return 0;
}

/* Store the oldest pending window: sparse when the compressed bytes kept for
 * it tell exactly what it needs, whole otherwise. Leading bytes nothing
 * reaches are dropped: the window is the last window_len bytes before the
 * checkpoint, and a shorter one is just as good to an inflater when no
 * distance reaches past it. */
static int resolve_oldest(struct clip_gz_builder *b)
{
	struct pending_window *e = pending_oldest(b);
	const struct clip_gz_point *p = &b->points[e->point];
	const unsigned char *win = e->window;
	size_t len = e->len;
	if (len > 0 && p->in >= b->look_base && p->in - b->look_base <= b->look_len) {
		size_t off = (size_t)(p->in - b->look_base), first;
		int r = clip_gz_sparse_run(&b->sparse, e->window, e->len, p->bits, e->partial,
					   b->look + off, b->look_len - off, &first);
		if (r < 0)
			return r;
		if (r > 0) {
			win = b->sparse.window + first;
			len -= first;
		}
	}
	int r = store_window(b, e->point, win, len);
	if (r < 0)
		return r;
	b->pending_head = (b->pending_head + 1) % PENDING_MAX;
	b->npending--;
	look_trim(b);
	return 0;
}

/* At boundary `bd` (in and out in step): store the pending windows whose
 * checkpoint's first 32 KiB of output, or the rest of its member, are in. */
static int resolve_ready(struct clip_gz_builder *b, const struct clip_gz_boundary *bd)
{
	while (b->npending > 0) {
		const struct pending_window *e = pending_oldest(b);
		if (e->len > 0 && !bd->member_start && bd->out - b->points[e->point].out < W)
			break;
		int r = resolve_oldest(b);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Keep compressed bytes `p` (starting at fed_in) for the windows that may
 * need them; a pending window whose LOOK_CAP bytes are all in is stored. */
static int look_feed(struct clip_gz_builder *b, const unsigned char *p, size_t len)
{
	uint64_t at = b->fed_in, from;
	while (len > 0 && look_from(b, &from)) {
		look_trim(b);
		if (b->look_base + b->look_len != at)
			return 0; /* a gap: whoever is oldest will keep its window */
		if (b->look_len == LOOK_CAP) {
			if (b->npending == 0)
				return 0; /* the candidate has all it may use */
			int r = resolve_oldest(b);
			if (r < 0)
				return r;
			continue;
		}
		size_t n = clip_gz_min_size(len, LOOK_CAP - b->look_len);
		memcpy(b->look + b->look_len, p, n);
		b->look_len += n;
		p += n;
		len -= n;
		at += n;
	}
	return 0;
}

/* ---- checkpoints -------------------------------------------------------- */

/* Append the candidate as a checkpoint; its window comes later. */
static int push_point(struct clip_gz_builder *b)
{
	if (b->count == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 64;
		struct clip_gz_point *p = realloc(b->points, cap * sizeof(*p));
		if (p == NULL)
			return -ENOMEM;
		b->points = p;
		uint64_t *o = realloc(b->wz_off, cap * sizeof(*o));
		if (o == NULL)
			return -ENOMEM;
		b->wz_off = o;
		uint64_t *a = realloc(b->after_out, cap * sizeof(*a));
		if (a == NULL)
			return -ENOMEM;
		b->after_out = a;
		b->cap = cap;
	}
	if (b->npending == PENDING_MAX) {
		int r = resolve_oldest(b);
		if (r < 0)
			return r;
	}

	struct clip_gz_point *p = &b->points[b->count];
	memset(p, 0, sizeof(*p));
	p->in = b->cand.in;
	p->out = b->cand.out;
	p->bits = b->cand.bits;
	b->after_out[b->count] = UINT64_MAX;

	struct pending_window *e = &b->pending[(b->pending_head + b->npending) % PENDING_MAX];
	e->point = b->count;
	e->partial = b->cand_partial;
	e->len = b->cand_window_len;
	memcpy(e->window, b->cand_window, e->len);
	b->npending++;
	b->count++;
	return 0;
}

static void pop_point(struct clip_gz_builder *b)
{
	b->count--;
	if (b->npending > 0) {
		/* Windows are stored in order: if any is pending, this one is. */
		b->npending--;
		look_trim(b);
	} else {
		b->arena_len = b->wz_off[b->count];
	}
}
/* The most recent boundary becomes a checkpoint after the fact (a file
 * hint asked for it). Only when the candidate adds something: it lies after
 * the last checkpoint and output follows it. */
static int choose_cand_late(struct clip_gz_builder *b)
{
	if (b->cand_state != CAND_OPEN || b->count == 0)
		return 0;
	if (b->cand.out <= b->points[b->count - 1].out || b->cand.out >= b->fed_out)
		return 0;
	if (push_point(b))
		return -ENOMEM;
	b->cand_state = CAND_CHOSEN;
	return 0;
}

/* The candidate, just seen, becomes a checkpoint now. */
static int choose_cand_now(struct clip_gz_builder *b)
{
	/* The last checkpoint produced nothing: the new one replaces it. */
	if (b->count > 0 && b->points[b->count - 1].out == b->cand.out)
		pop_point(b);
	if (push_point(b))
		return -ENOMEM;
	b->cand_state = CAND_CHOSEN;
	return 0;
}

static void hint_push(struct clip_gz_builder *b, uint64_t v)
{
	size_t i = b->nhints++;
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (b->hints[parent] <= v)
			break;
		b->hints[i] = b->hints[parent];
		i = parent;
	}
	b->hints[i] = v;
}

static void hint_pop(struct clip_gz_builder *b)
{
	uint64_t v = b->hints[--b->nhints];
	size_t i = 0, n = b->nhints;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && b->hints[c + 1] < b->hints[c])
			c++;
		if (v <= b->hints[c])
			break;
		b->hints[i] = b->hints[c];
		i = c;
	}
	if (n > 0)
		b->hints[i] = v;
}

int clip_gz_builder_compressed(struct clip_gz_builder *b, const void *in, size_t len,
			       struct clip_err *err)
{
	const unsigned char *p = in;
	if (b->failed)
		return clip_err_set(err, b->failed, "gzip index builder: failed earlier");
	if (len == 0)
		return 0;
	int r = look_feed(b, p, len);
	if (r < 0)
		return build_fail(b, err, -r, "storing a window");
	if (piece_feed(b, p, len) < 0)
		return build_fail(b, err, ENOMEM, "out of memory");
	b->fed_in += len;
	b->last_byte = p[len - 1];
	return 0;
}

int clip_gz_builder_uncompressed(struct clip_gz_builder *b, const void *out, size_t len,
				 struct clip_err *err)
{
	const unsigned char *p = out;
	if (b->failed)
		return clip_err_set(err, b->failed, "gzip index builder: failed earlier");
	if (len == 0)
		return 0;
	if (len >= W) {
		memcpy(b->hist, p + len - W, W);
		b->hist_pos = 0;
		b->hist_len = W;
	} else {
		size_t first = clip_gz_min_size(len, W - b->hist_pos);
		memcpy(b->hist + b->hist_pos, p, first);
		memcpy(b->hist, p + first, len - first);
		b->hist_pos = (b->hist_pos + len) % W;
		b->hist_len = clip_gz_min_size(b->hist_len + len, W);
	}
	b->fed_out += len;
	return 0;
}

int clip_gz_builder_boundary(struct clip_gz_builder *b, const struct clip_gz_boundary *bd,
			     struct clip_err *err)
{
	if (b->failed)
		return clip_err_set(err, b->failed, "gzip index builder: failed earlier");
	if (bd->in != b->fed_in || bd->out != b->fed_out) {
		b->failed =
			clip_err_set(err, EINVAL,
				     "gzip index builder: boundary at in %llu, out %llu "
				     "but %llu, %llu bytes fed",
				     (unsigned long long)bd->in, (unsigned long long)bd->out,
				     (unsigned long long)b->fed_in, (unsigned long long)b->fed_out);
		return b->failed;
	}
	if (bd->bits > 7 || (bd->bits && bd->in == 0) ||
	    (b->cand_state == CAND_NONE && !bd->member_start)) {
		b->failed = clip_err_set(
			err, EINVAL, "gzip index builder: invalid boundary at in %llu (bits %u%s)",
			(unsigned long long)bd->in, bd->bits,
			b->cand_state == CAND_NONE ? ", not a member start" : "");
		return b->failed;
	}

	if (b->cand_state == CAND_CHOSEN)
		b->after_out[b->count - 1] = bd->out;

	/* A hint for an offset before this boundary wants the previous one. */
	bool fire = false;
	while (b->nhints > 0 && b->hints[0] < bd->out) {
		hint_pop(b);
		fire = true;
	}
	if (fire && choose_cand_late(b))
		return build_fail(b, err, ENOMEM, "out of memory");

	if (bd->member_start)
		b->hist_len = 0; /* windows never reach into the previous member */
	snapshot_window(b);
	b->cand = *bd;
	b->cand_partial = b->last_byte;
	b->cand_state = CAND_OPEN;
	look_trim(b);

	bool now = bd->member_start;
	if (b->count > 0) {
		uint64_t last = b->points[b->count - 1].out;
		if (bd->out > last && bd->out - last >= b->opt.span_bytes)
			now = true;
	}
	if (now && choose_cand_now(b))
		return build_fail(b, err, ENOMEM, "out of memory");
	int r = resolve_ready(b, bd);
	if (r < 0)
		return build_fail(b, err, -r, "storing a window");
	return 0;
}

int clip_gz_builder_file(struct clip_gz_builder *b, uint64_t data_offset, uint64_t size,
			 struct clip_err *err)
{
	if (b->failed)
		return clip_err_set(err, b->failed, "gzip index builder: failed earlier");
	if (size <= b->opt.large_file_threshold)
		return 0;

	if (b->cand_state == CAND_NONE || data_offset >= b->fed_out) {
		/* A boundary at or before data_offset may still come. */
		if (b->nhints == b->hints_cap) {
			size_t cap = b->hints_cap ? b->hints_cap * 2 : 16;
			uint64_t *h = realloc(b->hints, cap * sizeof(*h));
			if (h == NULL)
				return build_fail(b, err, ENOMEM, "out of memory");
			b->hints = h;
			b->hints_cap = cap;
		}
		hint_push(b, data_offset);
		return 0;
	}
	if (b->cand.out <= data_offset) {
		if (choose_cand_late(b))
			return build_fail(b, err, ENOMEM, "out of memory");
		return 0;
	}
	/* The wanted boundary was followed by another one already; fine if it
	 * is a checkpoint anyway. */
	struct clip_gz_index view = { .count = b->count, .points = b->points };
	ssize_t i = clip_gz_index_find(&view, data_offset);
	if (i >= 0 && b->after_out[i] > data_offset)
		return 0;
	b->failed = clip_err_set(err, EINVAL,
				 "gzip index builder: file at offset %llu announced after the "
				 "boundary at %llu was fed (hints must come before the first "
				 "boundary past the file's start)",
				 (unsigned long long)data_offset, (unsigned long long)b->cand.out);
	return b->failed;
}

int clip_gz_builder_finish(struct clip_gz_builder *b, struct clip_gz_index **out,
			   struct clip_err *err)
{
	*out = NULL;
	if (b->failed)
		return clip_err_set(err, b->failed, "gzip index builder: failed earlier");
	if (b->nhints > 0) {
		b->nhints = 0;
		if (choose_cand_late(b))
			return build_fail(b, err, ENOMEM, "out of memory");
	}
	/* Nothing after it: useless, and its predecessor's span runs on. */
	if (b->count > 0 && b->points[b->count - 1].out == b->fed_out)
		pop_point(b);
	/* The whole stream is in: every window can be made sparse. */
	while (b->npending > 0) {
		int r = resolve_oldest(b);
		if (r < 0)
			return build_fail(b, err, -r, "storing a window");
	}
	if (b->piece_fill > 0 && piece_close(b) < 0)
		return build_fail(b, err, ENOMEM, "out of memory");
	b->cand_state = CAND_NONE;
	b->failed = -EINVAL; /* finished: any further use is a caller bug */

	struct clip_gz_index *index = calloc(1, sizeof(*index));
	if (index == NULL)
		return clip_err_set(err, ENOMEM, "gzip index builder: out of memory");
	index->csize = b->fed_in;
	index->usize = b->fed_out;
	index->count = b->count;
	index->points = clip_steal(b->points);
	index->owned_storage = clip_steal(b->arena);
	index->owns_points = true;
	index->piece_bytes = b->piece_bytes;
	index->npieces = b->npieces;
	index->owned_pieces = clip_steal(b->pieces);
	index->piece_sha256 = index->owned_pieces;
	b->npieces = b->pieces_cap = 0;
	for (size_t i = 0; i < index->count; i++)
		index->points[i].window_z = (unsigned char *)index->owned_storage + b->wz_off[i];
	b->count = b->cap = 0;
	*out = index;
	return 0;
}
