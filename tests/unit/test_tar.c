/* Unit tests for the streaming tar parser (src/lib/tar.c).
 *
 * Every archive is parsed whole, one byte at a time and in several random
 * chunkings; all ways must report the same members (or the same error). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>

#include "clip/tar.h"
#include "testutil.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- collecting members -------------------------------------------------- */

struct rec_xattr {
	char *name;
	unsigned char *value;
	size_t len;
};

struct rec {
	enum clip_tar_type type;
	char *path, *link; /* link NULL when the entry had none */
	uint32_t mode, uid, gid;
	char *uname, *gname;
	uint64_t size;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint32_t devmajor, devminor;
	uint64_t data_offset, header_offset;
	struct rec_xattr *xattrs;
	size_t nxattrs;
};

struct collect {
	struct rec *recs;
	size_t n;
	struct tt_buf text; /* every field of every member, for comparisons */
	long fail_at;	    /* member index whose callback fails, or -1 */
};

static char *xstrdup(const char *s)
{
	char *d = strdup(s);
	assert_non_null(d);
	return d;
}

/* Properties every reported entry must have, whatever the input. */
static void check_entry_invariants(const struct clip_tar_entry *e)
{
	assert_non_null(e->path);
	size_t n = strlen(e->path);
	assert_true(n <= CLIP_TAR_MAX_PATH);
	if (n > 0) {
		assert_true(e->path[0] != '/');
		assert_true(e->path[n - 1] != '/');
	}
	assert_null(strstr(e->path, "//"));
	/* No "." or ".." component. */
	char tmp[CLIP_TAR_MAX_PATH + 3];
	snprintf(tmp, sizeof(tmp), "/%s/", e->path);
	assert_null(strstr(tmp, "/./"));
	assert_null(strstr(tmp, "/../"));
	if (e->type == CLIP_TAR_SYMLINK || e->type == CLIP_TAR_HARDLINK)
		assert_non_null(e->linkpath);
	else
		assert_null(e->linkpath);
	if (e->type != CLIP_TAR_REG)
		assert_int_equal(e->size, 0);
	assert_true(e->mode <= 07777);
	assert_true(e->mtime_nsec < 1000000000u);
	assert_true(e->data_offset % 512 == 0);
	assert_true(e->header_offset < e->data_offset);
	assert_non_null(e->uname);
	assert_non_null(e->gname);
	assert_true(e->nxattrs <= CLIP_TAR_MAX_XATTRS);
}

static int collect_entry(void *opaque, const struct clip_tar_entry *e, struct clip_err *err)
{
	struct collect *c = opaque;
	check_entry_invariants(e);
	if (c->fail_at >= 0 && (size_t)c->fail_at == c->n)
		return clip_err_set(err, EIO, "callback refuses %s", e->path);

	struct rec *recs = realloc(c->recs, (c->n + 1) * sizeof(*recs));
	assert_non_null(recs);
	c->recs = recs;
	struct rec *r = &c->recs[c->n++];
	memset(r, 0, sizeof(*r));
	r->type = e->type;
	r->path = xstrdup(e->path);
	r->link = e->linkpath ? xstrdup(e->linkpath) : NULL;
	r->mode = e->mode;
	r->uid = e->uid;
	r->gid = e->gid;
	r->uname = xstrdup(e->uname);
	r->gname = xstrdup(e->gname);
	r->size = e->size;
	r->mtime_sec = e->mtime_sec;
	r->mtime_nsec = e->mtime_nsec;
	r->devmajor = e->devmajor;
	r->devminor = e->devminor;
	r->data_offset = e->data_offset;
	r->header_offset = e->header_offset;
	r->nxattrs = e->nxattrs;
	r->xattrs = calloc(e->nxattrs + 1, sizeof(*r->xattrs));
	assert_non_null(r->xattrs);

	tt_buf_printf(&c->text,
		      "%d|%s|%s|%o|%u|%u|%s|%s|%" PRIu64 "|%" PRId64 ".%09u|%u,%u|%" PRIu64
		      "|%" PRIu64 "|",
		      e->type, e->path, e->linkpath ? e->linkpath : "(null)", e->mode, e->uid,
		      e->gid, e->uname, e->gname, e->size, e->mtime_sec, e->mtime_nsec, e->devmajor,
		      e->devminor, e->data_offset, e->header_offset);
	for (size_t i = 0; i < e->nxattrs; i++) {
		r->xattrs[i].name = xstrdup(e->xattrs[i].name);
		r->xattrs[i].len = e->xattrs[i].len;
		r->xattrs[i].value = malloc(e->xattrs[i].len + 1);
		assert_non_null(r->xattrs[i].value);
		if (e->xattrs[i].len > 0)
			memcpy(r->xattrs[i].value, e->xattrs[i].value, e->xattrs[i].len);
		tt_buf_printf(&c->text, "%s=", e->xattrs[i].name);
		for (size_t j = 0; j < e->xattrs[i].len; j++)
			tt_buf_printf(&c->text, "%02x", e->xattrs[i].value[j]);
		tt_buf_printf(&c->text, ";");
	}
	tt_buf_printf(&c->text, "\n");
	return 0;
}

static void collect_free(struct collect *c)
{
	for (size_t i = 0; i < c->n; i++) {
		struct rec *r = &c->recs[i];
		free(r->path);
		free(r->link);
		free(r->uname);
		free(r->gname);
		for (size_t j = 0; j < r->nxattrs; j++) {
			free(r->xattrs[j].name);
			free(r->xattrs[j].value);
		}
		free(r->xattrs);
	}
	free(c->recs);
	tt_buf_free(&c->text);
	memset(c, 0, sizeof(*c));
	c->fail_at = -1;
}

/* ---- feeding ------------------------------------------------------------- */

enum { WAY_WHOLE, WAY_BYTES, NWAYS = 8 };

/* Parse `len` bytes one way: whole, 1 byte at a time, or random pieces
 * (including empty ones) seeded by `way`. Returns the first error of feed or
 * finish, or 0. */
static int parse_way(const unsigned char *data, size_t len, int way, struct collect *c,
		     struct clip_err *err)
{
	struct clip_tar_parser *p = clip_tar_parser_new(collect_entry, c);
	assert_non_null(p);
	uint64_t seed = 0x5eed0000u + (uint64_t)way;
	size_t pos = 0;
	int rc = 0;
	while (pos < len && rc == 0) {
		size_t n;
		if (way == WAY_WHOLE) {
			n = len - pos;
		} else if (way == WAY_BYTES) {
			n = 1;
		} else {
			uint64_t r = tt_rand(&seed);
			n = (r & 3) == 0 ? (size_t)((r >> 8) % 5000) : (size_t)((r >> 8) % 700);
		}
		if (n > len - pos)
			n = len - pos;
		rc = clip_tar_parser_feed(p, data + pos, n, err);
		pos += n;
		if (rc == 0)
			assert_int_equal(clip_tar_parser_offset(p), pos);
	}
	if (rc == 0)
		rc = clip_tar_parser_finish(p, err);
	if (rc < 0) {
		/* The parser is unusable after an error, and says so. */
		struct clip_err err2 = { 0 };
		assert_int_equal(clip_tar_parser_feed(p, "x", 1, &err2), -EINVAL);
		assert_int_equal(clip_tar_parser_finish(p, &err2), -EINVAL);
	}
	clip_tar_parser_free(p);
	return rc;
}

/* Parse `tar` every way; all must succeed with identical members. The
 * members from the whole-buffer way are left in `out`. */
static void parse_ok(const struct tt_buf *tar, struct collect *out)
{
	struct clip_err err = { 0 };
	memset(out, 0, sizeof(*out));
	out->fail_at = -1;
	int rc = parse_way(tar->data, tar->len, WAY_WHOLE, out, &err);
	if (rc != 0)
		fail_msg("parse failed: %s", err.msg);
	for (int way = 1; way < NWAYS; way++) {
		struct collect c = { .fail_at = -1 };
		rc = parse_way(tar->data, tar->len, way, &c, &err);
		if (rc != 0)
			fail_msg("parse (way %d) failed: %s", way, err.msg);
		assert_int_equal(c.n, out->n);
		assert_int_equal(c.text.len, out->text.len);
		assert_memory_equal(c.text.data, out->text.data, c.text.len);
		collect_free(&c);
	}
}

/* Parse `tar` every way; all must fail with -EBADMSG and the same message,
 * which must equal `exact` (when not NULL) and contain `want`. */
static void expect_error(const struct tt_buf *tar, const char *exact, const char *want)
{
	char first[CLIP_ERR_MSG_MAX] = "";
	for (int way = 0; way < NWAYS; way++) {
		struct collect c = { .fail_at = -1 };
		struct clip_err err = { 0 };
		int rc = parse_way(tar->data, tar->len, way, &c, &err);
		if (rc != -EBADMSG)
			fail_msg("way %d: expected -EBADMSG, got %d (%s)", way, rc, err.msg);
		assert_int_equal(err.code, -EBADMSG);
		if (way == 0) {
			snprintf(first, sizeof(first), "%s", err.msg);
			if (exact != NULL)
				assert_string_equal(err.msg, exact);
			if (want != NULL && strstr(err.msg, want) == NULL)
				fail_msg("error \"%s\" does not contain \"%s\"", err.msg, want);
		} else {
			assert_string_equal(err.msg, first);
		}
		collect_free(&c);
	}
}

static const struct rec *find(const struct collect *c, const char *path)
{
	for (size_t i = 0; i < c->n; i++)
		if (strcmp(c->recs[i].path, path) == 0)
			return &c->recs[i];
	fail_msg("no member \"%s\"", path);
	return NULL;
}

/* The member's data in the archive is exactly `data`. */
static void check_data(const struct tt_buf *tar, const struct rec *r, const void *data, size_t len)
{
	assert_int_equal(r->size, len);
	assert_true(r->data_offset + len <= tar->len);
	if (len > 0)
		assert_memory_equal(tar->data + r->data_offset, data, len);
}

