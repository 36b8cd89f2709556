/* Streaming tar parser: a state machine fed arbitrary pieces of the stream.
 *
 * Only header blocks (512 bytes) and extended-header payloads (at most
 * CLIP_TAR_MAX_EXT_HEADER bytes) are ever buffered; member data is counted
 * off without being looked at. Values from extended headers are collected in
 * two attribute sets, `global` ('g', kept until the end) and `local` ('x',
 * 'L', 'K', cleared after each member), and merged over the ustar header when
 * the member's own header block arrives.
 */
#include "clip/tar.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define BLOCK 512

/* Header field offsets and widths (POSIX ustar; old GNU shares all but the
 * prefix, where it keeps atime/ctime). */
#define OFF_NAME     0
#define LEN_NAME     100
#define OFF_MODE     100
#define OFF_UID	     108
#define OFF_GID	     116
#define OFF_SIZE     124
#define OFF_MTIME    136
#define OFF_CHKSUM   148
#define OFF_TYPE     156
#define OFF_LINKNAME 157
#define LEN_LINKNAME 100
#define OFF_MAGIC    257
#define OFF_UNAME    265
#define OFF_GNAME    297
#define LEN_OWNER    32
#define OFF_DEVMAJOR 329
#define OFF_DEVMINOR 337
#define OFF_PREFIX   345
#define LEN_PREFIX   155

#define SCHILY_XATTR "SCHILY.xattr."

#define GNU_SPARSE "GNU.sparse."

enum parser_state {
	ST_HEADER, /* collecting a header block */
	ST_EXT,	   /* collecting an extended header's payload */
	ST_SKIP,   /* skipping member data and padding */
	ST_END,	   /* after the end-of-archive marker: ignore everything */
	ST_FAILED, /* an error was returned; refuse further input */
};

/* Where an extended-header value stands. UNSET falls through to the next
 * layer (local, then global, then the ustar header); DELETED is a PAX record
 * with an empty value in an 'x' header, which hides the global default and
 * lets the header's own field through (POSIX pax semantics). */
enum value_state { V_UNSET = 0, V_SET, V_DELETED };

struct string_value {
	enum value_state state;
	char *str; /* owned; set when state == V_SET */
};

struct number_value {
	enum value_state state;
	uint64_t num;
};

struct owned_xattr {
	char *name;	      /* owned */
	unsigned char *value; /* owned, may be NULL when len == 0 */
	size_t len;
};

/* Values one layer of extended headers supplies. */
struct attrs {
	struct string_value path, linkpath, uname, gname;
	struct number_value size, uid, gid;
	enum value_state mtime_state;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	struct owned_xattr *xattrs; /* owned array */
	size_t nxattrs, xattrs_cap;
	/* GNU 'L' / 'K' payloads (only in `local`) */
	char *longname, *longlink;
};

struct clip_tar_parser {
	clip_tar_entry_fn fn;
	void *opaque;
	enum parser_state state;
	uint64_t offset; /* bytes consumed so far */

	unsigned char block[BLOCK];
	size_t block_len;

	/* ST_SKIP: bytes left to skip, of member data (and its padding) or
	 * only of an extended header's padding. */
	uint64_t skip;
	bool skip_data;

	/* ST_EXT: the extended header being read. */
	char ext_type;
	uint64_t ext_offset; /* its header block */
	unsigned char *ext;  /* owned, ext_size + 1 bytes (a NUL for 'L'/'K') */
	size_t ext_size, ext_len;

	/* An extended header ('x', 'L', 'K') has started a member whose own
	 * header has not arrived yet; member_offset is its first block. */
	bool in_member;
	uint64_t member_offset;

	struct attrs global, local;

	/* The last member reported, for the "truncated data" message. */
	char path[CLIP_TAR_MAX_PATH + 1];
	uint64_t data_offset;
	/* Scratch for the entry handed to the callback. */
	char link[CLIP_TAR_MAX_PATH + 1];
	char raw[CLIP_TAR_MAX_PATH + 1]; /* the path before normalisation */
	char uname[LEN_OWNER + 1], gname[LEN_OWNER + 1];
	struct clip_tar_xattr *entry_xattrs; /* owned array */
	size_t entry_xattrs_cap;
	uint64_t xattr_bytes; /* names and values reported so far */
};

/* ---- attribute sets ------------------------------------------------------ */

static void string_value_reset(struct string_value *v)
{
	free(v->str);
	v->str = NULL;
	v->state = V_UNSET;
}

static void attrs_reset(struct attrs *a)
{
	string_value_reset(&a->path);
	string_value_reset(&a->linkpath);
	string_value_reset(&a->uname);
	string_value_reset(&a->gname);
	for (size_t i = 0; i < a->nxattrs; i++) {
		free(a->xattrs[i].name);
		free(a->xattrs[i].value);
	}
	free(a->xattrs);
	free(a->longname);
	free(a->longlink);
	memset(a, 0, sizeof(*a));
}

/* The value the member gets: local over global, DELETED falling to the header. */
static const struct string_value *pick_string(const struct string_value *local,
					      const struct string_value *global)
{
	if (local->state != V_UNSET)
		return local;
	return global;
}

