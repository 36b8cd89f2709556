/* The .clip archive: write/open round trips, lookups, and refusal of every
 * kind of damaged file (truncation, each byte flipped, bad magic/version,
 * structurally invalid content behind a valid checksum). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <isa-l/crc64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clip/archive.h"
#include "clip/tar.h"
#include "clip/tree.h"
#include "format.h"
#include "testutil.h"
#include "util.h"

static int collect(void *opaque, const struct clip_tar_entry *e, struct clip_err *err)
{
	return clip_tree_layer_add(opaque, e, err);
}

/* A small two-layer tree with every kind of node. */
static struct clip_tree *sample_tree(void)
{
	struct tt_buf t0 = { 0 }, t1 = { 0 };
	tt_tar_add(&t0, &(struct tt_member){ .type = '5',
					     .path = "etc",
					     .mode = 0755,
					     .mtime_sec = 1700000000,
					     .mtime_nsec = 123 });
	tt_tar_add(&t0, &(struct tt_member){ .type = '0',
					     .path = "etc/hosts",
					     .mode = 0644,
					     .data = "127.0.0.1 localhost\n",
					     .size = 20 });
	tt_tar_add(&t0, &(struct tt_member){
				.type = '1', .path = "etc/hosts2", .linkpath = "etc/hosts" });
	tt_tar_add(&t0, &(struct tt_member){
				.type = '2', .path = "bin", .linkpath = "usr/bin", .mode = 0777 });
	tt_tar_add(&t0, &(struct tt_member){ .type = '3',
					     .path = "dev/null",
					     .mode = 0666,
					     .devmajor = 1,
					     .devminor = 3 });
	tt_tar_add(&t0, &(struct tt_member){ .type = '6', .path = "run/fifo", .mode = 0600 });
	struct tt_xattr xs[] = { { "user.k", "v\0w", 3 }, { "security.capability", "\1\2", 2 } };
	tt_tar_add(&t0, &(struct tt_member){ .type = '0',
					     .path = "usr/bin/ping",
					     .mode = 04755,
					     .uid = 1234,
					     .gid = 5678,
					     .data = "ELF",
					     .size = 3,
					     .xattrs = xs,
					     .nxattrs = 2 });
	tt_tar_finish(&t0);
	tt_tar_add(&t1, &(struct tt_member){ .type = '0',
					     .path = "usr/bin/new",
					     .mode = 0755,
					     .data = "#!/bin/sh\n",
					     .size = 10 });
	tt_tar_finish(&t1);
	struct clip_tree *tree = clip_tree_new();
	struct tt_buf *tars[] = { &t0, &t1 };
	struct clip_err err = { 0 };
	for (uint32_t i = 0; i < 2; i++) {
		struct clip_tree_layer *layer = clip_tree_layer_new();
		struct clip_tar_parser *p = clip_tar_parser_new(collect, layer);
		assert_int_equal(clip_tar_parser_feed(p, tars[i]->data, tars[i]->len, &err), 0);
		assert_int_equal(clip_tar_parser_finish(p, &err), 0);
		clip_tar_parser_free(p);
		assert_int_equal(clip_tree_apply(tree, i, layer, &err), 0);
		clip_tree_layer_free(layer);
	}
	assert_int_equal(clip_tree_finish(tree, &err), 0);
	tt_buf_free(&t0);
	tt_buf_free(&t1);
	return tree;
}

static char *tmpdir;

static int setup(void **state)
{
	(void)state;
	tmpdir = tt_tmpdir();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	tt_rm_rf(tmpdir);
	free(tmpdir);
	return 0;
}

/* Write the sample archive (one gzip layer with 2 checkpoints, one plain)
 * to `path`. */
