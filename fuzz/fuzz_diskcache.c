/* libFuzzer harness for the disk cache's chunk file reader
 * (clip_diskcache_read in src/lib/diskcache.c).
 *
 * Input: one control byte, then the bytes of a chunk file (64-byte header and
 * payload) that is written in place of chunk 0 of a layer in a scratch cache
 * directory. Control bits: 0x01 set the header's chunk index, payload length
 * and magic/version/size right; 0x02 set the header's SHA-256 to the
 * payload's real one; 0x04 pass the expected hash; 0x08 pass a wrong one;
 * 0x10 claim a chunk length one byte off; the high bits pick the range read.
 * Each file is read twice (the second read takes the verified fast path when
 * the first succeeded).
 *
 * The oracle is the cache's promise: a read returns -ENOENT (and the bad file
 * is gone), or exactly the bytes asked for, and the latter only when the
 * file is whole, its header right and its payload hashing to the header's
 * hash (and to the expected one when given).
 *
 * Build: fuzz/build. Seeds: fuzz/corpus/diskcache/.
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "clip/diskcache.h"
#include "util.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LAYER                                                                                      \
	"ab"                                                                                       \
	"00000000000000000000000000000000000000000000000000000000000000"
#define HDR 64

static struct clip_diskcache *cache;
static char dir[256], chunk_file[512];

static void setup(void)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/clip-fuzz-diskcache-XXXXXX", tmp ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL)
		abort();
	struct clip_diskcache_options o = { .dir = dir, .max_bytes = 0 };
	struct clip_err err = { 0 };
	if (clip_diskcache_open(&o, &cache, &err) != 0) {
		fprintf(stderr, "%s\n", err.msg);
		abort();
	}
	/* Learn where chunk 0 lives by putting it (and the layer directories
	 * are made). */
	unsigned char h[32];
	SHA256((const unsigned char *)"x", 1, h);
	if (clip_diskcache_put(cache, LAYER, 0, "x", 1, h, &err) != 0)
		abort();
	snprintf(chunk_file, sizeof(chunk_file), "%s/chunks/ab/%s/%016x", dir, LAYER, 0);
	struct stat st;
	if (stat(chunk_file, &st) != 0) {
		fprintf(stderr, "chunk file not at %s\n", chunk_file);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (cache == NULL)
		setup();
	if (size < 1)
		return 0;
	uint8_t ctl = data[0];
	size_t flen = size - 1;
	unsigned char *file = malloc(flen > HDR ? flen : HDR);
	if (file == NULL)
		return 0;
	memset(file, 0, HDR);
	memcpy(file, data + 1, flen);
	if (flen < HDR && (ctl & 0x03))
		flen = HDR;
	size_t payload_len = flen > HDR ? flen - HDR : 0;
	if (ctl & 0x01) {
		memcpy(file, "CLIPCHK1", 8);
		clip_put_le32(file + 8, 1);
		clip_put_le32(file + 12, HDR);
		clip_put_le64(file + 16, 0);
		clip_put_le64(file + 24, payload_len);
	}
	unsigned char real[32];
	SHA256(file + HDR, payload_len, real);
	if (ctl & 0x02)
		memcpy(file + 32, real, 32);

	size_t chunk_len = flen >= HDR ? flen - HDR : clip_get_le64(file + 24) & 0xffff;
	if ((ctl & 0x10) && chunk_len > 0)
		chunk_len--;
	unsigned char expected[32];
	const unsigned char *exp = NULL;
	if (ctl & 0x04) {
		memcpy(expected, real, 32);
		if (ctl & 0x08)
			expected[0] ^= 1;
		exp = expected;
	}

	/* Replace the file (a new inode, so the cache sees another file). */
	char tmp[600];
	snprintf(tmp, sizeof(tmp), "%s.new", chunk_file);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, file, flen) != (ssize_t)flen || close(fd) != 0 ||
	    rename(tmp, chunk_file) != 0)
		abort();

	bool good = flen >= HDR && memcmp(file, "CLIPCHK1", 8) == 0 &&
		    clip_get_le32(file + 8) == 1 && clip_get_le32(file + 12) == HDR &&
		    clip_get_le64(file + 16) == 0 && clip_get_le64(file + 24) == chunk_len &&
		    payload_len == chunk_len && memcmp(file + 32, real, 32) == 0 &&
		    (exp == NULL || memcmp(exp, real, 32) == 0);

	size_t off = chunk_len ? (size_t)(ctl >> 5) * chunk_len / 8 : 0;
	size_t len = chunk_len - off;
	for (int pass = 0; pass < 2; pass++) {
		unsigned char *buf = malloc(len ? len : 1);
		if (buf == NULL)
			abort();
		struct clip_err err = { 0 };
		ssize_t n =
			clip_diskcache_read(cache, LAYER, 0, chunk_len, exp, buf, len, off, &err);
		if (good) {
			if (n != (ssize_t)len || memcmp(buf, file + HDR + off, len) != 0) {
				fprintf(stderr, "good chunk refused: %zd %s\n", n, err.msg);
				abort();
			}
		} else {
			CHECK(n == -ENOENT);
			struct stat st;
			CHECK(stat(chunk_file, &st) != 0 && errno == ENOENT);
		}
		free(buf);
		if (!good)
			break;
	}
	free(file);
	return 0;
}