static const struct number_value *pick_number(const struct number_value *local,
					      const struct number_value *global)
{
	if (local->state != V_UNSET)
		return local;
	return global;
}

/* ---- small helpers ------------------------------------------------------- */

static const char *type_name(char type)
{
	switch (type) {
	case 'x': return "pax header";
	case 'g': return "pax global header";
	case 'L': return "GNU long name header";
	default: return "GNU long link header";
	}
}

/* `type` printable for messages: the character itself, or \xNN. */
static const char *type_repr(char type, char buf[8])
{
	unsigned char c = (unsigned char)type;
	if (c >= 0x20 && c < 0x7f)
		snprintf(buf, 8, "%c", c);
	else
		snprintf(buf, 8, "\\x%02x", c);
	return buf;
}

static int fail(struct clip_tar_parser *p, int code)
{
	p->state = ST_FAILED;
	return code;
}

/* Error about the member whose header is at `hoff`; `name` may be NULL when
 * it is not known yet. */
static int __attribute__((format(printf, 5, 6)))
member_error(struct clip_tar_parser *p, struct clip_err *err, uint64_t hoff, const char *name,
	     const char *fmt, ...)
{
	char reason[CLIP_ERR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (name != NULL)
		clip_err_set(err, EBADMSG, "tar member \"%.256s\" at offset %" PRIu64 ": %s", name,
			     hoff, reason);
	else
		clip_err_set(err, EBADMSG, "tar header at offset %" PRIu64 ": %s", hoff, reason);
	return fail(p, -EBADMSG);
}

static int out_of_memory(struct clip_tar_parser *p, struct clip_err *err, uint64_t hoff)
{
	clip_err_set(err, ENOMEM, "tar header at offset %" PRIu64 ": out of memory", hoff);
	return fail(p, -ENOMEM);
}

/* ---- numeric fields ------------------------------------------------------ */

enum num_result { NUM_OK, NUM_GARBAGE, NUM_OVERFLOW, NUM_NEGATIVE };

static const char *num_reason(enum num_result r)
{
	switch (r) {
	case NUM_GARBAGE: return "is not a valid number";
	case NUM_OVERFLOW: return "overflows";
	default: return "is negative";
	}
}

/* Parse a header number: octal digits after optional leading spaces, ended
 * by NUL, space or the end of the field (as GNU tar reads them), or GNU
 * base-256 when the high bit of the first byte is set. A field without any
 * digit is 0, as old writers leave unused fields empty. Values beyond `max`
 * overflow; negative values are only accepted when `allow_negative`. */
static enum num_result parse_number(const unsigned char *f, size_t width, uint64_t max,
				    bool allow_negative, int64_t *out)
{
	if (f[0] & 0x80) {
		bool negative = f[0] & 0x40;
		/* For a negative value accumulate the complement, whose
		 * magnitude is -value - 1 and therefore cannot overflow first. */
		uint64_t flip = negative ? 0xff : 0x00;
		uint64_t mag = (f[0] ^ flip) & 0x3f;
		for (size_t i = 1; i < width; i++) {
			if (mag > (UINT64_MAX >> 8))
				return NUM_OVERFLOW;
			mag = (mag << 8) | ((f[i] ^ flip) & 0xff);
		}
		if (negative) {
			if (!allow_negative)
				return NUM_NEGATIVE;
			if (mag > (uint64_t)INT64_MAX)
				return NUM_OVERFLOW;
			*out = -(int64_t)mag - 1;
			return NUM_OK;
		}
		if (mag > max)
			return NUM_OVERFLOW;
		*out = (int64_t)mag;
		return NUM_OK;
	}

	size_t i = 0;
	while (i < width && f[i] == ' ')
		i++;
	uint64_t v = 0;
	for (; i < width && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v > (max >> 3))
			return NUM_OVERFLOW;
		v = (v << 3) | (uint64_t)(f[i] - '0');
		if (v > max)
			return NUM_OVERFLOW;
	}
	if (i < width && f[i] != '\0' && f[i] != ' ')
		return NUM_GARBAGE;
	*out = (int64_t)v;
	return NUM_OK;
}

/* Decimal digits only, at least one, no sign. */
static enum num_result parse_decimal(const char *s, size_t len, uint64_t max, uint64_t *out)
{
	if (len == 0)
		return NUM_GARBAGE;
	uint64_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return NUM_GARBAGE;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (max - d) / 10)
			return NUM_OVERFLOW;
		v = v * 10 + d;
	}
	*out = v;
	return NUM_OK;
}

/* PAX time: [-]SECONDS[.FRACTION]; digits past nanoseconds are dropped. */
static enum num_result parse_pax_time(const char *s, size_t len, int64_t *sec, uint32_t *nsec)
{
	bool negative = len > 0 && s[0] == '-';
	size_t start = negative ? 1 : 0;
	size_t dot = start;
	while (dot < len && s[dot] != '.')
		dot++;
	uint64_t whole;
	enum num_result r = parse_decimal(s + start, dot - start, (uint64_t)INT64_MAX, &whole);
	if (r != NUM_OK)
		return r;
	uint32_t frac = 0;
	if (dot < len) {
		uint32_t scale = 100000000;
		for (size_t i = dot + 1; i < len; i++) {
			if (s[i] < '0' || s[i] > '9')
				return NUM_GARBAGE;
			frac += (uint32_t)(s[i] - '0') * scale;
			scale /= 10;
		}
	}
	if (!negative) {
		*sec = (int64_t)whole;
		*nsec = frac;
	} else if (frac == 0) {
		*sec = -(int64_t)whole;
		*nsec = 0;
	} else {
		/* -1.25 is one and a quarter seconds before 0: -2 + 0.75. */
		*sec = -(int64_t)whole - 1;
		*nsec = 1000000000u - frac;
	}
	return NUM_OK;
}