/* One raw member with a header built by tt_tar_header_init(). */
static void add_raw(struct tt_buf *tar, char type, const char *name, const void *data, size_t len)
{
	unsigned char b[TT_TAR_BLOCK];
	tt_tar_header_init(b, type, name, len);
	tt_tar_raw(tar, b, data, len);
}

/* ---- well-formed archives ------------------------------------------------ */

static void test_member_types(void **state)
{
	struct tt_buf tar = { 0 };
	static const size_t sizes[] = { 0, 1, 511, 512, 513, 5000 };
	unsigned char data[5000];
	tt_fill_random(data, sizeof(data), 1);
	char name[32];
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		snprintf(name, sizeof(name), "file%zu", sizes[i]);
		struct tt_member m = {
			.path = name,
			.mode = 0640,
			.uid = 1000 + i,
			.gid = 2000,
			.uname = "alice",
			.gname = "staff",
			.mtime_sec = 1700000000 + (int64_t)i,
			.data = data,
			.size = sizes[i],
		};
		tt_tar_add(&tar, &m);
	}
	tt_tar_add(&tar, &(struct tt_member){ .type = '5', .path = "dir/", .mode = 01777 });
	tt_tar_add(&tar, &(struct tt_member){ .type = '2',
					      .path = "dir/sym",
					      .mode = 0777,
					      .linkpath = "../file1/./x//" });
	tt_tar_add(&tar,
		   &(struct tt_member){
			   .type = '1', .path = "dir/hard", .linkpath = "./file1", .mode = 0640 });
	tt_tar_add(&tar, &(struct tt_member){ .type = '3',
					      .path = "dev/null",
					      .mode = 0666,
					      .devmajor = 1,
					      .devminor = 3 });
	tt_tar_add(&tar, &(struct tt_member){ .type = '4',
					      .path = "dev/sda",
					      .mode = 0660,
					      .devmajor = 8,
					      .devminor = 0 });
	tt_tar_add(&tar, &(struct tt_member){ .type = '6', .path = "fifo", .mode = 04755 });
	tt_tar_add(
		&tar,
		&(struct tt_member){
			.type = '7', .path = "contig", .mode = 02755, .data = "abc", .size = 3 });
	/* Old-style regular files: type NUL, and a directory by trailing slash. */
	unsigned char b[TT_TAR_BLOCK];
	tt_tar_header_init(b, '\0', "oldfile", 4);
	tt_tar_raw(&tar, b, "data", 4);
	tt_tar_header_init(b, '\0', "olddir/", 0);
	tt_tar_raw(&tar, b, NULL, 0);
	tt_tar_header_init(b, '0', "olddir2/", 0);
	tt_tar_raw(&tar, b, NULL, 0);
	tt_tar_finish(&tar);

	struct collect c;
	parse_ok(&tar, &c);
	assert_int_equal(c.n, ARRAY_SIZE(sizes) + 10);

	uint64_t off = 0;
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		const struct rec *r = &c.recs[i];
		snprintf(name, sizeof(name), "file%zu", sizes[i]);
		assert_string_equal(r->path, name);
		assert_int_equal(r->type, CLIP_TAR_REG);
		assert_null(r->link);
		assert_int_equal(r->mode, 0640);
		assert_int_equal(r->uid, 1000 + i);
		assert_int_equal(r->gid, 2000);
		assert_string_equal(r->uname, "alice");
		assert_string_equal(r->gname, "staff");
		assert_int_equal(r->mtime_sec, 1700000000 + (int64_t)i);
		assert_int_equal(r->mtime_nsec, 0);
		assert_int_equal(r->nxattrs, 0);
		assert_int_equal(r->header_offset, off);
		assert_int_equal(r->data_offset, off + 512);
		check_data(&tar, r, data, sizes[i]);
		off += 512 + (sizes[i] + 511) / 512 * 512;
	}

	const struct rec *r = find(&c, "dir");
	assert_int_equal(r->type, CLIP_TAR_DIR);
	assert_int_equal(r->mode, 01777);
	assert_int_equal(r->header_offset, off);

	r = find(&c, "dir/sym");
	assert_int_equal(r->type, CLIP_TAR_SYMLINK);
	/* Symlink targets are kept exactly as stored. */
	assert_string_equal(r->link, "../file1/./x//");
	assert_int_equal(r->size, 0);

	r = find(&c, "dir/hard");
	assert_int_equal(r->type, CLIP_TAR_HARDLINK);
	assert_string_equal(r->link, "file1");

	r = find(&c, "dev/null");
	assert_int_equal(r->type, CLIP_TAR_CHR);
	assert_int_equal(r->devmajor, 1);
	assert_int_equal(r->devminor, 3);
	assert_int_equal(r->mode, 0666);
	r = find(&c, "dev/sda");
	assert_int_equal(r->type, CLIP_TAR_BLK);
	assert_int_equal(r->devmajor, 8);
	assert_int_equal(r->devminor, 0);

	r = find(&c, "fifo");
	assert_int_equal(r->type, CLIP_TAR_FIFO);
	assert_int_equal(r->mode, 04755);

	r = find(&c, "contig");
	assert_int_equal(r->type, CLIP_TAR_REG);
	assert_int_equal(r->mode, 02755);
	check_data(&tar, r, "abc", 3);

	r = find(&c, "oldfile");
	assert_int_equal(r->type, CLIP_TAR_REG);
	check_data(&tar, r, "data", 4);
	assert_int_equal(find(&c, "olddir")->type, CLIP_TAR_DIR);
	assert_int_equal(find(&c, "olddir2")->type, CLIP_TAR_DIR);

	collect_free(&c);
	tt_buf_free(&tar);
}

static void test_path_normalisation(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "a", "a" },
		{ "./a", "a" },
		{ "/a", "a" },
		{ "///a//b/./c/", "a/b/c" },
		{ "a/./././b", "a/b" },
		{ ".", "" },
		{ "./", "" },
		{ "/", "" },
		{ "././/.", "" },
		{ "...", "..." },
		{ "..a/b..", "..a/b.." },
		{ ".hidden/.x", ".hidden/.x" },
	};
	struct tt_buf tar = { 0 };
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		add_raw(&tar, '5', cases[i].in, NULL, 0);
	/* The same through a PAX path. */
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct tt_buf pax = { 0 };
		tt_pax_record(&pax, "path", cases[i].in, strlen(cases[i].in));
		tt_tar_ext(&tar, 'x', pax.data, pax.len);
		add_raw(&tar, '5', "ignored", NULL, 0);
		tt_buf_free(&pax);
	}
	/* Hard link targets are normalised too. */
	tt_tar_add(&tar, &(struct tt_member){ .type = '1', .path = "h", .linkpath = "//x/./y/" });
	tt_tar_finish(&tar);

	struct collect c;
	parse_ok(&tar, &c);
	assert_int_equal(c.n, 2 * ARRAY_SIZE(cases) + 1);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		assert_string_equal(c.recs[i].path, cases[i].out);
		assert_string_equal(c.recs[ARRAY_SIZE(cases) + i].path, cases[i].out);
	}
	assert_string_equal(c.recs[c.n - 1].link, "x/y");
	collect_free(&c);
	tt_buf_free(&tar);
}

static void test_ustar_prefix_and_old_gnu(void **state)
{
	struct tt_buf tar = { 0 };
	unsigned char b[TT_TAR_BLOCK];

	/* POSIX ustar: prefix "/" name. */
	tt_tar_header_init(b, '0', "file.txt", 2);
	tt_tar_set_str(b + TT_OFF_PREFIX, TT_LEN_PREFIX, "usr/share/doc");
	tt_tar_set_checksum(b);
	tt_tar_raw(&tar, b, "hi", 2);

	/* A name filling all 100 bytes (no NUL) joined with a 155-byte prefix. */
	char name[TT_LEN_NAME + 1], prefix[TT_LEN_PREFIX + 1], want[300];
	memset(name, 'n', TT_LEN_NAME);
	name[TT_LEN_NAME] = '\0';
	memset(prefix, 'p', TT_LEN_PREFIX);
	prefix[TT_LEN_PREFIX] = '\0';
	tt_tar_header_init(b, '0', name, 0);
	tt_tar_set_str(b + TT_OFF_PREFIX, TT_LEN_PREFIX, prefix);
	tt_tar_set_checksum(b);
	tt_tar_raw(&tar, b, NULL, 0);
	snprintf(want, sizeof(want), "%s/%s", prefix, name);

	/* Old GNU: the prefix bytes hold atime/ctime and must not be joined. */
	tt_tar_header_init(b, '0', "gnufile", 0);
	tt_tar_set_gnu_magic(b);
	tt_tar_set_octal(b + TT_OFF_PREFIX, 12, 01234567);
	tt_tar_set_octal(b + TT_OFF_PREFIX + 12, 12, 07654321);
	tt_tar_set_checksum(b);
	tt_tar_raw(&tar, b, NULL, 0);

	/* tt_tar_add splits long paths into prefix and name itself. */
	const char *split = "some/long/directory/path/that/does/not/fit/in/one/hundred/bytes/"
			    "of/the/name/field/alone/file.bin";
	tt_tar_add(&tar, &(struct tt_member){ .path = split, .size = 1, .data = "z" });
	tt_tar_finish(&tar);

	struct collect c;
	parse_ok(&tar, &c);
	assert_int_equal(c.n, 4);
	assert_string_equal(c.recs[0].path, "usr/share/doc/file.txt");
	check_data(&tar, &c.recs[0], "hi", 2);
	assert_string_equal(c.recs[1].path, want);
	assert_string_equal(c.recs[2].path, "gnufile");
	assert_string_equal(c.recs[3].path, split);
	check_data(&tar, &c.recs[3], "z", 1);
	/* The split path really used the prefix field (no PAX header). */
	assert_int_equal(c.recs[3].header_offset + 512, c.recs[3].data_offset);
	collect_free(&c);
	tt_buf_free(&tar);
}