static void write_sample(const char *path)
{
	struct clip_tree *tree = sample_tree();
	static const unsigned char window[] = "a window of uncompressed bytes";
	struct clip_gz_point points[2] = {
		{ .in = 10, .out = 0, .bits = 0, .window_codec = CLIP_GZ_WINDOW_RAW },
		{ .in = 400,
		  .out = 5000,
		  .bits = 3,
		  .window_codec = CLIP_GZ_WINDOW_RAW,
		  .window_len = sizeof(window),
		  .window_zlen = sizeof(window),
		  .window_z = window },
	};
	memset(points[1].window_sha256, 0xab, 32);
	/* 1000 compressed bytes in 4 KiB pieces: one digest. */
	static unsigned char piece_md[32];
	memset(piece_md, 0xcd, 32);
	struct clip_gz_index gz = { .csize = 1000,
				    .usize = 10240,
				    .count = 2,
				    .points = points,
				    .piece_bytes = 4096,
				    .npieces = 1,
				    .piece_sha256 = piece_md };
	/* 4 KiB chunks: three for layer 0's 10240 bytes, one for layer 1's 2048. */
	unsigned char chunks[4][32];
	for (int i = 0; i < 4; i++)
		memset(chunks[i], 0x10 + i, 32);
	struct clip_archive_layer_info layers[2] = {
		{ "sha256:"
		  "1111111111111111111111111111111111111111111111111111111111111111",
		  "sha256:"
		  "2222222222222222222222222222222222222222222222222222222222222222",
		  "application/vnd.oci.image.layer.v1.tar+gzip", CLIP_COMPRESSION_GZIP, 1000, 10240,
		  &gz, chunks, 3 },
		{ "sha256:"
		  "3333333333333333333333333333333333333333333333333333333333333333",
		  "sha256:"
		  "3333333333333333333333333333333333333333333333333333333333333333",
		  "application/vnd.oci.image.layer.v1.tar", CLIP_COMPRESSION_NONE, 2048, 2048, NULL,
		  chunks + 3, 1 },
	};
	struct clip_archive_write_options o = {
		.tree = tree,
		.layers = layers,
		.nlayers = 2,
		.config_json = "{\"Cmd\":[\"/bin/sh\"]}",
		.source_json = "{\"type\":\"test\"}",
		.span_bytes = 2 << 20,
		.large_file_threshold = 512 << 10,
		.chunk_bytes = 4096,
	};
	struct clip_err err = { 0 };
	assert_int_equal(clip_archive_write(path, &o, &err), 0);
	clip_tree_free(tree);
}

static char *path_in_tmp(const char *name)
{
	char *p = malloc(strlen(tmpdir) + strlen(name) + 2);
	sprintf(p, "%s/%s", tmpdir, name);
	return p;
}