/* ---- extended headers ---------------------------------------------------- */

static int set_xattr(struct clip_tar_parser *p, struct attrs *a, const char *name, size_t nlen,
		     const char *value, size_t vlen, uint64_t hoff, struct clip_err *err)
{
	if (nlen == 0)
		return member_error(p, err, hoff, NULL, "pax header: empty xattr name");
	if (memchr(name, '\0', nlen) != NULL)
		return member_error(p, err, hoff, NULL, "pax header: NUL byte in xattr name");
	if (vlen > CLIP_TAR_MAX_XATTR_VALUE)
		return member_error(p, err, hoff, NULL,
				    "pax header: xattr value of %zu bytes exceeds the limit of %u",
				    vlen, CLIP_TAR_MAX_XATTR_VALUE);

	cleanup_free unsigned char *copy = NULL;
	if (vlen > 0) {
		copy = malloc(vlen);
		if (copy == NULL)
			return out_of_memory(p, err, hoff);
		memcpy(copy, value, vlen);
	}
	for (size_t i = 0; i < a->nxattrs; i++) {
		const char *have = a->xattrs[i].name;
		if (strlen(have) == nlen && memcmp(have, name, nlen) == 0) {
			free(a->xattrs[i].value);
			a->xattrs[i].value = clip_steal(copy);
			a->xattrs[i].len = vlen;
			return 0;
		}
	}
	if (a->nxattrs >= CLIP_TAR_MAX_XATTRS)
		return member_error(p, err, hoff, NULL, "pax header: more than %d xattrs",
				    CLIP_TAR_MAX_XATTRS);
	if (a->nxattrs == a->xattrs_cap) {
		size_t cap = a->xattrs_cap ? a->xattrs_cap * 2 : 8;
		struct owned_xattr *x = realloc(a->xattrs, cap * sizeof(*x));
		if (x == NULL)
			return out_of_memory(p, err, hoff);
		a->xattrs = x;
		a->xattrs_cap = cap;
	}
	char *n = clip_strdup_len(name, nlen);
	if (n == NULL)
		return out_of_memory(p, err, hoff);
	a->xattrs[a->nxattrs++] = (struct owned_xattr){ n, clip_steal(copy), vlen };
	return 0;
}

static int set_string(struct clip_tar_parser *p, struct string_value *v, bool global,
		      const char *key, const char *value, size_t len, uint64_t hoff,
		      struct clip_err *err)
{
	if (len == 0) {
		string_value_reset(v);
		/* Only an 'x' record has to hide the global default. */
		v->state = global ? V_UNSET : V_DELETED;
		return 0;
	}
	if (memchr(value, '\0', len) != NULL)
		return member_error(p, err, hoff, NULL, "pax header: NUL byte in %s", key);
	if (len > CLIP_TAR_MAX_PATH)
		return member_error(p, err, hoff, NULL,
				    "pax header: %s of %zu bytes exceeds the limit of %d", key, len,
				    CLIP_TAR_MAX_PATH);
	char *s = clip_strdup_len(value, len);
	if (s == NULL)
		return out_of_memory(p, err, hoff);
	string_value_reset(v);
	v->str = s;
	v->state = V_SET;
	return 0;
}

static int set_number(struct clip_tar_parser *p, struct number_value *v, bool global,
		      const char *key, const char *value, size_t len, uint64_t max, uint64_t hoff,
		      struct clip_err *err)
{
	if (len == 0) {
		v->state = global ? V_UNSET : V_DELETED;
		return 0;
	}
	enum num_result r = parse_decimal(value, len, max, &v->num);
	if (r != NUM_OK)
		return member_error(p, err, hoff, NULL, "pax header: %s value %s", key,
				    num_reason(r));
	v->state = V_SET;
	return 0;
}

static bool key_is(const char *key, size_t klen, const char *want)
{
	return strlen(want) == klen && memcmp(key, want, klen) == 0;
}

static bool key_has_prefix(const char *key, size_t klen, const char *prefix)
{
	size_t n = strlen(prefix);
	return klen >= n && memcmp(key, prefix, n) == 0;
}