static void test_pax_member(void **state)
{
	char longpath[600], longlink[300];
	memset(longpath, 'p', sizeof(longpath) - 1);
	longpath[sizeof(longpath) - 1] = '\0';
	for (size_t i = 50; i < sizeof(longpath) - 1; i += 50)
		longpath[i] = '/';
	memset(longlink, 'l', sizeof(longlink) - 1);
	longlink[sizeof(longlink) - 1] = '\0';
	char longuser[80];
	memset(longuser, 'u', sizeof(longuser) - 1);
	longuser[sizeof(longuser) - 1] = '\0';

	static const unsigned char cap[] = { 0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00,
					     0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
					     0x00, 0x00, 0x00, 0x00, 0x00, 0x00 };
	const struct tt_xattr xattrs[] = {
		{ "security.capability", cap, sizeof(cap) },
		{ "user.empty", "", 0 },
		{ "user.text", "v=1\nx", 5 },
	};
	unsigned char data[700];
	tt_fill_random(data, sizeof(data), 2);

	struct tt_buf tar = { 0 };
	tt_tar_add(&tar, &(struct tt_member){ .path = longpath,
					      .mode = 0755,
					      .uid = 4000000000u,
					      .gid = 3000000,
					      .uname = longuser,
					      .gname = "g",
					      .mtime_sec = 1700000000,
					      .mtime_nsec = 123456789,
					      .data = data,
					      .size = sizeof(data),
					      .xattrs = xattrs,
					      .nxattrs = ARRAY_SIZE(xattrs) });
	tt_tar_add(&tar, &(struct tt_member){ .type = '2', .path = "sym", .linkpath = longlink });
	/* Before the epoch with a fraction: -1.25 s is sec -2 + 0.75. */
	tt_tar_add(&tar,
		   &(struct tt_member){ .path = "old", .mtime_sec = -2, .mtime_nsec = 750000000 });
	tt_tar_add(&tar, &(struct tt_member){ .path = "older", .mtime_sec = -100000 });

	/* Hand-written PAX: size overrides the header; unknown and
	 * LIBARCHIVE.xattr keys are ignored; two 'x' headers merge, the later
	 * one winning. */
	struct tt_buf pax = { 0 };
	tt_pax_record(&pax, "size", "1000", 4);
	tt_pax_record(&pax, "atime", "1.5", 3);
	tt_pax_record(&pax, "LIBARCHIVE.xattr.user.y", "eQ==", 4);
	tt_pax_record(&pax, "comment", "a=b\nc", 5);
	tt_pax_record(&pax, "path", "first", 5);
	tt_pax_record(&pax, "mtime", "12.5", 4);
	tt_tar_ext(&tar, 'x', pax.data, pax.len);
	size_t pax_member_header = tar.len - 1024;
	pax.len = 0;
	tt_pax_record(&pax, "path", "second", 6);
	tt_pax_record(&pax, "mtime", "99.000000001999", 15);
	tt_tar_ext(&tar, 'x', pax.data, pax.len);
	unsigned char big[1000];
	tt_fill_random(big, sizeof(big), 3);
	add_raw(&tar, '0', "header-name", NULL, 0);
	/* The header said 0 bytes; the data really is 1000 bytes. */
	size_t pax_member_data = tar.len;
	tt_buf_append(&tar, big, sizeof(big));
	tt_buf_append_zeros(&tar, 1024 - sizeof(big));
	tt_tar_add(&tar, &(struct tt_member){ .path = "after", .data = "A", .size = 1 });
	tt_tar_finish(&tar);
	tt_buf_free(&pax);

	struct collect c;
	parse_ok(&tar, &c);
	assert_int_equal(c.n, 6);

	const struct rec *r = &c.recs[0];
	assert_string_equal(r->path, longpath);
	assert_int_equal(r->header_offset, 0);
	assert_int_equal(r->uid, 4000000000u);
	assert_int_equal(r->gid, 3000000);
	assert_string_equal(r->uname, longuser);
	assert_string_equal(r->gname, "g");
	assert_int_equal(r->mtime_sec, 1700000000);
	assert_int_equal(r->mtime_nsec, 123456789);
	assert_int_equal(r->mode, 0755);
	check_data(&tar, r, data, sizeof(data));
	assert_int_equal(r->nxattrs, 3);
	for (size_t i = 0; i < ARRAY_SIZE(xattrs); i++) {
		assert_string_equal(r->xattrs[i].name, xattrs[i].name);
		assert_int_equal(r->xattrs[i].len, xattrs[i].len);
		assert_memory_equal(r->xattrs[i].value, xattrs[i].value, xattrs[i].len);
	}

	r = &c.recs[1];
	assert_string_equal(r->path, "sym");
	assert_string_equal(r->link, longlink);
	assert_int_equal(r->nxattrs, 0);

	assert_int_equal(c.recs[2].mtime_sec, -2);
	assert_int_equal(c.recs[2].mtime_nsec, 750000000);
	assert_int_equal(c.recs[3].mtime_sec, -100000);
	assert_int_equal(c.recs[3].mtime_nsec, 0);

	r = &c.recs[4];
	assert_string_equal(r->path, "second");
	assert_int_equal(r->mtime_sec, 99);
	assert_int_equal(r->mtime_nsec, 1);
	assert_int_equal(r->nxattrs, 0);
	assert_int_equal(r->data_offset, pax_member_data);
	assert_int_equal(r->header_offset, pax_member_header);
	check_data(&tar, r, big, sizeof(big));

	assert_string_equal(c.recs[5].path, "after");
	check_data(&tar, &c.recs[5], "A", 1);
	collect_free(&c);
	tt_buf_free(&tar);
}

static void test_pax_global(void **state)
{
	struct tt_buf tar = { 0 }, pax = { 0 };
	tt_tar_add(&tar, &(struct tt_member){ .path = "before", .uid = 1, .mtime_sec = 5 });

	tt_pax_record(&pax, "uid", "77", 2);
	tt_pax_record(&pax, "gid", "55", 2);
	tt_pax_record(&pax, "gname", "globalgroup", 11);
	tt_pax_record(&pax, "mtime", "1000.5", 6);
	tt_pax_record(&pax, "SCHILY.xattr.user.g", "G", 1);
	tt_pax_record(&pax, "SCHILY.xattr.user.shared", "global", 6);
	tt_tar_ext(&tar, 'g', pax.data, pax.len);
	size_t after_global = tar.len;

	tt_tar_add(&tar, &(struct tt_member){
				 .path = "a", .uid = 1, .gid = 2, .gname = "hdr", .mtime_sec = 5 });
	/* A local value wins; an empty local value hides the global default
	 * and lets the header's field through. */
	pax.len = 0;
	tt_pax_record(&pax, "uid", "88", 2);
	tt_pax_record(&pax, "mtime", "", 0);
	tt_pax_record(&pax, "gid", "", 0);
	tt_pax_record(&pax, "gname", "", 0);
	tt_pax_record(&pax, "SCHILY.xattr.user.shared", "local", 5);
	tt_pax_record(&pax, "SCHILY.xattr.user.l", "L", 1);
	tt_tar_ext(&tar, 'x', pax.data, pax.len);
	tt_tar_add(&tar, &(struct tt_member){ .path = "b", .gid = 9, .gname = "hdrgroup" });

	/* A second global header removes the uid default. */
	pax.len = 0;
	tt_pax_record(&pax, "uid", "", 0);
	tt_tar_ext(&tar, 'g', pax.data, pax.len);
	tt_tar_add(&tar, &(struct tt_member){ .path = "c", .uid = 3 });
	tt_tar_finish(&tar);

	struct collect c;
	parse_ok(&tar, &c);
	assert_int_equal(c.n, 4);
	const struct rec *r = &c.recs[0];
	assert_int_equal(r->uid, 1);
	assert_int_equal(r->nxattrs, 0);

	r = &c.recs[1];
	assert_string_equal(r->path, "a");
	/* The global header is not part of the next member. */
	assert_int_equal(r->header_offset, after_global);
	assert_int_equal(r->uid, 77);
	assert_int_equal(r->gid, 55);
	assert_string_equal(r->gname, "globalgroup");
	assert_int_equal(r->mtime_sec, 1000);
	assert_int_equal(r->mtime_nsec, 500000000);
	assert_int_equal(r->nxattrs, 2);
	assert_string_equal(r->xattrs[0].name, "user.g");
	assert_string_equal(r->xattrs[1].name, "user.shared");
	assert_memory_equal(r->xattrs[1].value, "global", 6);

	r = &c.recs[2];
	assert_string_equal(r->path, "b");
	assert_int_equal(r->uid, 88);
	assert_int_equal(r->mtime_sec, 0); /* the header's */
	assert_int_equal(r->mtime_nsec, 0);
	assert_int_equal(r->gid, 9);
	assert_string_equal(r->gname, "hdrgroup");
	assert_int_equal(r->nxattrs, 3);
	assert_string_equal(r->xattrs[0].name, "user.g");
	assert_string_equal(r->xattrs[1].name, "user.shared");
	assert_int_equal(r->xattrs[1].len, 5);
	assert_memory_equal(r->xattrs[1].value, "local", 5);
	assert_string_equal(r->xattrs[2].name, "user.l");

	r = &c.recs[3];
	assert_int_equal(r->uid, 3);
	assert_int_equal(r->mtime_sec, 1000);
	assert_int_equal(r->nxattrs, 2);
	collect_free(&c);
	tt_buf_free(&tar);
	tt_buf_free(&pax);
}