static void test_round_trip(void **state)
{
	(void)state;
	cleanup_free char *path = path_in_tmp("a.clip");
	write_sample(path);
	struct clip_archive *a;
	struct clip_err err = { 0 };
	assert_int_equal(clip_archive_open(path, &a, &err), 0);

	struct clip_archive_stats st;
	clip_archive_stats(a, &st);
	assert_int_equal(st.layers, 2);
	assert_int_equal(st.checkpoints, 2);
	assert_int_equal(st.span_bytes, 2 << 20);
	assert_int_equal(st.version, 3);
	assert_int_equal(st.piece_bytes, 4096);
	assert_int_equal(st.chunk_bytes, 4096);
	for (uint32_t l = 0; l < 2; l++) {
		struct clip_archive_layer layer;
		assert_int_equal(clip_archive_layer(a, l, &layer), 0);
		assert_int_equal(layer.nchunks, l == 0 ? 3 : 1);
		for (uint64_t c = 0; c < layer.nchunks; c++) {
			const unsigned char *h = clip_archive_chunk_hash(a, l, c);
			assert_non_null(h);
			assert_int_equal(h[0], 0x10 + (l == 0 ? c : 3));
			assert_int_equal(h[31], 0x10 + (l == 0 ? c : 3));
		}
		assert_null(clip_archive_chunk_hash(a, l, layer.nchunks));
	}
	assert_null(clip_archive_chunk_hash(a, 2, 0));
	assert_int_equal(st.regular_bytes, 20 + 3 + 10); /* the hard link counted once */
	assert_string_equal(clip_archive_config_json(a), "{\"Cmd\":[\"/bin/sh\"]}");
	assert_string_equal(clip_archive_source_json(a), "{\"type\":\"test\"}");

	uint32_t ino, ino2;
	struct clip_archive_inode in;
	assert_int_equal(clip_archive_resolve(a, "/etc/hosts", &ino, &err), 0);
	assert_int_equal(clip_archive_resolve(a, "etc//hosts2", &ino2, &err), 0);
	assert_int_equal(ino, ino2);
	clip_archive_inode(a, ino, &in);
	assert_true(S_ISREG(in.mode));
	assert_int_equal(in.size, 20);
	assert_int_equal(in.nlink, 2);
	assert_int_equal(in.layer, 0);

	assert_int_equal(clip_archive_resolve(a, "/usr/bin/ping", &ino, &err), 0);
	clip_archive_inode(a, ino, &in);
	assert_int_equal(in.mode & 07777, 04755);
	assert_int_equal(in.uid, 1234);
	assert_int_equal(in.gid, 5678);
	assert_int_equal(in.nxattrs, 2);
	const char *name;
	const unsigned char *value;
	size_t len;
	assert_int_equal(clip_archive_xattr(a, ino, 0, &name, &value, &len), 0);
	assert_string_equal(name, "security.capability");
	assert_int_equal(len, 2);
	assert_int_equal(clip_archive_xattr(a, ino, 1, &name, &value, &len), 0);
	assert_string_equal(name, "user.k");
	assert_int_equal(len, 3);
	assert_memory_equal(value, "v\0w", 3);
	assert_int_equal(clip_archive_xattr(a, ino, 2, &name, &value, &len), -ENOENT);

	assert_int_equal(clip_archive_resolve(a, "/usr/bin/new", &ino, &err), 0);
	clip_archive_inode(a, ino, &in);
	assert_int_equal(in.layer, 1);

	assert_int_equal(clip_archive_resolve(a, "/bin", &ino, &err), 0);
	clip_archive_inode(a, ino, &in);
	assert_true(S_ISLNK(in.mode));
	assert_string_equal(in.symlink, "usr/bin");
	/* Symlinks are not followed. */
	assert_int_equal(clip_archive_resolve(a, "/bin/ping", &ino, &err), -ENOTDIR);
	assert_int_equal(clip_archive_resolve(a, "/nope", &ino, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "/nope"));

	assert_int_equal(clip_archive_resolve(a, "/dev/null", &ino, &err), 0);
	clip_archive_inode(a, ino, &in);
	assert_true(S_ISCHR(in.mode));
	assert_int_equal(in.rdev_major, 1);
	assert_int_equal(in.rdev_minor, 3);

	/* Root: sorted entries, "..", nlink. */
	clip_archive_inode(a, CLIP_ARCHIVE_ROOT, &in);
	assert_int_equal(in.nentries, 5); /* bin dev etc run usr */
	const char *prev = "";
	for (uint32_t i = 0; i < in.nentries; i++) {
		uint32_t child;
		assert_int_equal(clip_archive_dirent(a, 0, i, &name, &len, &child), 0);
		assert_true(strcmp(prev, name) < 0);
		prev = name;
	}
	assert_int_equal(in.nlink, 2 + 4);
	assert_int_equal(clip_archive_resolve(a, "/usr/bin/..", &ino, &err), 0);
	assert_int_equal(clip_archive_resolve(a, "/usr", &ino2, &err), 0);
	assert_int_equal(ino, ino2);

	struct clip_archive_layer l;
	assert_int_equal(clip_archive_layer(a, 0, &l), 0);
	assert_int_equal(l.compression, CLIP_COMPRESSION_GZIP);
	assert_int_equal(l.ncheckpoints, 2);
	struct clip_gz_index *gz;
	assert_int_equal(clip_archive_layer_gzindex(a, 0, &gz, &err), 0);
	assert_int_equal(gz->count, 2);
	assert_int_equal(gz->points[1].in, 400);
	assert_int_equal(gz->points[1].out, 5000);
	assert_int_equal(gz->points[1].bits, 3);
	assert_memory_equal(gz->points[1].window_z, "a window", 8);
	assert_int_equal(gz->points[1].window_sha256[31], 0xab);
	assert_int_equal(gz->piece_bytes, 4096);
	assert_int_equal(gz->npieces, 1);
	assert_int_equal(gz->piece_sha256[31], 0xcd);
	assert_int_equal(l.npieces, 1);
	clip_gz_index_free(gz);
	assert_int_equal(clip_archive_layer(a, 1, &l), 0);
	assert_int_equal(l.ncheckpoints, 0);
	assert_int_equal(l.npieces, 0);
	clip_archive_close(a);
}