static int apply_pax_record(struct clip_tar_parser *p, struct attrs *a, bool global,
			    const char *key, size_t klen, const char *value, size_t vlen,
			    uint64_t hoff, struct clip_err *err)
{
	if (key_is(key, klen, "path"))
		return set_string(p, &a->path, global, "path", value, vlen, hoff, err);
	if (key_is(key, klen, "linkpath"))
		return set_string(p, &a->linkpath, global, "linkpath", value, vlen, hoff, err);
	if (key_is(key, klen, "uname"))
		return set_string(p, &a->uname, global, "uname", value, vlen, hoff, err);
	if (key_is(key, klen, "gname"))
		return set_string(p, &a->gname, global, "gname", value, vlen, hoff, err);
	if (key_is(key, klen, "size"))
		return set_number(p, &a->size, global, "size", value, vlen, (uint64_t)INT64_MAX,
				  hoff, err);
	if (key_is(key, klen, "uid"))
		return set_number(p, &a->uid, global, "uid", value, vlen, UINT32_MAX, hoff, err);
	if (key_is(key, klen, "gid"))
		return set_number(p, &a->gid, global, "gid", value, vlen, UINT32_MAX, hoff, err);
	if (key_is(key, klen, "mtime")) {
		if (vlen == 0) {
			a->mtime_state = global ? V_UNSET : V_DELETED;
			return 0;
		}
		enum num_result r = parse_pax_time(value, vlen, &a->mtime_sec, &a->mtime_nsec);
		if (r != NUM_OK)
			return member_error(p, err, hoff, NULL, "pax header: mtime value %s",
					    num_reason(r));
		a->mtime_state = V_SET;
		return 0;
	}
	if (key_has_prefix(key, klen, SCHILY_XATTR)) {
		size_t n = strlen(SCHILY_XATTR);
		return set_xattr(p, a, key + n, klen - n, value, vlen, hoff, err);
	}
	if (key_has_prefix(key, klen, GNU_SPARSE))
		return member_error(p, err, hoff, NULL, "sparse files are not supported");
	/* atime, ctime, comment, charset, LIBARCHIVE.*, SCHILY.dev, ...: not
	 * part of what clip serves. */
	return 0;
}

/* Parse a PAX payload: records "LEN KEY=VALUE\n", LEN in decimal counting
 * the whole record. Trailing NUL padding (written by some old tools) ends
 * the payload. */
static int parse_pax(struct clip_tar_parser *p, const unsigned char *buf, size_t size, bool global,
		     uint64_t hoff, struct clip_err *err)
{
	struct attrs *a = global ? &p->global : &p->local;
	const char *what = global ? "pax global header" : "pax header";
	const char *s = (const char *)buf;
	size_t pos = 0;

	while (pos < size) {
		if (s[pos] == '\0') {
			for (size_t i = pos; i < size; i++)
				if (s[i] != '\0')
					return member_error(p, err, hoff, NULL,
							    "%s: garbage after NUL at byte %zu",
							    what, pos);
			break;
		}
		size_t i = pos;
		uint64_t reclen = 0;
		while (i < size && s[i] >= '0' && s[i] <= '9') {
			reclen = reclen * 10 + (uint64_t)(s[i] - '0');
			if (reclen > size - pos)
				return member_error(p, err, hoff, NULL,
						    "%s: record at byte %zu runs past the end of "
						    "the header",
						    what, pos);
			i++;
		}
		if (i == pos || i >= size || s[i] != ' ')
			return member_error(p, err, hoff, NULL,
					    "%s: record at byte %zu: length is not a number", what,
					    pos);
		size_t end = pos + (size_t)reclen;
		/* The smallest record after the length is " k=\n". */
		if (end < i + 4 || s[end - 1] != '\n')
			return member_error(p, err, hoff, NULL,
					    "%s: record at byte %zu: length %" PRIu64 " is wrong",
					    what, pos, reclen);
		const char *key = s + i + 1;
		const char *eq = memchr(key, '=', (size_t)(s + end - 1 - key));
		if (eq == NULL)
			return member_error(p, err, hoff, NULL, "%s: record at byte %zu has no '='",
					    what, pos);
		if (eq == key)
			return member_error(p, err, hoff, NULL,
					    "%s: record at byte %zu has an "
					    "empty key",
					    what, pos);
		const char *value = eq + 1;
		int rc = apply_pax_record(p, a, global, key, (size_t)(eq - key), value,
					  (size_t)(s + end - 1 - value), hoff, err);
		if (rc < 0)
			return rc;
		pos = end;
	}
	return 0;
}

/* The extended header's payload is complete. */
static int finish_ext(struct clip_tar_parser *p, struct clip_err *err)
{
	uint64_t hoff = p->ext_offset;
	int rc = 0;
	if (p->ext_type == 'x' || p->ext_type == 'g') {
		rc = parse_pax(p, p->ext, p->ext_size, p->ext_type == 'g', hoff, err);
	} else {
		/* GNU writes the name NUL-terminated; tolerate a missing NUL. */
		p->ext[p->ext_size] = '\0';
		size_t n = strlen((char *)p->ext);
		if (n > CLIP_TAR_MAX_PATH)
			rc = member_error(p, err, hoff, NULL,
					  "%s: %zu bytes exceeds the limit of %d",
					  type_name(p->ext_type), n, CLIP_TAR_MAX_PATH);
		else {
			char **dst = p->ext_type == 'L' ? &p->local.longname : &p->local.longlink;
			free(*dst);
			*dst = strdup((char *)p->ext);
			if (*dst == NULL)
				rc = out_of_memory(p, err, hoff);
		}
	}
	free(p->ext);
	p->ext = NULL;
	return rc;
}

