/* clip: gzip checkpoints — scanner, builder and reader.
 *
 * The shape follows zlib's examples/zran.c: an access point is a deflate
 * block boundary plus the bits still unused in the byte before it plus the
 * 32 KiB of output before it. What is added here is that the work is split
 * between two threads (scanner: inflate only; builder: windows and digests),
 * that the builder never holds the compressed stream, that a window keeps
 * only the bytes its span reaches (the rest zero, so it compresses to little),
 * and that every span is verified against a digest before a byte of it is
 * inflated.
 */
#include "clip/gzindex.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <isa-l.h>
#include <zlib.h>
#include <zstd.h>

#include "gzindex_internal.h"
#include "sha256.h"
#include "util.h"

#define W CLIP_GZ_WINDOW

/* zlib and ISA-L count in 32-bit quantities; feed them at most this much. */
#define FEED_MAX (1u << 30)

static size_t min_size(size_t a, size_t b)
{
	return a < b ? a : b;
}

/* ======================================================================== */
/* Scanner                                                                  */
/* ======================================================================== */

enum scan_state {
	SCAN_FIRST_MEMBER, /* nothing consumed yet */
	SCAN_IN_MEMBER,
	SCAN_BETWEEN_MEMBERS, /* after a member's trailer: zero padding or a new member */
};

/* The scanner checks each member's CRC-32 and length itself, with ISA-L's
 * folding CRC, and turns zlib's check off (inflateValidate): zlib's table CRC
 * cost the inflating thread, the one serial stage of indexing, 6-7 % of its
 * time, ISA-L's a tenth of that. The trailer is the last 8 bytes of the
 * member, kept in `tail` as they pass. */
struct clip_gz_scanner {
	z_stream strm;
	enum scan_state state;
	bool header_done; /* the current member's first boundary was reported */
	uint64_t in;	  /* compressed bytes consumed since the start of the stream */
	uint64_t out;
	uint64_t member_in;  /* compressed offset of the current member */
	uint64_t member_out; /* uncompressed offset of the current member */
	uint32_t crc;	     /* CRC-32 of the current member's output so far */
	unsigned char tail[8];
	uint64_t members; /* complete members */
	int failed;	  /* the error code, once the stream is known to be bad */
};

struct clip_gz_scanner *clip_gz_scanner_new(void)
{
	struct clip_gz_scanner *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	/* 15 + 16: gzip wrapper only, so that zlib or raw data is rejected. */
	if (inflateInit2(&s->strm, 15 + 16) != Z_OK) {
		free(s);
		return NULL;
	}
	inflateValidate(&s->strm, 0);
	s->state = SCAN_FIRST_MEMBER;
	return s;
}

void clip_gz_scanner_free(struct clip_gz_scanner *s)
{
	if (s == NULL)
		return;
	inflateEnd(&s->strm);
	free(s);
}

static int scan_fail(struct clip_gz_scanner *s, struct clip_err *err)
{
	const char *zmsg = s->strm.msg ? s->strm.msg : "corrupt data";

	if (!s->header_done) {
		/* zlib says "incorrect header check" when the magic is wrong: for
		 * the first member that is not gzip at all, later it is whatever
		 * followed a complete member. */
		bool magic = strcmp(zmsg, "incorrect header check") == 0;
		if (magic && s->members == 0)
			s->failed = clip_err_set(err, EBADMSG, "not in gzip format");
		else if (magic)
			s->failed = clip_err_set(
				err, EBADMSG, "trailing garbage after gzip member at offset %llu",
				(unsigned long long)s->member_in);
		else
			s->failed = clip_err_set(err, EBADMSG, "gzip member at offset %llu: %s",
						 (unsigned long long)s->member_in, zmsg);
		return s->failed;
	}
	s->failed = clip_err_set(err, EBADMSG, "invalid deflate data at compressed offset %llu: %s",
				 (unsigned long long)s->in, zmsg);
	return s->failed;
}

/* Append the `n` bytes at `p` to the 8-byte window of the last bytes seen. */
static void keep_tail(unsigned char tail[8], const unsigned char *p, size_t n)
{
	if (n >= 8) {
		memcpy(tail, p + n - 8, 8);
	} else if (n > 0) {
		memmove(tail, tail + n, 8 - n);
		memcpy(tail + 8 - n, p, n);
	}
}

/* At the end of a member: its trailer (CRC-32 and length mod 2^32, the last
 * 8 bytes consumed) against what was produced. The messages are zlib's. */
static int member_check(struct clip_gz_scanner *s, struct clip_err *err)
{
	uint32_t want_crc = clip_get_le32(s->tail), want_len = clip_get_le32(s->tail + 4);
	const char *why = NULL;
	if (want_crc != s->crc)
		why = "incorrect data check";
	else if (want_len != (uint32_t)(s->out - s->member_out))
		why = "incorrect length check";
	if (why == NULL)
		return 0;
	s->failed = clip_err_set(err, EBADMSG, "gzip member at offset %llu: %s",
				 (unsigned long long)s->member_in, why);
	return s->failed;
}