static void test_gnu_long_names(void **state)
{
	char longname[300], longlink[200];
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	longname[100] = '/';
	memset(longlink, 'k', sizeof(longlink) - 1);
	longlink[sizeof(longlink) - 1] = '\0';

	struct tt_buf tar = { 0 };
	unsigned char b[TT_TAR_BLOCK];
	tt_tar_ext(&tar, 'L', longname, strlen(longname) + 1);
	tt_tar_ext(&tar, 'K', longlink, strlen(longlink) + 1);
	tt_tar_header_init(b, '2', "truncated-name", 0);
	tt_tar_set_gnu_magic(b);
	tt_tar_set_str(b + TT_OFF_LINKNAME, TT_LEN_LINKNAME, "truncated-link");
	tt_tar_set_checksum(b);
	tt_tar_raw(&tar, b, NULL, 0);

	/* A long name without its NUL, for a hard link with a long target. */
	size_t second = tar.len;
	tt_tar_ext(&tar, 'L', "dir/x", 5);
	tt_tar_ext(&tar, 'K', longname, strlen(longname) + 1);
	tt_tar_header_init(b, '1', "x", 0);
	tt_tar_set_gnu_magic(b);
	tt_tar_set_checksum(b);
	tt_tar_raw(&tar, b, NULL, 0);

	/* The long name applies to one member only. */
	add_raw(&tar, '0', "plain", "p", 1);
	tt_tar_finish(&tar);

	struct collect c;
	parse_ok(&tar, &c);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.recs[0].type, CLIP_TAR_SYMLINK);
	assert_string_equal(c.recs[0].path, longname);
	assert_string_equal(c.recs[0].link, longlink);
	assert_int_equal(c.recs[0].header_offset, 0);
	assert_int_equal(c.recs[0].data_offset, 5 * 512);
	assert_int_equal(c.recs[1].type, CLIP_TAR_HARDLINK);
	assert_string_equal(c.recs[1].path, "dir/x");
	assert_string_equal(c.recs[1].link, longname);
	assert_int_equal(c.recs[1].header_offset, second);
	assert_string_equal(c.recs[2].path, "plain");
	assert_null(c.recs[2].link);
	check_data(&tar, &c.recs[2], "p", 1);
	collect_free(&c);
	tt_buf_free(&tar);
}

static void test_base256_and_octal_forms(void **state)
{
	struct tt_buf tar = { 0 };
	unsigned char b[TT_TAR_BLOCK];

	tt_tar_header_init(b, '0', "b256", 0);
	tt_tar_set_base256(b + TT_OFF_SIZE, TT_LEN_SIZE, 700);
	tt_tar_set_base256(b + TT_OFF_UID, TT_LEN_UID, 4294967295);
	tt_tar_set_base256(b + TT_OFF_GID, TT_LEN_GID, 0);
	tt_tar_set_base256(b + TT_OFF_MTIME, TT_LEN_MTIME, -86400);
	tt_tar_set_checksum(b);
	unsigned char data[700];
	tt_fill_random(data, sizeof(data), 4);
	tt_tar_raw(&tar, b, data, sizeof(data));

	/* Leading spaces, space terminators, a full-width field without a
	 * terminator, and empty (all-NUL) fields read as 0. */
	tt_tar_header_init(b, '3', "odd", 0);
	memcpy(b + TT_OFF_MODE, "  644 \0\0", 8);
	memcpy(b + TT_OFF_UID, "0000012 ", 8);
	memset(b + TT_OFF_GID, 0, 8);
	memcpy(b + TT_OFF_SIZE, "00000000000 ", 12);
	memcpy(b + TT_OFF_MTIME, "777777777777", 12);
	memcpy(b + TT_OFF_DEVMAJOR, "     17\0", 8);
	memset(b + TT_OFF_DEVMINOR, 0, 8);
	tt_tar_set_checksum(b);
	tt_tar_raw(&tar, b, NULL, 0);

	/* A signed-sum checksum (bytes >= 0x80 in the name) is accepted. */
	tt_tar_header_init(b, '0',
			   "caf\xc3\xa9"
			   "-\xff",
			   0);
	memset(b + TT_OFF_CHKSUM, ' ', TT_LEN_CHKSUM);
	int sum = 0;
	for (size_t i = 0; i < TT_TAR_BLOCK; i++)
		sum += (signed char)b[i];
	char tmp[16];
	snprintf(tmp, sizeof(tmp), "%06o", sum);
	memcpy(b + TT_OFF_CHKSUM, tmp, 6);
	b[TT_OFF_CHKSUM + 6] = '\0';
	tt_tar_raw(&tar, b, NULL, 0);

	/* A v7 header (no magic): no uname/gname/prefix. */
	tt_tar_header_init(b, '0', "v7", 0);
	memset(b + TT_OFF_MAGIC, 0, 8);
	tt_tar_set_str(b + TT_OFF_UNAME, TT_LEN_UNAME, "ignored");
	tt_tar_set_str(b + TT_OFF_PREFIX, TT_LEN_PREFIX, "ignored");
	tt_tar_set_checksum(b);
	tt_tar_raw(&tar, b, NULL, 0);
	tt_tar_finish(&tar);

	struct collect c;
	parse_ok(&tar, &c);
	assert_int_equal(c.n, 4);
	const struct rec *r = &c.recs[0];
	check_data(&tar, r, data, sizeof(data));
	assert_int_equal(r->uid, 4294967295u);
	assert_int_equal(r->gid, 0);
	assert_int_equal(r->mtime_sec, -86400);

	r = &c.recs[1];
	assert_int_equal(r->type, CLIP_TAR_CHR);
	assert_int_equal(r->mode, 0644);
	assert_int_equal(r->uid, 10);
	assert_int_equal(r->gid, 0);
	assert_int_equal(r->mtime_sec, 077777777777ll * 8 + 7);
	assert_int_equal(r->devmajor, 017);
	assert_int_equal(r->devminor, 0);

	assert_string_equal(c.recs[2].path, "caf\xc3\xa9"
					    "-\xff");
	assert_string_equal(c.recs[3].path, "v7");
	assert_string_equal(c.recs[3].uname, "");
	collect_free(&c);
	tt_buf_free(&tar);
}

/* GNU tar's rules for data after non-regular headers: skipped for symlinks,
 * devices and FIFOs; not for directories ('5') and hard links, except that a
 * PAX size on a hard link means real data. */
static void test_data_after_special_members(void **state)
{
	struct tt_buf tar = { 0 }, pax = { 0 };
	unsigned char b[TT_TAR_BLOCK];
	unsigned char fake[TT_TAR_BLOCK];
	/* What follows a header that claims data: a valid header, which a
	 * parser must either skip as data or report as a member. */
	tt_tar_header_init(fake, '0', "inner", 0);

	static const struct {
		char type;
		bool skipped;
	} cases[] = { { '2', true }, { '3', true },  { '4', true },
		      { '6', true }, { '1', false }, { '5', false } };
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char name[16];
		snprintf(name, sizeof(name), "m%zu", i);
		tt_tar_header_init(b, cases[i].type, name, 512);
		tt_tar_set_str(b + TT_OFF_LINKNAME, TT_LEN_LINKNAME, "target");
		tt_tar_set_checksum(b);
		tt_buf_append(&tar, b, sizeof(b));
		tt_buf_append(&tar, fake, sizeof(fake));
	}
	/* Hard link with a PAX size: 512 bytes of data are skipped. */
	tt_pax_record(&pax, "size", "512", 3);
	tt_tar_ext(&tar, 'x', pax.data, pax.len);
	tt_tar_header_init(b, '1', "paxlink", 0);
	tt_tar_set_str(b + TT_OFF_LINKNAME, TT_LEN_LINKNAME, "target");
	tt_tar_set_checksum(b);
	tt_buf_append(&tar, b, sizeof(b));
	tt_buf_append(&tar, fake, sizeof(fake));
	/* An old-style directory (regular type, trailing slash) has its data
	 * skipped like a file's. */
	tt_tar_header_init(b, '0', "olddir/", 512);
	tt_buf_append(&tar, b, sizeof(b));
	tt_buf_append(&tar, fake, sizeof(fake));
	tt_tar_finish(&tar);

	struct collect c;
	parse_ok(&tar, &c);
	size_t k = 0;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char name[16];
		snprintf(name, sizeof(name), "m%zu", i);
		assert_true(k < c.n);
		assert_string_equal(c.recs[k].path, name);
		assert_int_equal(c.recs[k].size, 0);
		k++;
		if (!cases[i].skipped) {
			assert_true(k < c.n);
			assert_string_equal(c.recs[k].path, "inner");
			k++;
		}
	}
	assert_string_equal(c.recs[k].path, "paxlink");
	assert_int_equal(c.recs[k].type, CLIP_TAR_HARDLINK);
	assert_int_equal(c.recs[k].size, 0);
	k++;
	assert_string_equal(c.recs[k].path, "olddir");
	assert_int_equal(c.recs[k].type, CLIP_TAR_DIR);
	k++;
	assert_int_equal(c.n, k);
	collect_free(&c);
	tt_buf_free(&tar);
	tt_buf_free(&pax);
}