/* ---- member headers ------------------------------------------------------ */

static bool is_zero_block(const unsigned char *b)
{
	for (size_t i = 0; i < BLOCK; i++)
		if (b[i] != 0)
			return false;
	return true;
}

static bool checksum_ok(const unsigned char *b)
{
	int64_t stored;
	if (parse_number(b + OFF_CHKSUM, 8, UINT32_MAX, false, &stored) != NUM_OK)
		return false;
	/* Historic writers summed signed chars; accept either. */
	uint64_t usum = 0;
	int64_t ssum = 0;
	for (size_t i = 0; i < BLOCK; i++) {
		unsigned char c = (i >= OFF_CHKSUM && i < OFF_CHKSUM + 8) ? ' ' : b[i];
		usum += c;
		ssum += (signed char)c;
	}
	return (int64_t)usum == stored || ssum == stored;
}

/* Copy a header string field (NUL-terminated or filling the field). */
static size_t field_copy(char *dst, const unsigned char *f, size_t width)
{
	size_t n = strnlen((const char *)f, width);
	memcpy(dst, f, n);
	dst[n] = '\0';
	return n;
}

/* Normalise `in` into `out` (CLIP_TAR_MAX_PATH + 1 bytes): drop empty and
 * "." components, reject "..". Returns NULL, or the reason for refusing. */
static const char *normalise_path(const char *in, char *out)
{
	size_t o = 0;
	const char *s = in;
	while (*s != '\0') {
		const char *slash = strchr(s, '/');
		size_t n = slash ? (size_t)(slash - s) : strlen(s);
		if (n == 2 && s[0] == '.' && s[1] == '.')
			return "path escapes the root";
		if (n > 0 && !(n == 1 && s[0] == '.')) {
			/* The input fits the buffer and output never grows. */
			if (o > 0)
				out[o++] = '/';
			memcpy(out + o, s, n);
			o += n;
		}
		s += n;
		if (*s == '/')
			s++;
	}
	out[o] = '\0';
	return NULL;
}

static int member_field(struct clip_tar_parser *p, struct clip_err *err, uint64_t hoff,
			const char *name, const char *field, size_t off, size_t width, uint64_t max,
			bool allow_negative, int64_t *out)
{
	enum num_result r = parse_number(p->block + off, width, max, allow_negative, out);
	if (r != NUM_OK)
		return member_error(p, err, hoff, name, "%s field %s", field, num_reason(r));
	return 0;
}

static int build_xattrs(struct clip_tar_parser *p, size_t *count, uint64_t hoff, const char *name,
			struct clip_err *err)
{
	size_t need = p->global.nxattrs + p->local.nxattrs;
	if (need > p->entry_xattrs_cap) {
		struct clip_tar_xattr *x = realloc(p->entry_xattrs, need * sizeof(*x));
		if (x == NULL)
			return out_of_memory(p, err, hoff);
		p->entry_xattrs = x;
		p->entry_xattrs_cap = need;
	}
	size_t n = 0;
	for (size_t i = 0; i < p->global.nxattrs; i++) {
		const struct owned_xattr *g = &p->global.xattrs[i];
		bool overridden = false;
		for (size_t j = 0; j < p->local.nxattrs && !overridden; j++)
			overridden = strcmp(p->local.xattrs[j].name, g->name) == 0;
		if (!overridden)
			p->entry_xattrs[n++] = (struct clip_tar_xattr){ g->name, g->value, g->len };
	}
	for (size_t i = 0; i < p->local.nxattrs; i++) {
		const struct owned_xattr *l = &p->local.xattrs[i];
		p->entry_xattrs[n++] = (struct clip_tar_xattr){ l->name, l->value, l->len };
	}
	if (n > CLIP_TAR_MAX_XATTRS)
		return member_error(p, err, hoff, name, "more than %d xattrs", CLIP_TAR_MAX_XATTRS);
	uint64_t bytes = 0;
	for (size_t i = 0; i < n; i++)
		bytes += strlen(p->entry_xattrs[i].name) + 1 + p->entry_xattrs[i].len;
	if (bytes > CLIP_TAR_MAX_MEMBER_XATTR_BYTES)
		return member_error(p, err, hoff, name,
				    "xattrs of %llu bytes exceed the limit of %u per member",
				    (unsigned long long)bytes, CLIP_TAR_MAX_MEMBER_XATTR_BYTES);
	p->xattr_bytes += bytes;
	if (p->xattr_bytes > CLIP_TAR_MAX_LAYER_XATTR_BYTES)
		return member_error(p, err, hoff, name,
				    "xattrs exceed the limit of %llu bytes in one layer",
				    (unsigned long long)CLIP_TAR_MAX_LAYER_XATTR_BYTES);
	*count = n;
	return 0;
}

/* The member's name as stored, into p->raw: a PAX path, else a GNU long
 * name, else the header's name (after its prefix in a POSIX ustar header). */
