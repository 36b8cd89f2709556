/* Helpers shared by clip's unit tests: a growable byte buffer, a tar writer
 * (high level for well-formed members, low level for deliberately broken
 * headers), gzip compression, temporary directories and a seeded PRNG.
 *
 * Every helper aborts the test program (message on stderr, abort()) when it
 * cannot do its job (out of memory, I/O error, bad argument): a broken helper
 * is a broken test, not a case for the test to handle.
 */
#ifndef CLIP_TESTUTIL_H
#define CLIP_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* ---- byte buffer --------------------------------------------------------- */

/* A growable byte buffer. Zero-initialise it (`struct tt_buf b = {0};`); the
 * buffer owns `data`, release it with tt_buf_free(). `data` may move on every
 * append, so do not keep pointers into it across appends. */
struct tt_buf {
	unsigned char *data;
	size_t len;
	size_t cap;
};

/* Append `len` bytes from `data` (`data` may be NULL when `len` is 0). */
void tt_buf_append(struct tt_buf *buf, const void *data, size_t len);

/* Append `len` zero bytes. */
void tt_buf_append_zeros(struct tt_buf *buf, size_t len);

/* Append printf-formatted text (without its terminating NUL). */
void tt_buf_printf(struct tt_buf *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Free the contents and reset `buf` to empty; it may be reused afterwards. */
void tt_buf_free(struct tt_buf *buf);

/* ---- tar writer: members ------------------------------------------------- */

/* One extended attribute of a member; `value` may contain NUL bytes. */
struct tt_xattr {
	const char *name; /* e.g. "user.x", "security.capability" */
	const void *value;
	size_t len;
};

/* A member for tt_tar_add(). All pointers are borrowed for the call only.
 * Zero means "default" only where noted. */
struct tt_member {
	char type;	      /* '0', '1', '2', ...; 0 means '0' */
	const char *path;     /* written as is (no normalisation); required */
	const char *linkpath; /* link target for '1'/'2'; NULL means "" */
	uint32_t mode;	      /* permission bits, written as given */
	uint32_t uid, gid;
	const char *uname, *gname; /* NULL means "" */
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint32_t devmajor, devminor;
	const void *data; /* `size` bytes of member data (NULL: `size` zeros) */
	size_t size;
	const struct tt_xattr *xattrs;
	size_t nxattrs;
};

/* Append one member as a ustar header, its data and padding to `out`.
 * A PAX 'x' header is written first, carrying exactly the values that ustar
 * cannot: a path that does not fit name[100] (or prefix[155] "/" name[100]
 * split at a slash), a linkpath over 100 bytes, a size/uid/gid/mtime that
 * does not fit its octal field (including negative mtimes), a non-zero
 * mtime_nsec ("mtime=SEC.NNNNNNNNN"), and every xattr ("SCHILY.xattr.NAME").
 * The ustar fields that PAX overrides hold 0 (numbers) or a truncated path. */
void tt_tar_add(struct tt_buf *out, const struct tt_member *member);

/* Append the end-of-archive marker (two zero blocks). */
void tt_tar_finish(struct tt_buf *out);

/* ---- tar writer: raw headers --------------------------------------------- */

#define TT_TAR_BLOCK 512

/* Offsets and widths of the fields of a ustar header block. */
enum {
	TT_OFF_NAME = 0,
	TT_LEN_NAME = 100,
	TT_OFF_MODE = 100,
	TT_LEN_MODE = 8,
	TT_OFF_UID = 108,
	TT_LEN_UID = 8,
	TT_OFF_GID = 116,
	TT_LEN_GID = 8,
	TT_OFF_SIZE = 124,
	TT_LEN_SIZE = 12,
	TT_OFF_MTIME = 136,
	TT_LEN_MTIME = 12,
	TT_OFF_CHKSUM = 148,
	TT_LEN_CHKSUM = 8,
	TT_OFF_TYPE = 156,
	TT_OFF_LINKNAME = 157,
	TT_LEN_LINKNAME = 100,
	TT_OFF_MAGIC = 257,
	TT_LEN_MAGIC = 6,
	TT_OFF_VERSION = 263,
	TT_LEN_VERSION = 2,
	TT_OFF_UNAME = 265,
	TT_LEN_UNAME = 32,
	TT_OFF_GNAME = 297,
	TT_LEN_GNAME = 32,
	TT_OFF_DEVMAJOR = 329,
	TT_LEN_DEVMAJOR = 8,
	TT_OFF_DEVMINOR = 337,
	TT_LEN_DEVMINOR = 8,
	TT_OFF_PREFIX = 345,
	TT_LEN_PREFIX = 155,
};

/* Fill `block` with a POSIX ustar header ("ustar\0" "00"): `type`, `name`
 * (truncated to 100 bytes, no prefix), mode 0644, uid/gid 0, mtime 0,
 * `size`, devmajor/devminor 0, and a valid checksum. Callers that change
 * fields afterwards must call tt_tar_set_checksum() again. */
void tt_tar_header_init(unsigned char block[TT_TAR_BLOCK], char type, const char *name,
			uint64_t size);

/* Turn an initialised header into an old-GNU one (magic "ustar  \0"), whose
 * prefix field is not a prefix. Does not update the checksum. */
void tt_tar_set_gnu_magic(unsigned char block[TT_TAR_BLOCK]);

/* Copy up to `width` bytes of `s` into `field`, zero-filling the rest; a
 * string of exactly `width` bytes gets no NUL terminator, a longer one aborts. */
void tt_tar_set_str(unsigned char *field, size_t width, const char *s);

/* Store `value` as zero-padded octal digits followed by a NUL; aborts when it
 * does not fit in width - 1 digits. */
void tt_tar_set_octal(unsigned char *field, size_t width, uint64_t value);

/* Store `value` in GNU base-256 (two's complement, high bit of the first byte
 * set); aborts when it does not fit. */
void tt_tar_set_base256(unsigned char *field, size_t width, int64_t value);

/* Compute the header checksum (unsigned sum, chksum field counted as spaces)
 * and store it as "NNNNNN\0 ". */
void tt_tar_set_checksum(unsigned char block[TT_TAR_BLOCK]);

/* Append `block` as is, then `len` bytes of `data` (zeros when NULL) padded
 * with zeros to a multiple of 512. The header's own size field is not
 * consulted, so mismatches can be written on purpose. */
void tt_tar_raw(struct tt_buf *out, const unsigned char block[TT_TAR_BLOCK], const void *data,
		size_t len);

/* Append an extended header of type `type` ('x', 'g', 'L', 'K') whose size
 * field is `len`, followed by `payload` and padding. The header name is
 * "././@LongLink" for 'L'/'K' and "PaxHeaders/x" otherwise. */
void tt_tar_ext(struct tt_buf *out, char type, const void *payload, size_t len);

/* Append one correctly sized PAX record "LEN KEY=VALUE\n" to `out` (a payload
 * being built for tt_tar_ext()). `value` may contain NUL bytes. */
void tt_pax_record(struct tt_buf *out, const char *key, const void *value, size_t len);

/* ---- gzip, files, randomness --------------------------------------------- */

/* Compress `len` bytes of `in` into one gzip member with zlib at `level`
 * (0-9, or -1 for zlib's default) and append it to `out`. */
void tt_gzip(const void *in, size_t len, int level, struct tt_buf *out);

/* Make a fresh directory "clip-test-XXXXXX" under $CLIP_TEST_TMPDIR (when set
 * and non-empty) or /tmp. Returns its path, owned by the caller (free()). */
char *tt_tmpdir(void);

/* Remove `path` and, if it is a directory, everything below it (does not
 * follow symlinks). A missing `path` is not an error. */
void tt_rm_rf(const char *path);

/* Create or truncate `path` (mode 0644) and write `len` bytes to it. */
void tt_write_file(const char *path, const void *data, size_t len);

/* A small deterministic PRNG (splitmix64): the next value of `*state`. Tests
 * seed it with a fixed value so that failures reproduce. */
uint64_t tt_rand(uint64_t *state);

/* Fill `buf` with `len` pseudo-random bytes derived from `seed`. */
void tt_fill_random(void *buf, size_t len, uint64_t seed);

/* A deterministic layer digest in hex (64 digits and a NUL) from `seed`. */
void tt_layer_hex(char out[65], uint64_t seed);

/* The bytes of chunk `idx` of layer number `layer`, always the same for the
 * same `salt`, so that any writer produces identical chunks, as with real
 * layers. */
void tt_chunk_bytes(void *buf, size_t len, unsigned layer, uint64_t idx, uint64_t salt);

#endif