static void test_end_of_archive(void **state)
{
	struct collect c;
	struct tt_buf tar = { 0 };

	/* Empty input, and an archive that is only the marker. */
	parse_ok(&tar, &c);
	assert_int_equal(c.n, 0);
	collect_free(&c);
	tt_tar_finish(&tar);
	parse_ok(&tar, &c);
	assert_int_equal(c.n, 0);
	collect_free(&c);
	tt_buf_free(&tar);

	/* No marker at all: ends at a member boundary, fine. */
	tt_tar_add(&tar, &(struct tt_member){ .path = "a", .data = "xyz", .size = 3 });
	parse_ok(&tar, &c);
	assert_int_equal(c.n, 1);
	collect_free(&c);

	/* One zero block then EOF. */
	tt_buf_append_zeros(&tar, 512);
	parse_ok(&tar, &c);
	assert_int_equal(c.n, 1);
	collect_free(&c);

	/* Anything after the marker is ignored, even a valid member, garbage
	 * or a partial block. */
	tt_buf_append_zeros(&tar, 512);
	tt_tar_add(&tar, &(struct tt_member){ .path = "hidden" });
	tt_buf_append(&tar, "garbage", 7);
	parse_ok(&tar, &c);
	assert_int_equal(c.n, 1);
	assert_string_equal(c.recs[0].path, "a");
	collect_free(&c);
	tt_buf_free(&tar);

	/* A huge member (only its header): the size is reported, and ending
	 * the stream inside its data is a truncation. */
	unsigned char b[TT_TAR_BLOCK];
	tt_tar_header_init(b, '0', "huge", 0);
	tt_tar_set_base256(b + TT_OFF_SIZE, TT_LEN_SIZE, (int64_t)1 << 40);
	tt_tar_set_checksum(b);
	tt_buf_append(&tar, b, sizeof(b));
	tt_buf_append_zeros(&tar, 4096);
	struct clip_err err = { 0 };
	c = (struct collect){ .fail_at = -1 };
	assert_int_equal(parse_way(tar.data, tar.len, WAY_WHOLE, &c, &err), -EBADMSG);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.recs[0].size, (uint64_t)1 << 40);
	char want[200];
	snprintf(want, sizeof(want),
		 "tar member \"huge\" with data at offset 512: truncated data (%" PRIu64
		 " bytes missing)",
		 ((uint64_t)1 << 40) - 4096);
	assert_string_equal(err.msg, want);
	collect_free(&c);
	tt_buf_free(&tar);
}

static void test_callback_error(void **state)
{
	struct tt_buf tar = { 0 };
	tt_tar_add(&tar, &(struct tt_member){ .path = "one" });
	tt_tar_add(&tar, &(struct tt_member){ .path = "two" });
	tt_tar_add(&tar, &(struct tt_member){ .path = "three" });
	tt_tar_finish(&tar);
	for (int way = 0; way < NWAYS; way++) {
		struct collect c = { .fail_at = 1 };
		struct clip_err err = { 0 };
		assert_int_equal(parse_way(tar.data, tar.len, way, &c, &err), -EIO);
		assert_string_equal(err.msg, "callback refuses two");
		assert_int_equal(c.n, 1);
		collect_free(&c);
	}
	tt_buf_free(&tar);
}

/* ---- bad input ----------------------------------------------------------- */

static void test_truncated(void **state)
{
	struct tt_buf tar = { 0 };
	tt_tar_add(&tar, &(struct tt_member){ .path = "a", .data = "abc", .size = 3 });
	size_t one = tar.len;
	tt_tar_add(&tar, &(struct tt_member){ .path = "b", .data = NULL, .size = 2000 });
	size_t two = tar.len;

	/* Inside a header. */
	struct tt_buf t = { 0 };
	tt_buf_append(&t, tar.data, one + 100);
	expect_error(&t, "tar header at offset 1024: truncated header (100 of 512 bytes)", NULL);

	/* Inside data, and inside the padding after it. */
	t.len = 0;
	tt_buf_append(&t, tar.data, one + 512 + 1000);
	expect_error(&t,
		     "tar member \"b\" with data at offset 1536: truncated data "
		     "(1048 bytes missing)",
		     NULL);
	t.len = 0;
	tt_buf_append(&t, tar.data, two - 1);
	expect_error(&t,
		     "tar member \"b\" with data at offset 1536: truncated data "
		     "(1 bytes missing)",
		     NULL);

	/* Inside an extended header's payload, after it, and inside its
	 * padding. */
	tt_buf_free(&tar);
	tt_tar_add(&tar, &(struct tt_member){ .path = "x",
					      .xattrs = &(struct tt_xattr){ "user.a", "1", 1 },
					      .nxattrs = 1 });
	t.len = 0;
	tt_buf_append(&t, tar.data, 512 + 10);
	expect_error(&t, NULL, "tar header at offset 0: truncated pax header (10 of ");
	t.len = 0;
	tt_buf_append(&t, tar.data, 1024);
	expect_error(&t,
		     "tar header at offset 0: truncated: extended header not followed by a "
		     "member",
		     NULL);
	/* An extended header followed by the end marker. */
	tt_buf_append_zeros(&t, 1024);
	expect_error(&t, "tar header at offset 0: extended header not followed by a member", NULL);
	tt_buf_free(&t);
	tt_buf_free(&tar);

	tt_tar_ext(&tar, 'L', "name", 5);
	tar.len = 512 + 5;
	expect_error(&tar, "tar header at offset 0: truncated GNU long name header padding", NULL);
	tt_buf_free(&tar);
}

static void test_bad_checksum(void **state)
{
	struct tt_buf tar = { 0 };
	tt_tar_add(&tar, &(struct tt_member){ .path = "good" });
	unsigned char b[TT_TAR_BLOCK];
	tt_tar_header_init(b, '0', "bad", 0);
	b[TT_OFF_NAME + 1] ^= 1;
	tt_tar_raw(&tar, b, NULL, 0);
	tt_tar_finish(&tar);
	expect_error(&tar, "tar header at offset 512: checksum mismatch", NULL);

	/* A checksum field that is not a number. */
	tt_buf_free(&tar);
	tt_tar_header_init(b, '0', "bad", 0);
	memcpy(b + TT_OFF_CHKSUM, "abcdef\0 ", 8);
	tt_tar_raw(&tar, b, NULL, 0);
	expect_error(&tar, "tar header at offset 0: checksum mismatch", NULL);

	/* Random garbage. */
	tt_buf_free(&tar);
	tt_buf_append_zeros(&tar, 512);
	tt_fill_random(tar.data, 512, 5);
	expect_error(&tar, "tar header at offset 0: checksum mismatch", NULL);
	tt_buf_free(&tar);
}

/* One member "f" whose header field at `off` holds `bytes` (or base-256
 * `b256` when bytes is NULL); the archive must fail with `exact`. */
static void expect_field_error(size_t off, size_t width, const char *bytes, int64_t b256, char type,
			       const char *exact)
{
	struct tt_buf tar = { 0 };
	unsigned char b[TT_TAR_BLOCK];
	tt_tar_header_init(b, type, "f", 0);
	if (bytes != NULL)
		memcpy(b + off, bytes, width);
	else
		tt_tar_set_base256(b + off, width, b256);
	tt_tar_set_checksum(b);
	tt_tar_raw(&tar, b, NULL, 0);
	tt_tar_finish(&tar);
	expect_error(&tar, exact, NULL);
	tt_buf_free(&tar);
}

static void test_bad_numbers(void **state)
{
	expect_field_error(TT_OFF_SIZE, 12, NULL, -1, '0',
			   "tar member \"f\" at offset 0: size field is negative");
	expect_field_error(TT_OFF_SIZE, 12, NULL, INT64_MIN, '0',
			   "tar member \"f\" at offset 0: size field is negative");
	/* 2^63 and beyond do not fit an offset. */
	expect_field_error(TT_OFF_SIZE, 12, "\x80\x00\x00\x00\x80\x00\x00\x00\x00\x00\x00\x00", 0,
			   '0', "tar member \"f\" at offset 0: size field overflows");
	expect_field_error(TT_OFF_SIZE, 12, "\xbf\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 0,
			   '0', "tar member \"f\" at offset 0: size field overflows");
	expect_field_error(TT_OFF_SIZE, 12, "0000000012x\0", 0, '0',
			   "tar member \"f\" at offset 0: size field is not a valid number");
	expect_field_error(TT_OFF_SIZE, 12, "00000009999\0", 0, '0',
			   "tar member \"f\" at offset 0: size field is not a valid number");
	expect_field_error(TT_OFF_SIZE, 12, "-0000000001\0", 0, '0',
			   "tar member \"f\" at offset 0: size field is not a valid number");
	expect_field_error(TT_OFF_MODE, 8, "06x4\0\0\0\0", 0, '0',
			   "tar member \"f\" at offset 0: mode field is not a valid number");
	expect_field_error(TT_OFF_UID, 8, NULL, (int64_t)1 << 32, '0',
			   "tar member \"f\" at offset 0: uid field overflows");
	expect_field_error(TT_OFF_GID, 8, NULL, -5, '0',
			   "tar member \"f\" at offset 0: gid field is negative");
	expect_field_error(TT_OFF_MTIME, 12, "1234567z90\0\0", 0, '0',
			   "tar member \"f\" at offset 0: mtime field is not a valid number");
	expect_field_error(TT_OFF_MTIME, 12, "\x80\x7f\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 0,
			   '0', "tar member \"f\" at offset 0: mtime field overflows");
	expect_field_error(TT_OFF_DEVMAJOR, 8, "abc\0\0\0\0\0", 0, '3',
			   "tar member \"f\" at offset 0: devmajor field is not a valid number");
	expect_field_error(TT_OFF_DEVMINOR, 8, NULL, -1, '4',
			   "tar member \"f\" at offset 0: devminor field is negative");
	/* Device fields are not read for other types. */
	struct tt_buf tar = { 0 };
	unsigned char b[TT_TAR_BLOCK];
	tt_tar_header_init(b, '0', "f", 0);
	memcpy(b + TT_OFF_DEVMAJOR, "garbage", 7);
	tt_tar_set_checksum(b);
	tt_tar_raw(&tar, b, NULL, 0);
	struct collect c;
	parse_ok(&tar, &c);
	assert_int_equal(c.n, 1);
	collect_free(&c);
	tt_buf_free(&tar);
}

/* An archive of one 'x' header with `payload` and a member "m". */
static void expect_pax_error(const char *payload, size_t len, char type, const char *exact)
{
	struct tt_buf tar = { 0 };
	tt_tar_ext(&tar, type, payload, len);
	add_raw(&tar, '0', "m", NULL, 0);
	tt_tar_finish(&tar);
	expect_error(&tar, exact, NULL);
	tt_buf_free(&tar);
}