static void member_raw_name(struct clip_tar_parser *p, bool ustar, bool gnu)
{
	const unsigned char *b = p->block;
	const struct string_value *pax_path = pick_string(&p->local.path, &p->global.path);
	if (pax_path->state == V_SET) {
		snprintf(p->raw, sizeof(p->raw), "%s", pax_path->str);
	} else if (p->local.longname != NULL) {
		snprintf(p->raw, sizeof(p->raw), "%s", p->local.longname);
	} else {
		char name[LEN_NAME + 1], prefix[LEN_PREFIX + 1];
		field_copy(name, b + OFF_NAME, LEN_NAME);
		size_t plen = ustar && !gnu ? field_copy(prefix, b + OFF_PREFIX, LEN_PREFIX) : 0;
		if (plen > 0)
			snprintf(p->raw, sizeof(p->raw), "%s/%s", prefix, name);
		else
			snprintf(p->raw, sizeof(p->raw), "%s", name);
	}
}

/* The entry type of header type `typeflag` for member `name`; sparse and
 * unknown types are errors. */
static int member_type(struct clip_tar_parser *p, struct clip_err *err, uint64_t hoff,
		       const char *name, char typeflag, enum clip_tar_type *type)
{
	char repr[8];
	switch (typeflag) {
	case '0':
	case '\0':
	case '7':
		*type = CLIP_TAR_REG;
		/* Pre-POSIX archivers marked directories by a trailing slash. */
		if (name[strlen(name) - 1] == '/')
			*type = CLIP_TAR_DIR;
		return 0;
	case '1': *type = CLIP_TAR_HARDLINK; return 0;
	case '2': *type = CLIP_TAR_SYMLINK; return 0;
	case '3': *type = CLIP_TAR_CHR; return 0;
	case '4': *type = CLIP_TAR_BLK; return 0;
	case '5': *type = CLIP_TAR_DIR; return 0;
	case '6': *type = CLIP_TAR_FIFO; return 0;
	case 'S': return member_error(p, err, hoff, name, "sparse files are not supported");
	default:
		return member_error(p, err, hoff, name, "unsupported tar entry type '%s'",
				    type_repr(typeflag, repr));
	}
}

/* A number from the PAX record `pax` when one is set, else from the
 * unsigned header field at `off`. */
static int pax_or_field(struct clip_tar_parser *p, struct clip_err *err, uint64_t hoff,
			const char *name, const struct number_value *pax, const char *field,
			size_t off, size_t width, uint64_t max, uint64_t *out)
{
	if (pax->state == V_SET) {
		*out = pax->num;
		return 0;
	}
	int64_t v;
	int rc = member_field(p, err, hoff, name, field, off, width, max, false, &v);
	if (rc < 0)
		return rc;
	*out = (uint64_t)v;
	return 0;
}

/* The numeric fields, PAX records over the header's: mode, owner ids, data
 * size (*pax_size when a PAX record gave it), mtime, device numbers. */
static int member_numbers(struct clip_tar_parser *p, struct clip_err *err, uint64_t hoff,
			  const char *name, struct clip_tar_entry *e, uint64_t *size,
			  bool *pax_size)
{
	int64_t v;
	int rc = member_field(p, err, hoff, name, "mode", OFF_MODE, 8, UINT32_MAX, false, &v);
	if (rc < 0)
		return rc;
	e->mode = (uint32_t)v & 07777;

	uint64_t id;
	rc = pax_or_field(p, err, hoff, name, pick_number(&p->local.uid, &p->global.uid), "uid",
			  OFF_UID, 8, UINT32_MAX, &id);
	if (rc < 0)
		return rc;
	e->uid = (uint32_t)id;
	rc = pax_or_field(p, err, hoff, name, pick_number(&p->local.gid, &p->global.gid), "gid",
			  OFF_GID, 8, UINT32_MAX, &id);
	if (rc < 0)
		return rc;
	e->gid = (uint32_t)id;

	const struct number_value *nv = pick_number(&p->local.size, &p->global.size);
	*pax_size = nv->state == V_SET;
	rc = pax_or_field(p, err, hoff, name, nv, "size", OFF_SIZE, 12, (uint64_t)INT64_MAX, size);
	if (rc < 0)
		return rc;

	const struct attrs *mt = p->local.mtime_state != V_UNSET ? &p->local : &p->global;
	if (mt->mtime_state == V_SET) {
		e->mtime_sec = mt->mtime_sec;
		e->mtime_nsec = mt->mtime_nsec;
	} else {
		/* GNU tar stores pre-1970 times as negative base-256. */
		rc = member_field(p, err, hoff, name, "mtime", OFF_MTIME, 12, (uint64_t)INT64_MAX,
				  true, &e->mtime_sec);
		if (rc < 0)
			return rc;
	}

	if (e->type == CLIP_TAR_CHR || e->type == CLIP_TAR_BLK) {
		/* Only meaningful (and only reliably filled in) for devices. */
		rc = member_field(p, err, hoff, name, "devmajor", OFF_DEVMAJOR, 8, UINT32_MAX,
				  false, &v);
		if (rc < 0)
			return rc;
		e->devmajor = (uint32_t)v;
		rc = member_field(p, err, hoff, name, "devminor", OFF_DEVMINOR, 8, UINT32_MAX,
				  false, &v);
		if (rc < 0)
			return rc;
		e->devminor = (uint32_t)v;
	}
	return 0;
}

