#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static void __attribute__((noreturn, format(printf, 1, 2))) tt_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("testutil: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

/* ---- byte buffer --------------------------------------------------------- */

static void tt_buf_reserve(struct tt_buf *buf, size_t extra)
{
	if (extra <= buf->cap - buf->len)
		return;
	if (extra > SIZE_MAX / 2 - buf->len)
		tt_die("buffer of %zu bytes cannot grow by %zu", buf->len, extra);
	size_t cap = buf->cap ? buf->cap : 256;
	while (cap - buf->len < extra)
		cap *= 2;
	unsigned char *p = realloc(buf->data, cap);
	if (p == NULL)
		tt_die("out of memory growing a buffer to %zu bytes", cap);
	buf->data = p;
	buf->cap = cap;
}

void tt_buf_append(struct tt_buf *buf, const void *data, size_t len)
{
	if (len == 0)
		return;
	tt_buf_reserve(buf, len);
	memcpy(buf->data + buf->len, data, len);
	buf->len += len;
}

void tt_buf_append_zeros(struct tt_buf *buf, size_t len)
{
	if (len == 0)
		return;
	tt_buf_reserve(buf, len);
	memset(buf->data + buf->len, 0, len);
	buf->len += len;
}

void tt_buf_printf(struct tt_buf *buf, const char *fmt, ...)
{
	char small[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		tt_die("bad format \"%s\"", fmt);
	if ((size_t)n < sizeof(small)) {
		tt_buf_append(buf, small, (size_t)n);
		return;
	}
	/* vsnprintf needs room for the NUL, which is then dropped from len. */
	tt_buf_reserve(buf, (size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf((char *)buf->data + buf->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	buf->len += (size_t)n;
}

void tt_buf_free(struct tt_buf *buf)
{
	free(buf->data);
	buf->data = NULL;
	buf->len = 0;
	buf->cap = 0;
}

/* ---- tar writer: raw headers --------------------------------------------- */

void tt_tar_set_str(unsigned char *field, size_t width, const char *s)
{
	size_t n = strlen(s);
	if (n > width)
		tt_die("\"%s\" does not fit a %zu-byte tar field", s, width);
	memset(field, 0, width);
	memcpy(field, s, n);
}

void tt_tar_set_octal(unsigned char *field, size_t width, uint64_t value)
{
	char tmp[32];
	int n = snprintf(tmp, sizeof(tmp), "%0*" PRIo64, (int)(width - 1), value);
	if (n < 0 || (size_t)n != width - 1)
		tt_die("%" PRIu64 " does not fit a %zu-byte octal field", value, width);
	memcpy(field, tmp, width - 1);
	field[width - 1] = '\0';
}

void tt_tar_set_base256(unsigned char *field, size_t width, int64_t value)
{
	/* Two's complement, most significant byte first, sign-extended over the
	 * whole field; the marker bit then must agree with the sign bit below. */
	uint64_t u = (uint64_t)value;
	for (size_t i = 0; i < width; i++) {
		size_t shift = 8 * (width - 1 - i);
		if (shift >= 64)
			field[i] = value < 0 ? 0xff : 0x00;
		else
			field[i] = (unsigned char)(u >> shift);
	}
	bool neg = value < 0;
	if (((field[0] & 0x40) != 0) != neg || (!neg && (field[0] & 0x80)))
		tt_die("%" PRId64 " does not fit a %zu-byte base-256 field", value, width);
	if (width <= 8 && (neg ? value < -((int64_t)1 << (8 * width - 2))
			       : (uint64_t)value >= ((uint64_t)1 << (8 * width - 2))))
		tt_die("%" PRId64 " does not fit a %zu-byte base-256 field", value, width);
	field[0] |= 0x80;
}

void tt_tar_set_checksum(unsigned char block[TT_TAR_BLOCK])
{
	memset(block + TT_OFF_CHKSUM, ' ', TT_LEN_CHKSUM);
	unsigned sum = 0;
	for (size_t i = 0; i < TT_TAR_BLOCK; i++)
		sum += block[i];
	char tmp[16];
	snprintf(tmp, sizeof(tmp), "%06o", sum & 0777777);
	memcpy(block + TT_OFF_CHKSUM, tmp, 6);
	block[TT_OFF_CHKSUM + 6] = '\0';
	block[TT_OFF_CHKSUM + 7] = ' ';
}

void tt_tar_header_init(unsigned char block[TT_TAR_BLOCK], char type, const char *name,
			uint64_t size)
{
	memset(block, 0, TT_TAR_BLOCK);
	size_t n = strlen(name);
	memcpy(block + TT_OFF_NAME, name, n < TT_LEN_NAME ? n : TT_LEN_NAME);
	tt_tar_set_octal(block + TT_OFF_MODE, TT_LEN_MODE, 0644);
	tt_tar_set_octal(block + TT_OFF_UID, TT_LEN_UID, 0);
	tt_tar_set_octal(block + TT_OFF_GID, TT_LEN_GID, 0);
	tt_tar_set_octal(block + TT_OFF_SIZE, TT_LEN_SIZE, size);
	tt_tar_set_octal(block + TT_OFF_MTIME, TT_LEN_MTIME, 0);
	block[TT_OFF_TYPE] = type;
	memcpy(block + TT_OFF_MAGIC, "ustar\0", 6);
	memcpy(block + TT_OFF_VERSION, "00", 2);
	tt_tar_set_octal(block + TT_OFF_DEVMAJOR, TT_LEN_DEVMAJOR, 0);
	tt_tar_set_octal(block + TT_OFF_DEVMINOR, TT_LEN_DEVMINOR, 0);
	tt_tar_set_checksum(block);
}

void tt_tar_set_gnu_magic(unsigned char block[TT_TAR_BLOCK])
{
	memcpy(block + TT_OFF_MAGIC, "ustar  \0", 8);
}

void tt_tar_raw(struct tt_buf *out, const unsigned char block[TT_TAR_BLOCK], const void *data,
		size_t len)
{
	tt_buf_append(out, block, TT_TAR_BLOCK);
	if (data != NULL)
		tt_buf_append(out, data, len);
	else
		tt_buf_append_zeros(out, len);
	tt_buf_append_zeros(out, (TT_TAR_BLOCK - len % TT_TAR_BLOCK) % TT_TAR_BLOCK);
}

void tt_tar_ext(struct tt_buf *out, char type, const void *payload, size_t len)
{
	unsigned char block[TT_TAR_BLOCK];
	bool gnu = type == 'L' || type == 'K';
	tt_tar_header_init(block, type, gnu ? "././@LongLink" : "PaxHeaders/x", len);
	if (gnu) {
		tt_tar_set_gnu_magic(block);
		tt_tar_set_checksum(block);
	}
	tt_tar_raw(out, block, payload, len);
}

static size_t decimal_digits(size_t n)
{
	size_t d = 1;
	while (n >= 10) {
		n /= 10;
		d++;
	}
	return d;
}

void tt_pax_record(struct tt_buf *out, const char *key, const void *value, size_t len)
{
	/* The length counts itself, so find the digit count that is consistent. */
	size_t base = strlen(key) + len + 3; /* ' ', '=', '\n' */
	size_t d = 1;
	while (decimal_digits(base + d) != d)
		d++;
	tt_buf_printf(out, "%zu %s=", base + d, key);
	tt_buf_append(out, value, len);
	tt_buf_append(out, "\n", 1);
}

/* ---- tar writer: members ------------------------------------------------- */

#define TT_OCTAL11_MAX 077777777777ull
#define TT_OCTAL7_MAX  07777777ull

static void pax_str(struct tt_buf *pax, const char *key, const char *value)
{
	tt_pax_record(pax, key, value, strlen(value));
}

static void pax_num(struct tt_buf *pax, const char *key, uint64_t value)
{
	char tmp[32];
	snprintf(tmp, sizeof(tmp), "%" PRIu64, value);
	pax_str(pax, key, tmp);
}

/* Split `path` into ustar prefix and name at a slash; false if impossible. */
static bool ustar_split(const char *path, size_t *split)
{
	size_t n = strlen(path);
	size_t i = n - 1 < TT_LEN_PREFIX ? n - 1 : TT_LEN_PREFIX;
	for (;; i--) {
		if (path[i] == '/' && n - i - 1 <= TT_LEN_NAME && n - i - 1 > 0 && i > 0) {
			*split = i;
			return true;
		}
		if (i == 0)
			return false;
	}
}

void tt_tar_add(struct tt_buf *out, const struct tt_member *m)
{
	char type = m->type ? m->type : '0';
	const char *link = m->linkpath ? m->linkpath : "";
	const char *uname = m->uname ? m->uname : "";
	const char *gname = m->gname ? m->gname : "";
	struct tt_buf pax = { 0 };
	unsigned char block[TT_TAR_BLOCK];

	if (m->path == NULL)
		tt_die("tt_tar_add: member without a path");
	tt_tar_header_init(block, type, "", 0);

	size_t plen = strlen(m->path), split;
	if (plen <= TT_LEN_NAME) {
		memcpy(block + TT_OFF_NAME, m->path, plen);
	} else if (ustar_split(m->path, &split)) {
		memcpy(block + TT_OFF_PREFIX, m->path, split);
		memcpy(block + TT_OFF_NAME, m->path + split + 1, plen - split - 1);
	} else {
		pax_str(&pax, "path", m->path);
		memcpy(block + TT_OFF_NAME, m->path, TT_LEN_NAME);
	}

	size_t llen = strlen(link);
	if (llen <= TT_LEN_LINKNAME) {
		memcpy(block + TT_OFF_LINKNAME, link, llen);
	} else {
		pax_str(&pax, "linkpath", link);
		memcpy(block + TT_OFF_LINKNAME, link, TT_LEN_LINKNAME);
	}

	if (m->size > TT_OCTAL11_MAX)
		pax_num(&pax, "size", m->size);
	else
		tt_tar_set_octal(block + TT_OFF_SIZE, TT_LEN_SIZE, m->size);
	if (m->uid > TT_OCTAL7_MAX)
		pax_num(&pax, "uid", m->uid);
	else
		tt_tar_set_octal(block + TT_OFF_UID, TT_LEN_UID, m->uid);
	if (m->gid > TT_OCTAL7_MAX)
		pax_num(&pax, "gid", m->gid);
	else
		tt_tar_set_octal(block + TT_OFF_GID, TT_LEN_GID, m->gid);

	bool mtime_fits = m->mtime_sec >= 0 && (uint64_t)m->mtime_sec <= TT_OCTAL11_MAX;
	if (mtime_fits)
		tt_tar_set_octal(block + TT_OFF_MTIME, TT_LEN_MTIME, (uint64_t)m->mtime_sec);
	if (!mtime_fits || m->mtime_nsec != 0) {
		char tmp[48];
		if (m->mtime_nsec == 0) {
			snprintf(tmp, sizeof(tmp), "%" PRId64, m->mtime_sec);
		} else if (m->mtime_sec >= 0) {
			snprintf(tmp, sizeof(tmp), "%" PRId64 ".%09" PRIu32, m->mtime_sec,
				 m->mtime_nsec);
		} else {
			/* -1.25 s is sec -2, nsec 750000000: print the magnitude. */
			snprintf(tmp, sizeof(tmp), "-%" PRIu64 ".%09" PRIu32,
				 (uint64_t)(-(m->mtime_sec + 1)), 1000000000u - m->mtime_nsec);
		}
		pax_str(&pax, "mtime", tmp);
	}

	if (m->mode > TT_OCTAL7_MAX || m->devmajor > TT_OCTAL7_MAX || m->devminor > TT_OCTAL7_MAX)
		tt_die("tt_tar_add: mode/devmajor/devminor of %s do not fit", m->path);
	tt_tar_set_octal(block + TT_OFF_MODE, TT_LEN_MODE, m->mode);
	tt_tar_set_octal(block + TT_OFF_DEVMAJOR, TT_LEN_DEVMAJOR, m->devmajor);
	tt_tar_set_octal(block + TT_OFF_DEVMINOR, TT_LEN_DEVMINOR, m->devminor);

	if (strlen(uname) <= TT_LEN_UNAME)
		tt_tar_set_str(block + TT_OFF_UNAME, TT_LEN_UNAME, uname);
	else
		pax_str(&pax, "uname", uname);
	if (strlen(gname) <= TT_LEN_GNAME)
		tt_tar_set_str(block + TT_OFF_GNAME, TT_LEN_GNAME, gname);
	else
		pax_str(&pax, "gname", gname);

	for (size_t i = 0; i < m->nxattrs; i++) {
		struct tt_buf key = { 0 };
		tt_buf_printf(&key, "SCHILY.xattr.%s", m->xattrs[i].name);
		tt_buf_append(&key, "", 1);
		tt_pax_record(&pax, (const char *)key.data, m->xattrs[i].value, m->xattrs[i].len);
		tt_buf_free(&key);
	}

	if (pax.len > 0)
		tt_tar_ext(out, 'x', pax.data, pax.len);
	tt_buf_free(&pax);
	tt_tar_set_checksum(block);
	tt_tar_raw(out, block, m->data, m->size);
}

void tt_tar_finish(struct tt_buf *out)
{
	tt_buf_append_zeros(out, 2 * TT_TAR_BLOCK);
}

/* ---- gzip, files, randomness --------------------------------------------- */

void tt_gzip(const void *in, size_t len, int level, struct tt_buf *out)
{
	z_stream zs;
	memset(&zs, 0, sizeof(zs));
	/* windowBits 15 + 16 selects the gzip wrapper. */
	if (deflateInit2(&zs, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		tt_die("deflateInit2 failed at level %d", level);
	zs.next_in = (unsigned char *)(uintptr_t)in;
	int rc;
	do {
		/* zlib's avail_in is 32 bits; feed huge inputs in pieces. */
		if (zs.avail_in == 0 && len > 0) {
			size_t piece = len < (1u << 30) ? len : (1u << 30);
			zs.avail_in = (uInt)piece;
			len -= piece;
		}
		tt_buf_reserve(out, 1 << 16);
		zs.next_out = out->data + out->len;
		zs.avail_out =
			(uInt)(out->cap - out->len < (1u << 30) ? out->cap - out->len : (1u << 30));
		size_t before = zs.avail_out;
		rc = deflate(&zs, len == 0 ? Z_FINISH : Z_NO_FLUSH);
		if (rc == Z_STREAM_ERROR)
			tt_die("deflate failed");
		out->len += before - zs.avail_out;
	} while (rc != Z_STREAM_END);
	deflateEnd(&zs);
}

char *tt_tmpdir(void)
{
	const char *base = getenv("CLIP_TEST_TMPDIR");
	if (base == NULL || base[0] == '\0')
		base = "/tmp";
	size_t n = strlen(base) + sizeof("/clip-test-XXXXXX");
	char *path = malloc(n);
	if (path == NULL)
		tt_die("out of memory");
	snprintf(path, n, "%s/clip-test-XXXXXX", base);
	if (mkdtemp(path) == NULL)
		tt_die("mkdtemp %s: %s", path, strerror(errno));
	return path;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (remove(path) < 0 && errno != ENOENT)
		tt_die("remove %s: %s", path, strerror(errno));
	return 0;
}

void tt_rm_rf(const char *path)
{
	if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT)
		tt_die("nftw %s: %s", path, strerror(errno));
}

void tt_write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		tt_die("open %s: %s", path, strerror(errno));
	const unsigned char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			tt_die("write %s: %s", path, strerror(errno));
		p += n;
		len -= (size_t)n;
	}
	if (close(fd) < 0)
		tt_die("close %s: %s", path, strerror(errno));
}

uint64_t tt_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void tt_fill_random(void *buf, size_t len, uint64_t seed)
{
	unsigned char *p = buf;
	uint64_t state = seed;
	while (len > 0) {
		uint64_t v = tt_rand(&state);
		size_t n = len < 8 ? len : 8;
		memcpy(p, &v, n);
		p += n;
		len -= n;
	}
}

void tt_layer_hex(char out[65], uint64_t seed)
{
	unsigned char bin[32];
	tt_fill_random(bin, sizeof(bin), seed);
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", bin[i]);
}

void tt_chunk_bytes(void *buf, size_t len, unsigned layer, uint64_t idx, uint64_t salt)
{
	tt_fill_random(buf, len, ((uint64_t)layer << 32) ^ idx ^ salt);
}