/* A raw PAX payload (a string literal, NULs allowed) that must be refused. */
#define PAX_BAD_RAW(payload, msg)                                                                  \
	expect_pax_error(payload, sizeof(payload) - 1, 'x',                                        \
			 "tar header at offset 0: pax header: " msg)

/* One correctly sized record KEY=VALUE whose value must be refused. */
static void pax_bad_record(const char *key, const char *value, size_t len, const char *msg)
{
	struct tt_buf pax = { 0 };
	char want[256];
	tt_pax_record(&pax, key, value, len);
	snprintf(want, sizeof(want), "tar header at offset 0: pax header: %s", msg);
	expect_pax_error((const char *)pax.data, pax.len, 'x', want);
	tt_buf_free(&pax);
}
#define PAX_BAD_RECORD(key, value, msg) pax_bad_record(key, value, sizeof(value) - 1, msg)

static void test_bad_pax(void **state)
{
	/* Record framing: the length must be a number, count the whole
	 * record and stay inside the payload. */
	PAX_BAD_RAW("13 path=abc\nX", "record at byte 0: length 13 is wrong");
	PAX_BAD_RAW("11 path=abc\n", "record at byte 0: length 11 is wrong");
	PAX_BAD_RAW("12 path=abc\n13 uid=5\n", "record at byte 12 runs past the end of the header");
	PAX_BAD_RAW("13 path=abc\n", "record at byte 0 runs past the end of the header");
	PAX_BAD_RAW("99999999999999999999999 path=abc\n",
		    "record at byte 0 runs past the end of the header");
	PAX_BAD_RAW("x path=abc\n", "record at byte 0: length is not a number");
	PAX_BAD_RAW(" 12 path=abc\n", "record at byte 0: length is not a number");
	PAX_BAD_RAW("12path=abcd\n", "record at byte 0: length is not a number");
	PAX_BAD_RAW("1", "record at byte 0: length is not a number");
	PAX_BAD_RAW("11 pathabc\n", "record at byte 0 has no '='");
	PAX_BAD_RAW("7 =abc\n", "record at byte 0 has an empty key");
	PAX_BAD_RAW("3 \n", "record at byte 0: length 3 is wrong");
	PAX_BAD_RAW("6 a\nb\n", "record at byte 0 has no '='");
	PAX_BAD_RAW("12 path=abc\n\0\0x", "garbage after NUL at byte 12");
	PAX_BAD_RAW("21 SCHILY.xattr.a\0b=\n", "NUL byte in xattr name");

	/* Values. */
	PAX_BAD_RECORD("size", "12a", "size value is not a valid number");
	PAX_BAD_RECORD("size", "-12", "size value is not a valid number");
	PAX_BAD_RECORD("size", " 12", "size value is not a valid number");
	PAX_BAD_RECORD("size", "9223372036854775808", "size value overflows");
	PAX_BAD_RECORD("uid", "4294967296", "uid value overflows");
	PAX_BAD_RECORD("gid", "0x10", "gid value is not a valid number");
	PAX_BAD_RECORD("mtime", "1.a", "mtime value is not a valid number");
	PAX_BAD_RECORD("mtime", "--1", "mtime value is not a valid number");
	PAX_BAD_RECORD("mtime", ".", "mtime value is not a valid number");
	PAX_BAD_RECORD("mtime", "-", "mtime value is not a valid number");
	PAX_BAD_RECORD("mtime", "9223372036854775808", "mtime value overflows");
	PAX_BAD_RECORD("path", "a\0b", "NUL byte in path");
	PAX_BAD_RECORD("path", "\0", "NUL byte in path");
	PAX_BAD_RECORD("linkpath", "a\0b", "NUL byte in linkpath");
	PAX_BAD_RECORD("uname", "x\0\0", "NUL byte in uname");
	PAX_BAD_RECORD("gname", "\0x", "NUL byte in gname");
	PAX_BAD_RECORD("SCHILY.xattr.", "v", "empty xattr name");

	/* Trailing NUL padding after the last record is tolerated. */
	struct tt_buf tar = { 0 };
	tt_tar_ext(&tar, 'x', "12 path=abc\n\0\0\0", 15);
	add_raw(&tar, '0', "m", NULL, 0);
	struct collect c;
	parse_ok(&tar, &c);
	assert_string_equal(c.recs[0].path, "abc");
	collect_free(&c);
	tt_buf_free(&tar);

	/* The same strictness in a global header. */
	expect_pax_error("11 path=abc\n", 12, 'g',
			 "tar header at offset 0: pax global header: record at byte 0: length 11 "
			 "is wrong");

	/* Sparse files, by PAX keys or by type. */
	expect_pax_error("22 GNU.sparse.major=1\n", 22, 'x',
			 "tar header at offset 0: sparse files are not supported");
	expect_pax_error("25 GNU.sparse.realsize=1\n", 25, 'g',
			 "tar header at offset 0: sparse files are not supported");
	tt_tar_ext(&tar, 'x', "", 0);
	add_raw(&tar, 'S', "sp", NULL, 0);
	expect_error(&tar, "tar member \"sp\" at offset 0: sparse files are not supported", NULL);
	tt_buf_free(&tar);
}

static void test_limits(void **state)
{
	struct tt_buf tar = { 0 }, pax = { 0 };
	unsigned char b[TT_TAR_BLOCK];
	char want[256];

	/* Extended headers over the limit are refused from their size field,
	 * before any payload is read. */
	static const char types[] = { 'x', 'g', 'L', 'K' };
	static const char *names[] = { "pax header", "pax global header", "GNU long name header",
				       "GNU long link header" };
	for (size_t i = 0; i < 4; i++) {
		tt_tar_header_init(b, types[i], "ext", CLIP_TAR_MAX_EXT_HEADER + 1);
		tt_buf_append(&tar, b, sizeof(b));
		snprintf(want, sizeof(want),
			 "tar header at offset 0: %s of %u bytes exceeds the limit of %u bytes",
			 names[i], CLIP_TAR_MAX_EXT_HEADER + 1, CLIP_TAR_MAX_EXT_HEADER);
		expect_error(&tar, want, NULL);
		tt_buf_free(&tar);
	}
	/* Exactly at the limit is fine. */
	{
		size_t vlen = CLIP_TAR_MAX_EXT_HEADER - strlen("1048576 comment=\n");
		char *v = malloc(vlen);
		assert_non_null(v);
		memset(v, 'c', vlen);
		tt_pax_record(&pax, "comment", v, vlen);
		free(v);
		assert_int_equal(pax.len, CLIP_TAR_MAX_EXT_HEADER);
	}
	tt_tar_ext(&tar, 'x', pax.data, pax.len);
	add_raw(&tar, '0', "m", NULL, 0);
	struct collect c;
	parse_ok(&tar, &c);
	assert_int_equal(c.n, 1);
	collect_free(&c);
	tt_buf_free(&tar);
	tt_buf_free(&pax);

	/* Paths: CLIP_TAR_MAX_PATH bytes pass, one more fails (PAX and GNU). */
	char *path = malloc(CLIP_TAR_MAX_PATH + 2);
	assert_non_null(path);
	memset(path, 'a', CLIP_TAR_MAX_PATH + 1);
	for (size_t i = 200; i < CLIP_TAR_MAX_PATH; i += 200)
		path[i] = '/';
	path[CLIP_TAR_MAX_PATH] = '\0';
	tt_tar_add(&tar, &(struct tt_member){ .path = path });
	tt_tar_ext(&tar, 'L', path, CLIP_TAR_MAX_PATH + 1);
	add_raw(&tar, '0', "short", NULL, 0);
	parse_ok(&tar, &c);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.recs[0].path, path);
	assert_string_equal(c.recs[1].path, path);
	collect_free(&c);
	tt_buf_free(&tar);

	path[CLIP_TAR_MAX_PATH] = 'a';
	path[CLIP_TAR_MAX_PATH + 1] = '\0';
	tt_pax_record(&pax, "path", path, strlen(path));
	tt_tar_ext(&tar, 'x', pax.data, pax.len);
	add_raw(&tar, '0', "m", NULL, 0);
	expect_error(&tar,
		     "tar header at offset 0: pax header: path of 4097 bytes exceeds the "
		     "limit of 4096",
		     NULL);
	tt_buf_free(&tar);
	tt_buf_free(&pax);
	tt_pax_record(&pax, "linkpath", path, strlen(path));
	tt_tar_ext(&tar, 'x', pax.data, pax.len);
	add_raw(&tar, '2', "m", NULL, 0);
	expect_error(&tar,
		     "tar header at offset 0: pax header: linkpath of 4097 bytes exceeds "
		     "the limit of 4096",
		     NULL);
	tt_buf_free(&tar);
	tt_buf_free(&pax);
	tt_tar_ext(&tar, 'K', path, strlen(path) + 1);
	add_raw(&tar, '1', "m", NULL, 0);
	expect_error(&tar,
		     "tar header at offset 0: GNU long link header: 4097 bytes exceeds the "
		     "limit of 4096",
		     NULL);
	tt_buf_free(&tar);
	free(path);

	/* xattrs: CLIP_TAR_MAX_XATTRS pass, one more fails; global and local
	 * count together. */
	for (int extra = 0; extra <= 1; extra++) {
		for (int i = 0; i < CLIP_TAR_MAX_XATTRS + extra; i++) {
			char key[64];
			snprintf(key, sizeof(key), "SCHILY.xattr.user.%d", i);
			tt_pax_record(&pax, key, "v", 1);
		}
		tt_tar_ext(&tar, 'x', pax.data, pax.len);
		add_raw(&tar, '0', "m", NULL, 0);
		if (extra == 0) {
			parse_ok(&tar, &c);
			assert_int_equal(c.recs[0].nxattrs, CLIP_TAR_MAX_XATTRS);
			collect_free(&c);
		} else {
			expect_error(&tar,
				     "tar header at offset 0: pax header: more than 1024 "
				     "xattrs",
				     NULL);
		}
		tt_buf_free(&tar);
		tt_buf_free(&pax);
	}
	for (int i = 0; i < CLIP_TAR_MAX_XATTRS; i++) {
		char key[64];
		snprintf(key, sizeof(key), "SCHILY.xattr.user.g%d", i);
		tt_pax_record(&pax, key, "v", 1);
	}
	tt_tar_ext(&tar, 'g', pax.data, pax.len);
	tt_buf_free(&pax);
	/* Overriding a global xattr does not add to the count... */
	tt_pax_record(&pax, "SCHILY.xattr.user.g0", "w", 1);
	tt_tar_ext(&tar, 'x', pax.data, pax.len);
	add_raw(&tar, '0', "ok", NULL, 0);
	/* ...a new one does. */
	tt_buf_free(&pax);
	tt_pax_record(&pax, "SCHILY.xattr.user.new", "w", 1);
	tt_tar_ext(&tar, 'x', pax.data, pax.len);
	size_t bad = tar.len;
	add_raw(&tar, '0', "toomany", NULL, 0);
	snprintf(want, sizeof(want), "tar member \"toomany\" at offset %zu: more than 1024 xattrs",
		 bad - 1024);
	expect_error(&tar, want, NULL);
	tt_buf_free(&tar);
	tt_buf_free(&pax);
}