/* The owner names, PAX records over the header's ("" when neither has one). */
static void member_owner_names(struct clip_tar_parser *p, bool ustar, struct clip_tar_entry *e)
{
	const unsigned char *b = p->block;
	const struct string_value *sv = pick_string(&p->local.uname, &p->global.uname);
	if (sv->state == V_SET) {
		e->uname = sv->str;
	} else {
		p->uname[0] = '\0';
		if (ustar)
			field_copy(p->uname, b + OFF_UNAME, LEN_OWNER);
		e->uname = p->uname;
	}
	sv = pick_string(&p->local.gname, &p->global.gname);
	if (sv->state == V_SET) {
		e->gname = sv->str;
	} else {
		p->gname[0] = '\0';
		if (ustar)
			field_copy(p->gname, b + OFF_GNAME, LEN_OWNER);
		e->gname = p->gname;
	}
}

/* The target of a symlink (as stored) or hard link (normalised, and neither
 * empty nor the root), into p->link: a PAX linkpath, else a GNU long link,
 * else the header's. p->raw is overwritten; messages name the member by
 * p->path. */
static int member_link(struct clip_tar_parser *p, struct clip_err *err, uint64_t hoff,
		       struct clip_tar_entry *e)
{
	const struct string_value *sv = pick_string(&p->local.linkpath, &p->global.linkpath);
	if (sv->state == V_SET)
		snprintf(p->raw, sizeof(p->raw), "%s", sv->str);
	else if (p->local.longlink != NULL)
		snprintf(p->raw, sizeof(p->raw), "%s", p->local.longlink);
	else
		field_copy(p->raw, p->block + OFF_LINKNAME, LEN_LINKNAME);
	const char *name = p->path;
	if (e->type == CLIP_TAR_SYMLINK) {
		memcpy(p->link, p->raw, strlen(p->raw) + 1);
	} else {
		if (p->raw[0] == '\0')
			return member_error(p, err, hoff, name, "empty hard link target");
		const char *reason = normalise_path(p->raw, p->link);
		if (reason != NULL)
			return member_error(p, err, hoff, name, "hard link target: %s", reason);
		if (p->link[0] == '\0')
			return member_error(p, err, hoff, name, "hard link to the root directory");
	}
	e->linkpath = p->link;
	return 0;
}

/* A member's own header block is complete: report it and arrange to skip
 * its data. */
static int handle_member(struct clip_tar_parser *p, uint64_t block_off, bool ustar, bool gnu,
			 struct clip_err *err)
{
	char typeflag = (char)p->block[OFF_TYPE];
	struct clip_tar_entry e;
	memset(&e, 0, sizeof(e));
	/* Errors name the member by its first header, like header_offset. */
	uint64_t hoff = p->in_member ? p->member_offset : block_off;
	e.header_offset = hoff;
	e.data_offset = block_off + BLOCK;

	/* The name first, so that every later message can show it. */
	member_raw_name(p, ustar, gnu);
	const char *name = p->raw;
	if (name[0] == '\0')
		return member_error(p, err, hoff, NULL, "empty path");
	int rc = member_type(p, err, hoff, name, typeflag, &e.type);
	if (rc < 0)
		return rc;
	const char *reason = normalise_path(name, p->path);
	if (reason != NULL)
		return member_error(p, err, hoff, name, "%s", reason);
	e.path = p->path;

	uint64_t size;
	bool pax_size;
	rc = member_numbers(p, err, hoff, name, &e, &size, &pax_size);
	if (rc < 0)
		return rc;
	member_owner_names(p, ustar, &e);
	if (e.type == CLIP_TAR_SYMLINK || e.type == CLIP_TAR_HARDLINK) {
		rc = member_link(p, err, hoff, &e);
		if (rc < 0)
			return rc;
	}
	rc = build_xattrs(p, &e.nxattrs, hoff, p->path, err);
	if (rc < 0)
		return rc;
	e.xattrs = e.nxattrs > 0 ? p->entry_xattrs : NULL;

	/* What follows the header: GNU tar skips `size` bytes for everything
	 * but directories and hard links, and for a hard link only when the
	 * size comes from a PAX record (pax allows hard links with data). */
	uint64_t skip = size;
	if (typeflag == '5' || (e.type == CLIP_TAR_HARDLINK && !pax_size))
		skip = 0;
	e.size = e.type == CLIP_TAR_REG ? size : 0;

	p->data_offset = e.data_offset;
	rc = p->fn(p->opaque, &e, err);
	if (rc < 0)
		return fail(p, rc);

	attrs_reset(&p->local);
	p->in_member = false;
	p->skip = skip + (BLOCK - skip % BLOCK) % BLOCK;
	p->skip_data = true;
	p->state = p->skip > 0 ? ST_SKIP : ST_HEADER;
	return 0;
}