int clip_gz_scanner_run(struct clip_gz_scanner *s, const void *in, size_t in_len, size_t *in_used,
			void *out, size_t out_cap, size_t *out_len, struct clip_gz_boundary *bounds,
			size_t bounds_cap, size_t *nbounds, struct clip_err *err)
{
	const unsigned char *ip = in;
	unsigned char dummy;
	size_t iu = 0, ou = 0, nb = 0;
	int ret = 0;

	*in_used = 0;
	*out_len = 0;
	*nbounds = 0;
	if (s->failed)
		return clip_err_set(err, s->failed, "gzip stream: scanner already failed");
	if (out == NULL)
		out = &dummy; /* zlib refuses a NULL next_out even with no room */

	while (nb < bounds_cap) {
		if (s->state == SCAN_BETWEEN_MEMBERS) {
			while (iu < in_len && ip[iu] == 0) {
				iu++;
				s->in++;
			}
			if (iu == in_len)
				break;
			if (ip[iu] != 0x1f) {
				ret = clip_err_set(
					err, EBADMSG,
					"trailing garbage after gzip member at offset %llu",
					(unsigned long long)s->in);
				s->failed = ret;
				break;
			}
			if (inflateReset(&s->strm) != Z_OK ||
			    inflateValidate(&s->strm, 0) != Z_OK) {
				ret = s->failed = clip_err_set(err, EINVAL, "inflateReset failed");
				break;
			}
			s->state = SCAN_IN_MEMBER;
			s->member_in = s->in;
			s->member_out = s->out;
			s->crc = 0;
			s->header_done = false;
		} else if (s->state == SCAN_FIRST_MEMBER) {
			if (iu == in_len)
				break;
			s->state = SCAN_IN_MEMBER;
			s->member_in = 0;
			s->member_out = 0;
			s->crc = 0;
		}

		size_t avail_in = min_size(in_len - iu, FEED_MAX);
		size_t avail_out = min_size(out_cap - ou, FEED_MAX);
		s->strm.next_in = (unsigned char *)ip + iu;
		s->strm.avail_in = (uInt)avail_in;
		s->strm.next_out = (unsigned char *)out + (out_cap ? ou : 0);
		s->strm.avail_out = (uInt)avail_out;
		int zret = inflate(&s->strm, Z_BLOCK);
		size_t got_in = avail_in - s->strm.avail_in;
		size_t got_out = avail_out - s->strm.avail_out;
		if (got_out)
			s->crc = crc32_gzip_refl(s->crc, (unsigned char *)out + ou, got_out);
		keep_tail(s->tail, ip + iu, got_in);
		iu += got_in;
		ou += got_out;
		s->in += got_in;
		s->out += got_out;

		if (zret == Z_STREAM_END) {
			ret = member_check(s, err);
			if (ret < 0)
				break;
			s->state = SCAN_BETWEEN_MEMBERS;
			s->members++;
			continue;
		}
		if (zret == Z_DATA_ERROR || zret == Z_NEED_DICT) {
			ret = scan_fail(s, err);
			break;
		}
		if (zret == Z_MEM_ERROR) {
			ret = s->failed = clip_err_set(err, ENOMEM, "inflate: out of memory");
			break;
		}
		if (zret == Z_STREAM_ERROR) {
			ret = s->failed = clip_err_set(err, EINVAL, "inflate: inconsistent stream");
			break;
		}
		if (zret == Z_BUF_ERROR)
			break; /* nothing more without more input or room */
		/* Bit 7: stopped at a block boundary or just after the header;
		 * bit 6: that was the last block, nothing follows in this member. */
		if ((s->strm.data_type & 128) && !(s->strm.data_type & 64)) {
			bounds[nb].in = s->in;
			bounds[nb].out = s->out;
			bounds[nb].bits = (uint8_t)(s->strm.data_type & 7);
			bounds[nb].member_start = !s->header_done;
			nb++;
			s->header_done = true;
			continue;
		}
		if (s->strm.avail_in == 0 || s->strm.avail_out == 0)
			break;
	}
	*in_used = iu;
	*out_len = ou;
	*nbounds = nb;
	return ret;
}

int clip_gz_scanner_finish(struct clip_gz_scanner *s, struct clip_err *err)
{
	if (s->failed)
		return clip_err_set(err, s->failed, "gzip stream: scanner already failed");
	if (s->state == SCAN_IN_MEMBER)
		return clip_err_set(err, EBADMSG,
				    "truncated gzip stream (member at offset %llu not complete)",
				    (unsigned long long)s->member_in);
	if (s->members == 0)
		return clip_err_set(err, EBADMSG, "truncated gzip stream (empty)");
	return 0;
}

/* ======================================================================== */
/* The index                                                                */
/* ======================================================================== */