static void test_bad_paths_and_types(void **state)
{
	struct tt_buf tar = { 0 }, pax = { 0 };
	static const char *escapes[] = { "..",	"../a",	  "a/..",	   "a/../b",
					 "/..", "./../x", "a/b/c/../../.." };
	char want[256];
	for (size_t i = 0; i < ARRAY_SIZE(escapes); i++) {
		add_raw(&tar, '0', escapes[i], NULL, 0);
		snprintf(want, sizeof(want), "tar member \"%s\" at offset 0: path escapes the root",
			 escapes[i]);
		expect_error(&tar, want, NULL);
		tt_buf_free(&tar);

		/* In a PAX path and a GNU long name. */
		tt_pax_record(&pax, "path", escapes[i], strlen(escapes[i]));
		tt_tar_ext(&tar, 'x', pax.data, pax.len);
		add_raw(&tar, '0', "fine", NULL, 0);
		expect_error(&tar, want, NULL);
		tt_buf_free(&tar);
		tt_buf_free(&pax);
		tt_tar_ext(&tar, 'L', escapes[i], strlen(escapes[i]) + 1);
		add_raw(&tar, '0', "fine", NULL, 0);
		expect_error(&tar, want, NULL);
		tt_buf_free(&tar);

		/* As a hard link target (header and PAX). */
		tt_tar_add(&tar,
			   &(struct tt_member){ .type = '1', .path = "h", .linkpath = escapes[i] });
		expect_error(&tar,
			     "tar member \"h\" at offset 0: hard link target: path escapes "
			     "the root",
			     NULL);
		tt_buf_free(&tar);
		tt_pax_record(&pax, "linkpath", escapes[i], strlen(escapes[i]));
		tt_tar_ext(&tar, 'x', pax.data, pax.len);
		add_raw(&tar, '1', "h", NULL, 0);
		expect_error(&tar,
			     "tar member \"h\" at offset 0: hard link target: path escapes "
			     "the root",
			     NULL);
		tt_buf_free(&tar);
		tt_buf_free(&pax);

		/* A symlink may point anywhere: its target is not a path in
		 * the archive. */
		tt_tar_add(&tar,
			   &(struct tt_member){ .type = '2', .path = "s", .linkpath = escapes[i] });
		struct collect c;
		parse_ok(&tar, &c);
		assert_string_equal(c.recs[0].link, escapes[i]);
		collect_free(&c);
		tt_buf_free(&tar);
	}

	add_raw(&tar, '0', "", NULL, 0);
	expect_error(&tar, "tar header at offset 0: empty path", NULL);
	tt_buf_free(&tar);
	tt_tar_ext(&tar, 'L', "", 1);
	add_raw(&tar, '0', "fine", NULL, 0);
	expect_error(&tar, "tar header at offset 0: empty path", NULL);
	tt_buf_free(&tar);
	add_raw(&tar, '1', "h", NULL, 0);
	expect_error(&tar, "tar member \"h\" at offset 0: empty hard link target", NULL);
	tt_buf_free(&tar);
	tt_tar_add(&tar, &(struct tt_member){ .type = '1', .path = "h", .linkpath = "./" });
	expect_error(&tar, "tar member \"h\" at offset 0: hard link to the root directory", NULL);
	tt_buf_free(&tar);

	static const struct {
		char type;
		const char *repr;
	} types[] = { { 'V', "V" }, { 'M', "M" },	 { 'N', "N" },
		      { 'D', "D" }, { 'A', "A" },	 { '8', "8" },
		      { 'X', "X" }, { '\x01', "\\x01" }, { '\x80', "\\x80" } };
	for (size_t i = 0; i < ARRAY_SIZE(types); i++) {
		tt_tar_add(&tar, &(struct tt_member){ .path = "ok" });
		size_t off = tar.len;
		add_raw(&tar, types[i].type, "odd", NULL, 0);
		snprintf(want, sizeof(want),
			 "tar member \"odd\" at offset %zu: unsupported tar entry type '%s'", off,
			 types[i].repr);
		expect_error(&tar, want, NULL);
		tt_buf_free(&tar);
	}
	add_raw(&tar, 'S', "sparse", NULL, 0);
	expect_error(&tar, "tar member \"sparse\" at offset 0: sparse files are not supported",
		     NULL);
	tt_buf_free(&tar);
}

/* ---- real GNU tar -------------------------------------------------------- */

/* "a/b" (just "a" when b is empty), owned by the caller. */
static char *join(const char *a, const char *b)
{
	struct tt_buf p = { 0 };
	tt_buf_printf(&p, "%s%s%s", a, b[0] ? "/" : "", b);
	tt_buf_append(&p, "", 1);
	return (char *)p.data;
}

static void put_file(const char *src, const char *name, const void *data, size_t len, mode_t mode)
{
	char *p = join(src, name);
	tt_write_file(p, data, len);
	assert_int_equal(chmod(p, mode), 0);
	free(p);
}

static void put_dir(const char *src, const char *name, mode_t mode)
{
	char *p = join(src, name);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(chmod(p, mode), 0);
	free(p);
}

static void put_symlink(const char *src, const char *name, const char *target)
{
	char *p = join(src, name);
	assert_int_equal(symlink(target, p), 0);
	free(p);
}

/* A tree with every member type an unprivileged user can make. Sets
 * *have_xattr when the filesystem took a user.x xattr on "small". */
static void make_tree(const char *src, bool *have_xattr)
{
	static unsigned char big[100000];
	tt_fill_random(big, sizeof(big), 6);
	put_file(src, "small", "hello\n", 6, 0644);
	put_file(src, "big", big, sizeof(big), 0600);
	put_file(src, "empty", "", 0, 04755);
	put_dir(src, "dir", 0750);
	put_dir(src, "dir/sticky", 01777);
	put_symlink(src, "link", "small");
	put_symlink(src, "dir/dangling", "../../nowhere/..");
	/* "ünïcødé-名前.txt" */
	put_file(src,
		 "\xc3\xbc"
		 "n\xc3\xaf"
		 "c\xc3\xb8"
		 "d\xc3\xa9"
		 "-\xe5\x90\x8d.txt",
		 "u", 1, 0644);

	char *p = join(src, "small"), *q = join(src, "dir/hard");
	assert_int_equal(link(p, q), 0);
	free(q);
	q = join(src, "fifo");
	assert_int_equal(mkfifo(q, 0600), 0);
	free(q);

	/* A name over 100 bytes without a slash, a path over 255 bytes, and a
	 * symlink target over 100 bytes. */
	char comp[200 + 1 + 200 + 1];
	memset(comp, 'L', 150);
	comp[150] = '\0';
	put_file(src, comp, "long1", 5, 0644);
	memset(comp, 'D', 200);
	comp[200] = '\0';
	put_dir(src, comp, 0755);
	comp[200] = '/';
	memset(comp + 201, 'F', 200);
	comp[401] = '\0';
	put_file(src, comp, "long2", 5, 0644);
	put_symlink(src, "longlink", comp);

	*have_xattr = setxattr(p, "user.x", "v\0al", 4, 0) == 0;
	if (!*have_xattr)
		fprintf(stderr, "note: no user xattrs under %s (%s): xattr checks skipped\n", src,
			strerror(errno));
	/* A sub-second mtime that PAX must carry. */
	struct timespec ts[2] = { { 1600000000, 123456789 }, { 1600000000, 123456789 } };
	assert_int_equal(utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW), 0);
	free(p);
}

static size_t tree_items;
static int count_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	tree_items++;
	return 0;
}

static void read_file(const char *path, struct tt_buf *out)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		tt_buf_append(out, buf, n);
	assert_false(ferror(f));
	fclose(f);
}