static unsigned char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	unsigned char *d = malloc(*len);
	assert_int_equal(fread(d, 1, *len, f), *len);
	fclose(f);
	return d;
}

static int open_bytes(const char *path, const unsigned char *d, size_t len, struct clip_err *err)
{
	tt_write_file(path, d, len);
	struct clip_archive *a = NULL;
	int rc = clip_archive_open(path, &a, err);
	clip_archive_close(a);
	return rc;
}

/* Open the bytes and read every record through the accessors: 0, or the
 * first error (from open, or -EBADMSG from a record). */
static int walk_bytes(const char *path, const unsigned char *d, size_t len, struct clip_err *err)
{
	tt_write_file(path, d, len);
	struct clip_archive *a = NULL;
	int rc = clip_archive_open(path, &a, err);
	if (rc < 0)
		return rc;
	struct clip_archive_stats st;
	clip_archive_stats(a, &st);
	for (uint32_t ino = 0; ino < st.inodes && rc == 0; ino++) {
		struct clip_archive_inode in;
		rc = clip_archive_inode(a, ino, &in);
		for (uint32_t i = 0; rc == 0 && S_ISDIR(in.mode) && i < in.nentries; i++) {
			const char *name;
			size_t nlen;
			uint32_t child;
			rc = clip_archive_dirent(a, ino, i, &name, &nlen, &child);
			uint32_t found;
			if (rc == 0)
				rc = clip_archive_lookup(a, ino, name, nlen, &found);
			if (rc == -ENOENT)
				rc = 0; /* unsorted: a lookup may miss, harmlessly */
		}
		for (uint32_t i = 0; rc == 0 && i < in.nxattrs; i++) {
			const char *name;
			const unsigned char *value;
			size_t vlen;
			rc = clip_archive_xattr(a, ino, i, &name, &value, &vlen);
		}
	}
	clip_archive_close(a);
	return rc;
}

/* Where section `id` of archive bytes `d` starts (the test fails if absent). */
static uint64_t section_offset(const unsigned char *d, uint32_t id)
{
	uint64_t table = clip_get_le64(d + HDR_SECTION_TABLE);
	for (uint32_t i = 0; i < clip_get_le32(d + HDR_SECTION_COUNT); i++) {
		const unsigned char *e = d + table + i * SEC_ENTRY_SIZE;
		if (clip_get_le32(e + SEC_ID) == id)
			return clip_get_le64(e + SEC_OFFSET);
	}
	fail_msg("no section %u", id);
	return 0;
}

static void reseal(unsigned char *d, size_t len)
{
	clip_put_le64(d + HDR_CHECKSUM, 0);
	clip_put_le64(d + HDR_CHECKSUM, crc64_ecma_refl(0, d, len));
}