uint64_t clip_gz_span_start(const struct clip_gz_index *index, size_t i)
{
	const struct clip_gz_point *p = &index->points[i];
	return p->in - (p->bits ? 1 : 0);
}

uint64_t clip_gz_span_end(const struct clip_gz_index *index, size_t i)
{
	return i + 1 < index->count ? index->points[i + 1].in : index->csize;
}

ssize_t clip_gz_index_find(const struct clip_gz_index *index, uint64_t offset)
{
	if (index == NULL || index->points == NULL)
		return -1;
	size_t lo = 0, hi = index->count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (index->points[mid].out <= offset)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (ssize_t)lo - 1;
}

void clip_gz_index_free(struct clip_gz_index *index)
{
	if (index == NULL)
		return;
	if (index->owns_points)
		free(index->points);
	free(index->owned_storage);
	free(index->owned_pieces);
	free(index);
}

/* ======================================================================== */
/* Resuming inflate at a checkpoint (the reader, and the builder's trials)  */
/* ======================================================================== */

/* One resumed raw-deflate stream: primed, dictionary set, fed a span. */
struct resume {
	enum clip_gz_inflater kind;
	z_stream z;
	bool z_ready;
	struct inflate_state *isal;
	const unsigned char *in;
	size_t in_left;
	uint64_t produced;
};

/* Start inflating `in` (the bytes after the checkpoint's byte in - 1) with the
 * top `bits` bits of `partial` (that byte) primed and `window` as history. */
static int resume_start(struct resume *r, unsigned bits, unsigned char partial,
			const unsigned char *in, size_t in_len, const unsigned char *window,
			size_t window_len)
{
	unsigned primed = bits ? (unsigned)partial >> (8 - bits) : 0;

	r->in = in;
	r->in_left = in_len;
	r->produced = 0;
	if (r->kind == CLIP_GZ_INFLATER_ZLIB) {
		if (!r->z_ready) {
			memset(&r->z, 0, sizeof(r->z));
			if (inflateInit2(&r->z, -15) != Z_OK)
				return -ENOMEM;
			r->z_ready = true;
		} else if (inflateReset(&r->z) != Z_OK) {
			return -EINVAL;
		}
		if (bits && inflatePrime(&r->z, (int)bits, (int)primed) != Z_OK)
			return -EINVAL;
		if (window_len && inflateSetDictionary(&r->z, window, (uInt)window_len) != Z_OK)
			return -EINVAL;
		r->z.avail_in = 0; /* inflateReset() keeps the last span's leftovers */
		return 0;
	}
	if (r->isal == NULL) {
		r->isal = malloc(sizeof(*r->isal));
		if (r->isal == NULL)
			return -ENOMEM;
	}
	isal_inflate_init(r->isal);
	r->isal->crc_flag = ISAL_DEFLATE;
	if (window_len &&
	    isal_inflate_set_dict(r->isal, (uint8_t *)window, (uint32_t)window_len) != COMP_OK)
		return -EINVAL;
	r->isal->read_in = primed;
	r->isal->read_in_length = (int32_t)bits;
	r->isal->avail_in = 0;
	return 0;
}

enum resume_stop {
	RESUME_FULL,	/* all that was asked for is out */
	RESUME_END,	/* the deflate stream ended first */
	RESUME_STARVED, /* the input ran out first */
};

/* Inflate into `dst` until `len` bytes are out, the deflate stream ends or the
 * input runs out; *stop says which, *got how much came out. 0, or a negative
 * errno with `*why` (-EBADMSG: the data does not inflate). */
static int resume_run(struct resume *r, unsigned char *dst, size_t len, size_t *got,
		      enum resume_stop *stop, const char **why)
{
	*got = 0;
	*stop = RESUME_FULL;
	while (len > 0) {
		size_t chunk_out = min_size(len, FEED_MAX);
		size_t n, in_before;
		bool ended = false, stuck;
		if (r->kind == CLIP_GZ_INFLATER_ZLIB) {
			if (r->z.avail_in == 0) {
				r->z.next_in = (unsigned char *)r->in;
				r->z.avail_in = (uInt)min_size(r->in_left, FEED_MAX);
				r->in += r->z.avail_in;
				r->in_left -= r->z.avail_in;
			}
			r->z.next_out = dst;
			r->z.avail_out = (uInt)chunk_out;
			in_before = r->z.avail_in;
			int ret = inflate(&r->z, Z_NO_FLUSH);
			n = chunk_out - r->z.avail_out;
			if (ret == Z_DATA_ERROR || ret == Z_NEED_DICT || ret == Z_STREAM_ERROR) {
				*why = r->z.msg ? r->z.msg : "invalid deflate data";
				return -EBADMSG;
			}
			if (ret == Z_MEM_ERROR) {
				*why = "out of memory";
				return -ENOMEM;
			}
			ended = ret == Z_STREAM_END;
			stuck = n == 0 && r->z.avail_in == in_before &&
				(r->z.avail_in > 0 || r->in_left == 0);
		} else {
			struct inflate_state *s = r->isal;
			if (s->avail_in == 0) {
				s->next_in = (uint8_t *)r->in;
				s->avail_in = (uint32_t)min_size(r->in_left, FEED_MAX);
				r->in += s->avail_in;
				r->in_left -= s->avail_in;
			}
			s->next_out = dst;
			s->avail_out = (uint32_t)chunk_out;
			in_before = s->avail_in;
			int ret = isal_inflate(s);
			n = chunk_out - s->avail_out;
			if (ret < 0) {
				*why = ret == ISAL_INVALID_LOOKBACK
					       ? "invalid distance too far back"
				       : ret == ISAL_INVALID_SYMBOL ? "invalid symbol"
								    : "invalid block";
				return -EBADMSG;
			}
			/* FINISH, not INPUT_DONE: all output has been flushed. */
			ended = s->block_state == ISAL_BLOCK_FINISH;
			stuck = n == 0 && s->avail_in == in_before &&
				(s->avail_in > 0 || r->in_left == 0);
		}
		r->produced += n;
		*got += n;
		dst += n;
		len -= n;
		if (len == 0)
			break;
		if (ended) {
			*stop = RESUME_END;
			break;
		}
		if (stuck) {
			*stop = RESUME_STARVED;
			break;
		}
	}
	return 0;
}