/* A header block is complete. */
static int handle_block(struct clip_tar_parser *p, struct clip_err *err)
{
	const unsigned char *b = p->block;
	uint64_t hoff = p->offset - BLOCK;

	if (is_zero_block(b)) {
		if (p->in_member)
			return member_error(p, err, p->member_offset, NULL,
					    "extended header not followed by a member");
		p->state = ST_END;
		return 0;
	}
	if (!checksum_ok(b))
		return member_error(p, err, hoff, NULL, "checksum mismatch");

	bool ustar = memcmp(b + OFF_MAGIC, "ustar", 5) == 0;
	bool gnu = memcmp(b + OFF_MAGIC, "ustar  \0", 8) == 0;
	char typeflag = (char)b[OFF_TYPE];

	if (typeflag != 'x' && typeflag != 'g' && typeflag != 'L' && typeflag != 'K')
		return handle_member(p, hoff, ustar, gnu, err);

	int64_t size;
	enum num_result r = parse_number(b + OFF_SIZE, 12, (uint64_t)INT64_MAX, false, &size);
	if (r != NUM_OK)
		return member_error(p, err, hoff, NULL, "%s: size field %s", type_name(typeflag),
				    num_reason(r));
	if ((uint64_t)size > CLIP_TAR_MAX_EXT_HEADER)
		return member_error(p, err, hoff, NULL,
				    "%s of %" PRId64 " bytes exceeds the limit of %u bytes",
				    type_name(typeflag), size, CLIP_TAR_MAX_EXT_HEADER);
	/* A global header stands alone; the others belong to the next member. */
	if (typeflag != 'g' && !p->in_member) {
		p->in_member = true;
		p->member_offset = hoff;
	}
	p->ext_type = typeflag;
	p->ext_offset = hoff;
	p->ext_size = (size_t)size;
	p->ext_len = 0;
	p->ext = malloc(p->ext_size + 1);
	if (p->ext == NULL)
		return out_of_memory(p, err, hoff);
	p->state = ST_EXT;
	if (p->ext_size == 0) {
		p->state = ST_HEADER;
		return finish_ext(p, err);
	}
	return 0;
}

/* ---- public API ---------------------------------------------------------- */

struct clip_tar_parser *clip_tar_parser_new(clip_tar_entry_fn fn, void *opaque)
{
	struct clip_tar_parser *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	p->fn = fn;
	p->opaque = opaque;
	p->state = ST_HEADER;
	return p;
}

int clip_tar_parser_feed(struct clip_tar_parser *p, const void *buf, size_t len,
			 struct clip_err *err)
{
	const unsigned char *in = buf;

	if (p->state == ST_FAILED)
		return clip_err_set(err, EINVAL, "tar parser used after an error");
	while (len > 0) {
		size_t n;
		int rc = 0;
		switch (p->state) {
		case ST_HEADER:
			n = BLOCK - p->block_len;
			n = n < len ? n : len;
			memcpy(p->block + p->block_len, in, n);
			p->block_len += n;
			p->offset += n;
			if (p->block_len == BLOCK) {
				p->block_len = 0;
				rc = handle_block(p, err);
			}
			break;
		case ST_EXT:
			n = p->ext_size - p->ext_len;
			n = n < len ? n : len;
			memcpy(p->ext + p->ext_len, in, n);
			p->ext_len += n;
			p->offset += n;
			if (p->ext_len == p->ext_size) {
				p->skip = (BLOCK - p->ext_size % BLOCK) % BLOCK;
				p->skip_data = false;
				p->state = p->skip > 0 ? ST_SKIP : ST_HEADER;
				rc = finish_ext(p, err);
			}
			break;
		case ST_SKIP:
			n = p->skip < len ? (size_t)p->skip : len;
			p->skip -= n;
			p->offset += n;
			if (p->skip == 0)
				p->state = ST_HEADER;
			break;
		case ST_END:
			n = len;
			p->offset += n;
			break;
		default: return clip_err_set(err, EINVAL, "tar parser used after an error");
		}
		if (rc < 0)
			return rc;
		in += n;
		len -= n;
	}
	return 0;
}

int clip_tar_parser_finish(struct clip_tar_parser *p, struct clip_err *err)
{
	switch (p->state) {
	case ST_END: return 0;
	case ST_HEADER:
		if (p->block_len > 0)
			return member_error(p, err, p->offset - p->block_len, NULL,
					    "truncated header (%zu of %d bytes)", p->block_len,
					    BLOCK);
		if (p->in_member)
			return member_error(p, err, p->member_offset, NULL,
					    "truncated: extended header not followed by a member");
		return 0;
	case ST_EXT:
		return member_error(p, err, p->ext_offset, NULL, "truncated %s (%zu of %zu bytes)",
				    type_name(p->ext_type), p->ext_len, p->ext_size);
	case ST_SKIP:
		if (!p->skip_data)
			return member_error(p, err, p->ext_offset, NULL, "truncated %s padding",
					    type_name(p->ext_type));
		clip_err_set(err, EBADMSG,
			     "tar member \"%.256s\" with data at offset %" PRIu64
			     ": truncated data (%" PRIu64 " bytes missing)",
			     p->path, p->data_offset, p->skip);
		return fail(p, -EBADMSG);
	default: return clip_err_set(err, EINVAL, "tar parser used after an error");
	}
}

uint64_t clip_tar_parser_offset(const struct clip_tar_parser *p)
{
	return p->offset;
}

void clip_tar_parser_free(struct clip_tar_parser *p)
{
	if (p == NULL)
		return;
	attrs_reset(&p->global);
	attrs_reset(&p->local);
	free(p->ext);
	free(p->entry_xattrs);
	free(p);
}
