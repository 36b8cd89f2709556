/* clip: gzip checkpoints — the scanner.
 *
 * The inflating thread of indexing runs a gzip stream through zlib with
 * Z_BLOCK so that inflate stops at every deflate block boundary, and reports
 * each one (compressed and uncompressed offset, unused bits) for the builder
 * (gzindex_build.c) to pick checkpoints from. It walks concatenated members
 * and the zero padding between them, and checks each member's trailer.
 */
#include "clip/gzindex.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l.h>
#include <zlib.h>

#include "gzindex_internal.h"
#include "util.h"

enum scan_state {
	SCAN_FIRST_MEMBER, /* nothing consumed yet */
	SCAN_IN_MEMBER,
	SCAN_BETWEEN_MEMBERS, /* after a member's trailer: zero padding or a new member */
};

/* The scanner checks each member's CRC-32 and length itself, with ISA-L's
 * folding CRC, and turns zlib's check off (inflateValidate): zlib's table CRC
 * measurably slowed the inflating thread, the one serial stage of indexing,
 * and ISA-L's costs a small fraction of it. The trailer is the last 8 bytes
 * of the member, kept in `tail` as they pass. */
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

		size_t avail_in = clip_gz_min_size(in_len - iu, CLIP_GZ_FEED_MAX);
		size_t avail_out = clip_gz_min_size(out_cap - ou, CLIP_GZ_FEED_MAX);
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