static void resume_end(struct resume *r)
{
	if (r->z_ready)
		inflateEnd(&r->z);
	free(r->isal);
}

/* ======================================================================== */
/* Span digests                                                             */
/* ======================================================================== */

/* span_sha256 = SHA-256(SHA-256(window) || SHA-256(compressed span)): the two
 * halves are hashed apart because the builder learns the stored (sparse)
 * window only after it has hashed the first part of the span, and it never
 * keeps a span whole. */

/* The span digest from its two halves; `out` may alias either. */
static void sha_span(const unsigned char window_md[32], const unsigned char compressed_md[32],
		     unsigned char out[32])
{
	unsigned char both[64];
	memcpy(both, window_md, 32);
	memcpy(both + 32, compressed_md, 32);
	clip_sha256_once(both, sizeof(both), out);
}

/* ======================================================================== */
/* Builder                                                                  */
/* ======================================================================== */

/* Sparse windows. Output more than 32 KiB after a checkpoint cannot reach
 * its window (deflate distances are at most 32 KiB), and which window bytes
 * the first 32 KiB do reach is fixed by the compressed bits alone, so the
 * builder can tell exactly (sparsify()) and store every other window byte as
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

	/* sparsify(): the two synthetic dictionaries, the two outputs, and
	 * the sparse window; W bytes each, in one allocation. */
	unsigned char *scratch;
	struct resume trial;

	/* Pending large-file hints (data offsets), a min-heap. */
	uint64_t *hints;
	size_t nhints, hints_cap;

	ZSTD_CCtx *zc;
};

enum { SCRATCH_DICT_LO, SCRATCH_DICT_MIX, SCRATCH_OUT_LO, SCRATCH_OUT_MIX, SCRATCH_SPARSE };