static void test_damaged_archives(void **state)
{
	(void)state;
	cleanup_free char *good = path_in_tmp("good.clip");
	cleanup_free char *bad = path_in_tmp("bad.clip");
	write_sample(good);
	size_t len;
	cleanup_free unsigned char *d = read_all(good, &len);
	cleanup_free unsigned char *m = malloc(len);
	struct clip_err err = { 0 };

	assert_int_equal(open_bytes(bad, d, 0, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "too short"));
	assert_int_equal(open_bytes(bad, d, len - 1, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "truncated"));

	/* Every single byte flipped: refused, never a crash. */
	for (size_t i = 0; i < len; i++) {
		memcpy(m, d, len);
		m[i] ^= 0x5a;
		int rc = open_bytes(bad, m, len, &err);
		if (rc == 0)
			fail_msg("flip at byte %zu accepted", i);
		assert_true(strstr(err.msg, bad) != NULL);
	}

	memcpy(m, d, len);
	memcpy(m, "NOTCLIP!", 8);
	assert_int_equal(open_bytes(bad, m, len, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "bad magic"));

	memcpy(m, d, len);
	clip_put_le32(m + HDR_VERSION, 99);
	reseal(m, len);
	assert_int_equal(open_bytes(bad, m, len, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, "version 99"));

	/* Valid checksum, invalid structure: found by validation at open, or
	 * (inodes, entries, xattrs) by the accessor that reads the record.
	 * Locate the sections through the table. */
	uint64_t dirents = section_offset(d, SECTION_DIRENTS),
		 inodes = section_offset(d, SECTION_INODES),
		 cps = section_offset(d, SECTION_CHECKPOINTS);
	assert_int_equal(walk_bytes(bad, d, len, &err), 0);
	/* The root's entries, in name order: bin (a symlink), dev, etc, run,
	 * usr; inodes are numbered breadth-first in that order. */
	struct clip_archive *ga;
	assert_int_equal(clip_archive_open(good, &ga, &err), 0);
	uint32_t bin, dev, etc;
	assert_int_equal(clip_archive_lookup(ga, 0, "bin", 3, &bin), 0);
	assert_int_equal(clip_archive_lookup(ga, 0, "dev", 3, &dev), 0);
	assert_int_equal(clip_archive_lookup(ga, 0, "etc", 3, &etc), 0);
	clip_archive_close(ga);
	assert_true(bin < dev && dev < etc);

	/* An entry to an inode out of range. */
	memcpy(m, d, len);
	clip_put_le32(m + dirents + DIRENT_INO, 100000);
	reseal(m, len);
	assert_int_equal(open_bytes(bad, m, len, &err), 0);
	assert_int_equal(walk_bytes(bad, m, len, &err), -EBADMSG);

	/* A directory entry pointing back at the root: a cycle. */
	memcpy(m, d, len);
	clip_put_le32(m + dirents + DIRENT_INO, 0);
	reseal(m, len);
	assert_int_equal(walk_bytes(bad, m, len, &err), -EBADMSG);

	/* A directory whose parent field names another directory (a walk
	 * through its entries could come back), and an entry to a directory
	 * numbered before its own. */
	memcpy(m, d, len);
	clip_put_le32(m + inodes + (size_t)etc * INO_SIZEOF + INO_PARENT, dev);
	reseal(m, len);
	assert_int_equal(walk_bytes(bad, m, len, &err), -EBADMSG);
	memcpy(m, d, len);
	clip_put_le32(m + inodes + (size_t)etc * INO_SIZEOF + INO_PARENT, etc);
	reseal(m, len);
	assert_int_equal(walk_bytes(bad, m, len, &err), -EBADMSG);

	/* An entry whose name holds a '/': bin's own target "usr/bin". */
	memcpy(m, d, len);
	const unsigned char *bin_rec = d + inodes + (size_t)bin * INO_SIZEOF;
	clip_put_le32(m + dirents + DIRENT_NAME_OFF, (uint32_t)clip_get_le64(bin_rec + INO_DATA));
	clip_put_le32(m + dirents + DIRENT_NAME_LEN, clip_get_le32(bin_rec + INO_AUX));
	reseal(m, len);
	assert_int_equal(walk_bytes(bad, m, len, &err), -EBADMSG);

	/* A symlink target past the strings. */
	memcpy(m, d, len);
	clip_put_le32(m + inodes + (size_t)bin * INO_SIZEOF + INO_AUX, 1u << 30);
	reseal(m, len);
	assert_int_equal(walk_bytes(bad, m, len, &err), -EBADMSG);
	{
		struct clip_archive *ba;
		uint32_t ino;
		assert_int_equal(clip_archive_open(bad, &ba, &err), 0);
		assert_int_equal(clip_archive_resolve(ba, "/bin", &ino, &err), 0);
		struct clip_archive_inode in;
		assert_int_equal(clip_archive_inode(ba, ino, &in), -EBADMSG);
		assert_int_equal(clip_archive_resolve(ba, "/bin/..", &ino, &err), -EBADMSG);
		assert_non_null(strstr(err.msg, "is invalid"));
		clip_archive_close(ba);
	}

	/* Root's entries out of order: read safely (lookups may miss). */
	memcpy(m, d, len);
	unsigned char tmp[DIRENT_SIZEOF];
	memcpy(tmp, m + dirents, DIRENT_SIZEOF);
	memcpy(m + dirents, m + dirents + DIRENT_SIZEOF, DIRENT_SIZEOF);
	memcpy(m + dirents + DIRENT_SIZEOF, tmp, DIRENT_SIZEOF);
	reseal(m, len);
	assert_int_equal(walk_bytes(bad, m, len, &err), 0);

	/* Root not a directory. */
	memcpy(m, d, len);
	clip_put_le32(m + inodes + INO_MODE, S_IFREG | 0644);
	reseal(m, len);
	assert_int_equal(open_bytes(bad, m, len, &err), -EBADMSG);

	/* A checkpoint whose window lies outside the windows section. */
	memcpy(m, d, len);
	clip_put_le64(m + cps + CP_SIZEOF + CP_WINDOW_OFF, 1u << 30);
	reseal(m, len);
	assert_int_equal(open_bytes(bad, m, len, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "invalid checkpoint"));

	/* Checkpoints without the digests of their pieces, or too many. */
	uint64_t layers_off = section_offset(d, SECTION_LAYERS),
		 meta = section_offset(d, SECTION_META);
	memcpy(m, d, len);
	clip_put_le32(m + layers_off + LAYER_PIECE_COUNT, 0);
	reseal(m, len);
	assert_int_equal(open_bytes(bad, m, len, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "piece digests out of range"));
	memcpy(m, d, len);
	clip_put_le32(m + layers_off + LAYER_PIECE_COUNT, 2);
	reseal(m, len);
	assert_int_equal(open_bytes(bad, m, len, &err), -EBADMSG);
	/* A piece size outside 4 KiB..1 GiB. */
	memcpy(m, d, len);
	clip_put_le64(m + meta + META_PIECE_BYTES, 100);
	reseal(m, len);
	assert_int_equal(open_bytes(bad, m, len, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "invalid piece size"));

	/* Still fine after all that. */
	assert_int_equal(open_bytes(bad, d, len, &err), 0);
}

