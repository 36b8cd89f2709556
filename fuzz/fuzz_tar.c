/* libFuzzer harness for the streaming tar parser.
 *
 * Each input is parsed twice: whole, and in pseudo-random pieces (empty, one
 * byte, a few bytes, up to a few KiB) chosen from a hash of the input. Both
 * runs must report the same members and end with the same result and
 * message, and every member must satisfy the entry contract of
 * include/clip/tar.h. Any violation aborts.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -Iinclude -Isrc/lib \
 *        fuzz/fuzz_tar.c src/lib/tar.c src/lib/err.c
 * Seeds: fuzz/corpus/tar/
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip/tar.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
	uint64_t digest; /* FNV-1a over every field of every member */
	size_t members;
	uint64_t input_len;
	uint64_t last_data_offset;
};

static void mix(struct run *r, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++) {
		r->digest ^= b[i];
		r->digest *= 0x100000001b3ull;
	}
}

static void mix_str(struct run *r, const char *s)
{
	/* Include the NUL so that ("ab","c") and ("a","bc") differ. */
	if (s == NULL)
		mix(r, "\xff", 1);
	else
		mix(r, s, strlen(s) + 1);
}

/* `path` is normalised: no leading or trailing "/", no empty, "." or ".."
 * component. */
static void check_normalised(const char *path)
{
	size_t n = strlen(path);
	CHECK(n <= CLIP_TAR_MAX_PATH);
	CHECK(n == 0 || (path[0] != '/' && path[n - 1] != '/'));
	CHECK(strstr(path, "//") == NULL);
	for (const char *c = path; *c != '\0';) {
		size_t len = strcspn(c, "/");
		CHECK(!(len == 1 && c[0] == '.'));
		CHECK(!(len == 2 && c[0] == '.' && c[1] == '.'));
		c += len;
		if (*c == '/')
			c++;
	}
}

static int on_entry(void *opaque, const struct clip_tar_entry *e, struct clip_err *err)
{
	struct run *r = opaque;

	CHECK(e->type >= CLIP_TAR_REG && e->type <= CLIP_TAR_FIFO);
	CHECK(e->path != NULL);
	check_normalised(e->path);
	if (e->type == CLIP_TAR_SYMLINK || e->type == CLIP_TAR_HARDLINK) {
		CHECK(e->linkpath != NULL);
		CHECK(strlen(e->linkpath) <= CLIP_TAR_MAX_PATH);
	} else {
		CHECK(e->linkpath == NULL);
	}
	if (e->type == CLIP_TAR_HARDLINK) {
		CHECK(e->linkpath[0] != '\0');
		check_normalised(e->linkpath);
	}
	if (e->type != CLIP_TAR_REG)
		CHECK(e->size == 0);
	CHECK(e->size <= (uint64_t)INT64_MAX);
	CHECK(e->mode <= 07777);
	CHECK(e->mtime_nsec < 1000000000u);
	CHECK(e->uname != NULL && e->gname != NULL);
	CHECK(e->data_offset % 512 == 0);
	CHECK(e->header_offset < e->data_offset);
	CHECK(e->header_offset % 512 == 0);
	CHECK(e->data_offset <= r->input_len);
	/* Members come in stream order and never overlap. */
	CHECK(e->header_offset >= r->last_data_offset);
	r->last_data_offset = e->data_offset;
	CHECK(e->nxattrs <= CLIP_TAR_MAX_XATTRS);
	CHECK(e->nxattrs == 0 || e->xattrs != NULL);

	mix(r, &e->type, sizeof(e->type));
	mix_str(r, e->path);
	mix_str(r, e->linkpath);
	mix_str(r, e->uname);
	mix_str(r, e->gname);
	uint64_t nums[] = {
		e->mode,       e->uid,	    e->gid,	 e->size,	 (uint64_t)e->mtime_sec,
		e->mtime_nsec, e->devmajor, e->devminor, e->data_offset, e->header_offset,
		e->nxattrs
	};
	mix(r, nums, sizeof(nums));
	for (size_t i = 0; i < e->nxattrs; i++) {
		CHECK(e->xattrs[i].name != NULL && e->xattrs[i].name[0] != '\0');
		CHECK(e->xattrs[i].len == 0 || e->xattrs[i].value != NULL);
		mix_str(r, e->xattrs[i].name);
		mix(r, &e->xattrs[i].len, sizeof(e->xattrs[i].len));
		if (e->xattrs[i].len > 0)
			mix(r, e->xattrs[i].value, e->xattrs[i].len);
	}
	r->members++;
	return 0;
}

static uint64_t next_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Parse `data` in pieces (all of it at once when `seed` is 0). Returns the
 * parse result; the message goes to `err`. */
static int parse(const uint8_t *data, size_t size, uint64_t seed, struct run *r,
		 struct clip_err *err)
{
	memset(r, 0, sizeof(*r));
	r->digest = 0xcbf29ce484222325ull;
	r->input_len = size;
	clip_err_clear(err);
	struct clip_tar_parser *p = clip_tar_parser_new(on_entry, r);
	if (p == NULL)
		abort();
	size_t pos = 0;
	int rc = 0;
	while (pos < size) {
		size_t n = size - pos;
		if (seed != 0) {
			uint64_t x = next_rand(&seed);
			switch (x & 3) {
			case 0:
				n = (size_t)((x >> 8) % 2); /* empty or one byte */
				break;
			case 1: n = (size_t)((x >> 8) % 16); break;
			case 2: n = (size_t)((x >> 8) % 600); break;
			default: n = (size_t)((x >> 8) % 5000); break;
			}
			if (n > size - pos)
				n = size - pos;
		}
		rc = clip_tar_parser_feed(p, data + pos, n, err);
		if (rc < 0)
			break;
		pos += n;
		CHECK(clip_tar_parser_offset(p) == pos);
	}
	if (rc == 0)
		rc = clip_tar_parser_finish(p, err);
	if (rc < 0) {
		CHECK(err->code == rc);
		CHECK(err->msg[0] != '\0');
		/* Unusable after an error, and saying so. */
		struct clip_err err2;
		clip_err_clear(&err2);
		CHECK(clip_tar_parser_feed(p, "", 1, &err2) < 0);
	}
	clip_tar_parser_free(p);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t seed = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 0x100000001b3ull;
	seed |= 1; /* never 0, which means "whole" */

	static struct clip_err err_whole, err_pieces;
	struct run whole, pieces;
	int rc_whole = parse(data, size, 0, &whole, &err_whole);
	int rc_pieces = parse(data, size, seed, &pieces, &err_pieces);

	CHECK(rc_whole == rc_pieces);
	CHECK(whole.members == pieces.members);
	CHECK(whole.digest == pieces.digest);
	if (rc_whole < 0)
		CHECK(strcmp(err_whole.msg, err_pieces.msg) == 0);
	return 0;
}