static unsigned char *scratch_buf(struct clip_gz_builder *b, int which)
{
	return b->scratch + (size_t)which * W;
}

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
	b->scratch = malloc(5 * (size_t)W);
	b->zc = ZSTD_createCCtx();
	if (b->look == NULL || b->pending == NULL || b->scratch == NULL || b->zc == NULL) {
		clip_gz_builder_free(b);
		return NULL;
	}
	b->trial.kind = CLIP_GZ_INFLATER_DEFAULT;
	/* Window position w holds w & 0xff in one dictionary and that XOR
	 * 1 + (w >> 8) (never 0) in the other: see sparsify(). */
	unsigned char *lo = scratch_buf(b, SCRATCH_DICT_LO),
		      *mix = scratch_buf(b, SCRATCH_DICT_MIX);
	for (size_t w = 0; w < W; w++) {
		lo[w] = (unsigned char)w;
		mix[w] = (unsigned char)(w ^ (1 + (w >> 8)));
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
	free(b->scratch);
	resume_end(&b->trial);
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
		size_t n = min_size(len, b->piece_bytes - b->piece_fill);
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
	size_t first = min_size(b->hist_len, W - start);
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

/* Set the scratch SPARSE window to pending window `e` with every byte that
 * the first 32 KiB of output after its checkpoint do not reach set to zero,
 * from the compressed bytes `in` that follow the checkpoint. That output is
 * inflated twice, from dictionaries in which window position w holds w & 0xff
 * and (w & 0xff) ^ (1 + (w >> 8)). Which output bytes are literals and which
 * are copies, from how far back, is fixed by the compressed bits and not by
 * the window, so every byte that is not a copy of the window, directly or
 * through earlier output, comes out the same in both runs, and every one that
 * is differs and spells its source w. Returns 1 with *first (the first byte
 * reached; e->len when none is) set, 0 when `in` does not hold the 32 KiB or
 * the end of the deflate stream (or does not inflate): the window must then
 * be kept whole. */
static int sparsify(struct clip_gz_builder *b, const struct pending_window *e, unsigned bits,
		    const unsigned char *in, size_t in_len, size_t *first)
{
	unsigned char *out[2] = { scratch_buf(b, SCRATCH_OUT_LO), scratch_buf(b, SCRATCH_OUT_MIX) };
	const unsigned char *dict[2] = { scratch_buf(b, SCRATCH_DICT_LO),
					 scratch_buf(b, SCRATCH_DICT_MIX) };
	size_t got[2];
	for (int k = 0; k < 2; k++) {
		enum resume_stop stop;
		const char *why;
		int r = resume_start(&b->trial, bits, e->partial, in, in_len, dict[k], e->len);
		if (r == 0)
			r = resume_run(&b->trial, out[k], W, &got[k], &stop, &why);
		if (r == -ENOMEM)
			return r;
		if (r < 0 || stop == RESUME_STARVED)
			return 0;
	}
	if (got[0] != got[1])
		return 0; /* cannot be: the same bits give the same structure */

	unsigned char *sparse = scratch_buf(b, SCRATCH_SPARSE);
	size_t len = e->len, lo = len;
	memset(sparse, 0, len);
	for (size_t i = 0; i < got[0]; i++) {
		unsigned d = out[0][i] ^ out[1][i];
		if (d == 0)
			continue;
		size_t w = out[0][i] | (size_t)(d - 1) << 8;
		if (w >= len)
			return 0; /* cannot be either: no dictionary byte says so */
		sparse[w] = e->window[w];
		if (w < lo)
			lo = w;
	}
	*first = lo;
	return 1;
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
		int r = sparsify(b, e, p->bits, b->look + off, b->look_len - off, &first);
		if (r < 0)
			return r;
		if (r > 0) {
			win = scratch_buf(b, SCRATCH_SPARSE) + first;
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
		size_t n = min_size(len, LOOK_CAP - b->look_len);
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
		size_t first = min_size(len, W - b->hist_pos);
		memcpy(b->hist + b->hist_pos, p, first);
		memcpy(b->hist, p + first, len - first);
		b->hist_pos = (b->hist_pos + len) % W;
		b->hist_len = min_size(b->hist_len + len, W);
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

/* ======================================================================== */
/* Reader                                                                   */
/* ======================================================================== */

/* pread until `len` bytes or the end of the blob; returns bytes read. */
static ssize_t source_read(const struct clip_blob_source *src, void *buf, size_t len,
			   uint64_t offset, struct clip_err *err)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n =
			src->pread(src->opaque, (char *)buf + got, len - got, offset + got, err);
		if (n < 0) {
			if (err == NULL)
				return n;
			if (err->code == 0)
				return clip_err_set(err, (int)n,
						    "compressed blob: read failed at %llu",
						    (unsigned long long)(offset + got));
			return clip_err_prefix(err, "compressed blob");
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static int window_decode(const struct clip_gz_point *p, ZSTD_DCtx **dctx, unsigned char *dst)
{
	switch (p->window_codec) {
	case CLIP_GZ_WINDOW_RAW:
		if (p->window_zlen != p->window_len)
			return -EBADMSG;
		if (p->window_len)
			memcpy(dst, p->window_z, p->window_len);
		return 0;
	case CLIP_GZ_WINDOW_DEFLATE: {
		z_stream z;
		memset(&z, 0, sizeof(z));
		if (inflateInit2(&z, -15) != Z_OK)
			return -ENOMEM;
		z.next_in = (unsigned char *)p->window_z;
		z.avail_in = p->window_zlen;
		z.next_out = dst;
		z.avail_out = p->window_len;
		int ret = inflate(&z, Z_FINISH);
		bool ok = ret == Z_STREAM_END && z.avail_out == 0;
		inflateEnd(&z);
		return ok ? 0 : -EBADMSG;
	}
	case CLIP_GZ_WINDOW_ZSTD: {
		if (*dctx == NULL && (*dctx = ZSTD_createDCtx()) == NULL)
			return -ENOMEM;
		size_t n = ZSTD_decompressDCtx(*dctx, dst, W, p->window_z, p->window_zlen);
		return !ZSTD_isError(n) && n == p->window_len ? 0 : -EBADMSG;
	}
	default: return -EBADMSG;
	}
}

/* Output before the wanted offset is inflated into a scratch buffer of this
 * size, a piece at a time. */
#define SKIP_CHUNK (256u * 1024)

static void blob_unmap(struct clip_blob_map *m)
{
	if (m->base != NULL)
		munmap(m->base, m->base_len);
}

/* What the reader relies on for memory safety, checked on the spans it uses:
 * an index from an archive is trusted only this far. */
static int check_span(const struct clip_gz_index *index, size_t i, struct clip_err *err)
{
	const struct clip_gz_point *p = &index->points[i];
	uint64_t end = clip_gz_span_end(index, i);
	uint64_t next_out = i + 1 < index->count ? index->points[i + 1].out : index->usize;

	if (p->bits > 7 || (p->bits && p->in == 0) || p->window_len > W ||
	    (p->window_zlen && p->window_z == NULL) || p->in > end || end > index->csize ||
	    p->out > next_out || next_out > index->usize)
		return clip_err_set(err, EBADMSG, "gzip index: checkpoint %zu is inconsistent", i);
	return 0;
}

/* The compressed bytes fetched for one read, blob offsets [lo, hi), of which
 * [lo, verified) have been checked against their digests. With piece digests
 * lo is a piece boundary and hi one or the end of the blob, and `verified`
 * moves on a piece at a time as the inflater asks for more; without, every
 * span is checked whole up front and `verified` is hi. */
struct fetched {
	const unsigned char *data;
	uint64_t lo, hi, verified;
};

/* Check the piece at f->verified (there is one before f->hi): 0, or -EBADMSG
 * with err naming span i, the one being read. */
static int verify_piece(const struct clip_gz_index *index, struct fetched *f, size_t i,
			struct clip_err *err)
{
	uint64_t k = f->verified / index->piece_bytes;
	uint64_t a = k * index->piece_bytes;
	uint64_t b = a + index->piece_bytes < index->csize ? a + index->piece_bytes : index->csize;
	unsigned char md[32];
	clip_sha256_once(f->data + (a - f->lo), (size_t)(b - a), md);
	if (memcmp(md, index->piece_sha256 + k * 32, 32) != 0)
		return clip_err_set(err, EBADMSG,
				    "span %zu: digest mismatch (compressed bytes %llu-%llu)", i,
				    (unsigned long long)a, (unsigned long long)b);
	f->verified = b;
	return 0;
}

/* Make sure the byte at blob offset `at` is verified; it must lie in the
 * fetched range (it does not when a span is empty). */
static int verify_through(const struct clip_gz_index *index, struct fetched *f, uint64_t at,
			  size_t i, struct clip_err *err)
{
	if (at >= f->hi)
		return clip_err_set(err, EBADMSG, "span %zu: compressed span ends early", i);
	while (f->verified <= at) {
		int r = verify_piece(index, f, i, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Produce exactly `len` bytes of span i into dst. The inflater has been
 * handed the span's bytes up to min(verified, span_end); when it runs dry,
 * the next piece is verified and handed over. */
static int span_produce(const struct clip_gz_index *index, struct fetched *f, struct resume *r,
			size_t i, uint64_t span_end, unsigned char *dst, size_t len,
			struct clip_err *err)
{
	while (len > 0) {
		size_t got;
		enum resume_stop stop;
		const char *why = "invalid deflate data";
		int ret = resume_run(r, dst, len, &got, &stop, &why);
		if (ret < 0)
			return clip_err_set(err, ret, "span %zu: %s", i, why);
		dst += got;
		len -= got;
		if (len == 0)
			break;
		if (stop == RESUME_END)
			return clip_err_set(err, EBADMSG,
					    "span %zu: deflate stream ends before the span does",
					    i);
		uint64_t at = f->lo + (uint64_t)(r->in - f->data) + r->in_left;
		if (at >= span_end)
			return clip_err_set(err, EBADMSG, "span %zu: compressed span ends early",
					    i);
		ret = verify_through(index, f, at, i, err);
		if (ret < 0)
			return ret;
		r->in_left += (size_t)((f->verified < span_end ? f->verified : span_end) - at);
	}
	return 0;
}

/* The window of checkpoint i, verified (with piece digests: its stored bytes
 * against window_sha256) and decoded into `win`. */
static int window_load(const struct clip_gz_index *index, size_t i, unsigned char *win,
		       ZSTD_DCtx **dctx, struct clip_err *err)
{
	const struct clip_gz_point *p = &index->points[i];
	if (index->piece_bytes) {
		unsigned char md[32];
		clip_sha256_once(p->window_z, p->window_zlen, md);
		if (memcmp(md, p->window_sha256, sizeof(md)) != 0)
			return clip_err_set(err, EBADMSG, "span %zu: window digest mismatch", i);
	}
	int ret = window_decode(p, dctx, win);
	if (ret == -EBADMSG)
		return clip_err_set(err, EBADMSG, "span %zu: window does not decode", i);
	if (ret < 0)
		return clip_err_set(err, ret, "span %zu: decoding window", i);
	return 0;
}

/* Without piece digests: verify every span of the read, window and
 * compressed bytes, before inflating any of it. */
static int verify_spans(const struct clip_gz_index *index, const struct fetched *f, size_t first,
			size_t nspans, unsigned char *win, ZSTD_DCtx **dctx, struct clip_err *err)
{
	for (size_t i = first; i < first + nspans; i++) {
		const struct clip_gz_point *p = &index->points[i];
		unsigned char win_md[32], span_md[32], md[32];
		uint64_t s0 = clip_gz_span_start(index, i), s1 = clip_gz_span_end(index, i);
		int ret = window_load(index, i, win, dctx, err);
		if (ret < 0)
			return ret;
		clip_sha256_once(win, p->window_len, win_md);
		clip_sha256_once(f->data + (s0 - f->lo), (size_t)(s1 - s0), span_md);
		sha_span(win_md, span_md, md);
		if (memcmp(md, p->span_sha256, sizeof(md)) != 0)
			return clip_err_set(err, EBADMSG, "span %zu: digest mismatch", i);
	}
	return 0;
}

ssize_t clip_gz_index_read_with(const struct clip_gz_index *index,
				const struct clip_blob_source *source, void *buf, size_t len,
				uint64_t offset, enum clip_gz_inflater inflater,
				struct clip_gz_read_stats *stats, struct clip_err *err)
{
	if (offset >= index->usize || len == 0)
		return 0;
	uint64_t end = offset + min_size(len, index->usize - offset);
	ssize_t first = clip_gz_index_find(index, offset);
	ssize_t last = clip_gz_index_find(index, end - 1);
	if (first < 0)
		return clip_err_set(
			err, EBADMSG,
			"gzip index: no checkpoint at or before uncompressed offset %llu",
			(unsigned long long)offset);
	for (ssize_t i = first; i <= last; i++) {
		int r = check_span(index, (size_t)i, err);
		if (r < 0)
			return r;
		/* Span starts must not go backwards within the fetched range. */
		if (i > first &&
		    clip_gz_span_start(index, (size_t)i) < clip_gz_span_start(index, (size_t)i - 1))
			return clip_err_set(err, EBADMSG,
					    "gzip index: checkpoint %zd is inconsistent", i);
	}
	uint64_t piece = index->piece_bytes;
	if (piece &&
	    (piece < CLIP_GZ_MIN_PIECE_BYTES || piece > CLIP_GZ_MAX_PIECE_BYTES ||
	     index->piece_sha256 == NULL || index->npieces != (index->csize + piece - 1) / piece))
		return clip_err_set(err, EBADMSG, "gzip index: piece digests are inconsistent");

	size_t nspans = (size_t)(last - first + 1);
	uint64_t cstart = clip_gz_span_start(index, (size_t)first);
	uint64_t cend = clip_gz_span_end(index, (size_t)last);
	struct fetched f = { .lo = cstart, .hi = cend };
	if (piece) {
		/* Whole pieces, so that each can be checked. */
		f.lo = cstart - cstart % piece;
		uint64_t up = cend % piece ? cend - cend % piece + piece : cend;
		f.hi = up < index->csize ? up : index->csize;
	}
	if (f.hi - f.lo > SIZE_MAX / 2)
		return clip_err_set(err, EFBIG, "gzip index: span too large");
	size_t fetch_len = (size_t)(f.hi - f.lo);

	cleanup_free unsigned char *win = malloc(W);
	if (win == NULL)
		return clip_err_set(err, ENOMEM, "gzip read: out of memory");
	cleanup_free unsigned char *copy = NULL;
	__attribute__((cleanup(blob_unmap))) struct clip_blob_map map = { 0 };
	if (source->map != NULL && fetch_len > 0) {
		int r = source->map(source->opaque, f.lo, fetch_len, &map, err);
		if (r < 0)
			return r;
		f.data = map.data;
	} else {
		if ((copy = malloc(fetch_len ? fetch_len : 1)) == NULL)
			return clip_err_set(err, ENOMEM, "gzip read: out of memory (%zu bytes)",
					    fetch_len);
		ssize_t got = source_read(source, copy, fetch_len, f.lo, err);
		if (got < 0)
			return got;
		if ((size_t)got < fetch_len)
			return clip_err_set(
				err, EIO, "compressed blob: ends at %llu, index expects %llu bytes",
				(unsigned long long)(f.lo + (uint64_t)got),
				(unsigned long long)f.hi);
		f.data = copy;
	}
	if (stats)
		stats->compressed_bytes += fetch_len;

	ZSTD_DCtx *dctx = NULL;
	int ret = 0;
	f.verified = f.lo;
	if (!piece) {
		/* Whole-span digests: all of it before any output, so that a
		 * corrupt span never leaves partial output behind. */
		ret = verify_spans(index, &f, (size_t)first, nspans, win, &dctx, err);
		f.verified = f.hi;
	}

	struct resume r = { .kind = inflater };
	cleanup_free unsigned char *scratch = NULL;
	unsigned char *dst = buf;
	for (size_t k = 0; k < nspans && ret == 0; k++) {
		size_t i = (size_t)first + k;
		const struct clip_gz_point *p = &index->points[i];
		uint64_t next_out = i + 1 < index->count ? index->points[i + 1].out : index->usize;
		uint64_t from = offset > p->out ? offset : p->out;
		uint64_t to = end < next_out ? end : next_out;
		if (from >= to)
			continue; /* an empty span */
		uint64_t s0 = clip_gz_span_start(index, i);
		uint64_t s1 = clip_gz_span_end(index, i);
		if ((ret = window_load(index, i, win, &dctx, err)) < 0 ||
		    (ret = verify_through(index, &f, s0, i, err)) < 0)
			break;
		/* The span starts with the byte holding the primed bits, if any;
		 * the inflater gets what is verified of the rest. */
		const unsigned char *span = f.data + (s0 - f.lo);
		size_t partial = p->bits ? 1 : 0;
		uint64_t avail = (f.verified < s1 ? f.verified : s1) - s0 - partial;
		ret = resume_start(&r, p->bits, partial ? span[0] : 0, span + partial,
				   (size_t)avail, win, p->window_len);
		if (ret < 0) {
			ret = clip_err_set(err, ret, "span %zu: cannot start inflate", i);
			break;
		}
		uint64_t skip = from - p->out;
		if (skip > 0 && scratch == NULL && (scratch = malloc(SKIP_CHUNK)) == NULL) {
			ret = clip_err_set(err, ENOMEM, "gzip read: out of memory");
			break;
		}
		while (skip > 0 && ret == 0) {
			size_t n = (size_t)(skip < SKIP_CHUNK ? skip : SKIP_CHUNK);
			ret = span_produce(index, &f, &r, i, s1, scratch, n, err);
			skip -= n;
		}
		if (ret == 0)
			ret = span_produce(index, &f, &r, i, s1, dst, (size_t)(to - from), err);
		if (stats) {
			stats->spans++;
			stats->inflated_bytes += r.produced;
		}
		dst += to - from;
	}
	resume_end(&r);
	ZSTD_freeDCtx(dctx);
	if (ret < 0)
		return ret;
	return (ssize_t)(end - offset);
}

ssize_t clip_gz_index_read(const struct clip_gz_index *index, const struct clip_blob_source *source,
			   void *buf, size_t len, uint64_t offset, struct clip_gz_read_stats *stats,
			   struct clip_err *err)
{
	return clip_gz_index_read_with(index, source, buf, len, offset, CLIP_GZ_INFLATER_DEFAULT,
				       stats, err);
}

#define FROM_START_CHUNK (256 * 1024)

ssize_t clip_gz_read_from_start(const struct clip_blob_source *source, void *buf, size_t len,
				uint64_t offset, struct clip_gz_read_stats *stats,
				struct clip_err *err)
{
	if (len == 0)
		return 0;
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	uint64_t end = offset + len < offset ? UINT64_MAX : offset + len;
	cleanup_free unsigned char *in = malloc(FROM_START_CHUNK);
	cleanup_free unsigned char *out = malloc(FROM_START_CHUNK);
	struct clip_gz_scanner *s = clip_gz_scanner_new();
	if (in == NULL || out == NULL || s == NULL) {
		clip_gz_scanner_free(s);
		return clip_err_set(err, ENOMEM, "gzip read: out of memory");
	}

	/* The scanner does the multi-member walking and the garbage checks;
	 * boundaries are not needed here. */
	struct clip_gz_boundary bounds[64];
	uint64_t cpos = 0, upos = 0, copied = 0;
	size_t in_have = 0, in_off = 0;
	bool eof = false;
	int ret = 0;
	unsigned char *dst = buf;

	while (upos < end) {
		if (in_off == in_have && !eof) {
			ssize_t n = source_read(source, in, FROM_START_CHUNK, cpos, err);
			if (n < 0) {
				ret = (int)n;
				break;
			}
			if (stats)
				stats->compressed_bytes += (uint64_t)n;
			cpos += (uint64_t)n;
			in_have = (size_t)n;
			in_off = 0;
			eof = (size_t)n < FROM_START_CHUNK;
		}
		size_t used, produced, nb;
		ret = clip_gz_scanner_run(s, in + in_off, in_have - in_off, &used, out,
					  FROM_START_CHUNK, &produced, bounds,
					  CLIP_ARRAY_SIZE(bounds), &nb, err);
		if (ret < 0)
			break;
		in_off += used;
		if (stats)
			stats->inflated_bytes += produced;
		if (upos + produced > offset) {
			uint64_t from = offset > upos ? offset - upos : 0;
			uint64_t to = end - upos < produced ? end - upos : produced;
			memcpy(dst + copied, out + from, (size_t)(to - from));
			copied += to - from;
		}
		upos += produced;
		if (eof && in_off == in_have && produced < FROM_START_CHUNK &&
		    nb < CLIP_ARRAY_SIZE(bounds)) {
			ret = clip_gz_scanner_finish(s, err);
			break;
		}
	}
	clip_gz_scanner_free(s);
	if (ret < 0)
		return ret;
	return (ssize_t)copied;
}