static void test_atomic_write(void **state)
{
	(void)state;
	cleanup_free char *path = path_in_tmp("keep.clip");
	tt_write_file(path, "old", 3);
	struct clip_tree *tree = sample_tree();
	struct clip_archive_write_options o = { .tree = tree,
						.config_json = "{}",
						.source_json = "{}" };
	struct clip_err err = { 0 };
	/* Unwritable destination directory: error, nothing left behind. */
	cleanup_free char *missing = path_in_tmp("no/such/dir/x.clip");
	assert_true(clip_archive_write(missing, &o, &err) < 0);
	assert_non_null(strstr(err.msg, "no/such/dir/x.clip"));
	clip_tree_free(tree);
	/* A successful write replaces the old file whole. */
	write_sample(path);
	struct clip_archive *a;
	assert_int_equal(clip_archive_open(path, &a, &err), 0);
	clip_archive_close(a);
	/* No temporary files remain. */
	char cmd[4096];
	snprintf(cmd, sizeof(cmd), "ls %s | grep -q tmp", tmpdir);
	assert_int_not_equal(system(cmd), 0);
}

static void test_not_found(void **state)
{
	(void)state;
	struct clip_archive *a;
	struct clip_err err = { 0 };
	assert_int_equal(clip_archive_open("/nonexistent/x.clip", &a, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "/nonexistent/x.clip"));
	assert_int_equal(clip_archive_open(tmpdir, &a, &err), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_damaged_archives),
		cmocka_unit_test(test_atomic_write),
		cmocka_unit_test(test_not_found),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