/* Every member matches lstat() of the file it came from. */
static void compare_with_tree(const char *src, const struct tt_buf *tar, const struct collect *c,
			      bool pax, bool have_xattr)
{
	tree_items = 0;
	assert_int_equal(nftw(src, count_one, 16, FTW_PHYS), 0);
	assert_int_equal(c->n, tree_items);

	bool saw_xattr = false, saw_root = false;
	for (size_t i = 0; i < c->n; i++) {
		const struct rec *r = &c->recs[i];
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(c->recs[j].path, r->path);
		char *p = join(src, r->path);
		struct stat st;
		if (lstat(p, &st) != 0)
			fail_msg("member \"%s\": lstat %s: %s", r->path, p, strerror(errno));
		saw_root |= r->path[0] == '\0';
		assert_int_equal(r->mode, st.st_mode & 07777);
		assert_int_equal(r->uid, st.st_uid);
		assert_int_equal(r->gid, st.st_gid);
		assert_int_equal(r->mtime_sec, st.st_mtim.tv_sec);
		if (pax)
			assert_int_equal(r->mtime_nsec, st.st_mtim.tv_nsec);
		else
			assert_int_equal(r->mtime_nsec, 0);
		switch (r->type) {
		case CLIP_TAR_REG: {
			assert_true(S_ISREG(st.st_mode));
			struct tt_buf content = { 0 };
			read_file(p, &content);
			check_data(tar, r, content.data, content.len);
			tt_buf_free(&content);
			break;
		}
		case CLIP_TAR_HARDLINK: {
			assert_true(S_ISREG(st.st_mode));
			char *t = join(src, r->link);
			struct stat tst;
			assert_int_equal(lstat(t, &tst), 0);
			assert_int_equal(tst.st_ino, st.st_ino);
			assert_true(strcmp(r->link, r->path) != 0);
			free(t);
			break;
		}
		case CLIP_TAR_SYMLINK: {
			assert_true(S_ISLNK(st.st_mode));
			char target[CLIP_TAR_MAX_PATH + 1];
			ssize_t n = readlink(p, target, sizeof(target) - 1);
			assert_true(n >= 0);
			target[n] = '\0';
			assert_string_equal(r->link, target);
			break;
		}
		case CLIP_TAR_DIR: assert_true(S_ISDIR(st.st_mode)); break;
		case CLIP_TAR_FIFO: assert_true(S_ISFIFO(st.st_mode)); break;
		default: fail_msg("unexpected member type %d for %s", r->type, r->path);
		}
		/* "small" and "dir/hard" share the inode; whichever tar saw
		 * first is the regular member that carries the xattr. */
		if (pax && have_xattr && r->type == CLIP_TAR_REG &&
		    (strcmp(r->path, "small") == 0 || strcmp(r->path, "dir/hard") == 0)) {
			bool found = false;
			for (size_t j = 0; j < r->nxattrs; j++) {
				if (strcmp(r->xattrs[j].name, "user.x") != 0)
					continue;
				assert_int_equal(r->xattrs[j].len, 4);
				assert_memory_equal(r->xattrs[j].value, "v\0al", 4);
				found = true;
			}
			assert_true(found);
			saw_xattr = true;
		}
		free(p);
	}
	assert_true(saw_root);
	if (pax && have_xattr)
		assert_true(saw_xattr);
}

static void test_gnu_tar(void **state)
{
	if (system("tar --version >/dev/null 2>&1") != 0) {
		fprintf(stderr, "skipped: no tar on PATH\n");
		skip();
	}
	char *dir = tt_tmpdir();
	char *src = join(dir, "src");
	assert_int_equal(mkdir(src, 0755), 0);
	bool have_xattr;
	make_tree(src, &have_xattr);

	static const struct {
		const char *format, *file;
		bool pax;
	} formats[] = { { "pax --xattrs", "pax.tar", true }, { "gnu", "gnu.tar", false } };
	for (size_t i = 0; i < ARRAY_SIZE(formats); i++) {
		char *out = join(dir, formats[i].file);
		struct tt_buf cmd = { 0 };
		tt_buf_printf(&cmd, "tar --format=%s -C '%s' -cf '%s' .", formats[i].format, src,
			      out);
		tt_buf_append(&cmd, "", 1);
		assert_int_equal(system((char *)cmd.data), 0);
		tt_buf_free(&cmd);

		struct tt_buf tar = { 0 };
		read_file(out, &tar);
		struct collect c;
		parse_ok(&tar, &c);
		compare_with_tree(src, &tar, &c, formats[i].pax, have_xattr);
		collect_free(&c);
		tt_buf_free(&tar);
		free(out);
	}
	tt_rm_rf(dir);
	free(src);
	free(dir);
}

/* ---- testutil self-checks ------------------------------------------------ */

/* The writer's output is read back the same by GNU tar, so the tests above
 * do not only agree with themselves. */
static void test_writer_against_gnu_tar(void **state)
{
	if (system("tar --version >/dev/null 2>&1") != 0) {
		fprintf(stderr, "skipped: no tar on PATH\n");
		skip();
	}
	char longpath[400];
	memset(longpath, 'q', sizeof(longpath) - 1);
	longpath[sizeof(longpath) - 1] = '\0';
	longpath[120] = '/';
	struct tt_buf tar = { 0 };
	tt_tar_add(&tar, &(struct tt_member){ .path = "a",
					      .data = "abc",
					      .size = 3,
					      .mode = 0600,
					      .mtime_sec = 1000000000 });
	tt_tar_add(&tar, &(struct tt_member){ .path = longpath,
					      .mode = 0644,
					      .uid = 4000000000u,
					      .mtime_sec = 5,
					      .mtime_nsec = 5 });
	tt_tar_add(&tar, &(struct tt_member){
				 .type = '2', .path = "s", .linkpath = longpath, .mode = 0777 });
	unsigned char b[TT_TAR_BLOCK];
	tt_tar_header_init(b, '0', "b256", 0);
	tt_tar_set_base256(b + TT_OFF_SIZE, TT_LEN_SIZE, 2);
	tt_tar_set_base256(b + TT_OFF_UID, TT_LEN_UID, 3000000);
	tt_tar_set_base256(b + TT_OFF_MTIME, TT_LEN_MTIME, -86400);
	tt_tar_set_checksum(b);
	tt_tar_raw(&tar, b, "hi", 2);
	tt_tar_finish(&tar);
	char *dir = tt_tmpdir();
	char *file = join(dir, "w.tar");
	tt_write_file(file, tar.data, tar.len);
	struct tt_buf cmd = { 0 };
	tt_buf_printf(&cmd, "tar --numeric-owner -tvf '%s'", file);
	tt_buf_append(&cmd, "", 1);
	FILE *f = popen((char *)cmd.data, "r");
	assert_non_null(f);
	struct tt_buf listing = { 0 };
	char line[1024];
	while (fgets(line, sizeof(line), f) != NULL)
		tt_buf_append(&listing, line, strlen(line));
	assert_int_equal(pclose(f), 0);
	tt_buf_append(&listing, "", 1);
	const char *l = (const char *)listing.data;
	assert_non_null(strstr(l, "-rw------- 0/0               3 2001-09-09 01:46 a\n"));
	struct tt_buf want = { 0 };
	tt_buf_printf(&want, " 4000000000/0 ");
	tt_buf_append(&want, "", 1);
	assert_non_null(strstr(l, (char *)want.data));
	tt_buf_free(&want);
	tt_buf_printf(&want, " %s\n", longpath);
	tt_buf_append(&want, "", 1);
	assert_non_null(strstr(l, (char *)want.data));
	tt_buf_free(&want);
	tt_buf_printf(&want, " s -> %s\n", longpath);
	tt_buf_append(&want, "", 1);
	assert_non_null(strstr(l, (char *)want.data));
	tt_buf_free(&want);
	assert_non_null(strstr(l, " 3000000/0 "));
	assert_non_null(strstr(l, " 2 1969-12-31 00:00 b256\n"));
	tt_buf_free(&listing);
	tt_buf_free(&cmd);
	tt_buf_free(&tar);
	tt_rm_rf(dir);
	free(file);
	free(dir);
}

/* tt_gzip appends one gzip member that zlib inflates back to the input. */
static void test_gzip_helper(void **state)
{
	static unsigned char in[200000];
	tt_fill_random(in, sizeof(in) / 2, 7);
	for (size_t i = sizeof(in) / 2; i < sizeof(in); i++)
		in[i] = "compressible text "[i % 18];
	static const int levels[] = { -1, 0, 1, 9 };
	size_t sizes[ARRAY_SIZE(levels)];
	for (size_t l = 0; l < ARRAY_SIZE(levels); l++) {
		struct tt_buf gz = { 0 };
		tt_buf_append(&gz, "prefix", 6);
		tt_gzip(in, sizeof(in), levels[l], &gz);
		assert_memory_equal(gz.data, "prefix\x1f\x8b\x08", 9);
		sizes[l] = gz.len - 6;

		static unsigned char out[sizeof(in) + 1];
		z_stream zs;
		memset(&zs, 0, sizeof(zs));
		assert_int_equal(inflateInit2(&zs, 16 + 15), Z_OK);
		zs.next_in = gz.data + 6;
		zs.avail_in = (uInt)(gz.len - 6);
		zs.next_out = out;
		zs.avail_out = sizeof(out);
		assert_int_equal(inflate(&zs, Z_FINISH), Z_STREAM_END);
		assert_int_equal(zs.avail_in, 0);
		assert_int_equal(zs.total_out, sizeof(in));
		assert_memory_equal(out, in, sizeof(in));
		inflateEnd(&zs);
		tt_buf_free(&gz);
	}
	/* Level 0 stores, level 9 compresses the text half. */
	assert_true(sizes[1] > sizeof(in));
	assert_true(sizes[3] < sizeof(in) * 6 / 10);
}

int main(void)
{
	/* GNU tar prints local times in listings; pin them. */
	setenv("TZ", "UTC", 1);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_member_types),
		cmocka_unit_test(test_path_normalisation),
		cmocka_unit_test(test_ustar_prefix_and_old_gnu),
		cmocka_unit_test(test_pax_member),
		cmocka_unit_test(test_pax_global),
		cmocka_unit_test(test_gnu_long_names),
		cmocka_unit_test(test_base256_and_octal_forms),
		cmocka_unit_test(test_data_after_special_members),
		cmocka_unit_test(test_end_of_archive),
		cmocka_unit_test(test_callback_error),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_bad_checksum),
		cmocka_unit_test(test_bad_numbers),
		cmocka_unit_test(test_bad_pax),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_bad_paths_and_types),
		cmocka_unit_test(test_gnu_tar),
		cmocka_unit_test(test_writer_against_gnu_tar),
		cmocka_unit_test(test_gzip_helper),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
