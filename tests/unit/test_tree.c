/* OCI layer merge semantics of the tree builder. Layers are generated as real
 * tar streams (testutil's writer) and parsed with the real tar parser, so each
 * case exercises what `clip index` does with a layer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clip/tar.h"
#include "clip/tree.h"
#include "testutil.h"

static int collect(void *opaque, const struct clip_tar_entry *e, struct clip_err *err)
{
	return clip_tree_layer_add(opaque, e, err);
}

/* Parse a tar stream into a new layer list; fails the test on a parse error. */
static struct clip_tree_layer *layer_of(const struct tt_buf *tar)
{
	struct clip_tree_layer *layer = clip_tree_layer_new();
	assert_non_null(layer);
	struct clip_tar_parser *p = clip_tar_parser_new(collect, layer);
	struct clip_err err = { 0 };
	int rc = clip_tar_parser_feed(p, tar->data, tar->len, &err);
	if (rc == 0)
		rc = clip_tar_parser_finish(p, &err);
	if (rc < 0)
		fail_msg("tar parse: %s", err.msg);
	clip_tar_parser_free(p);
	return layer;
}

/* Shorthands for members. */
static void add_dir(struct tt_buf *t, const char *path, uint32_t mode)
{
	tt_tar_add(t, &(struct tt_member){ .type = '5', .path = path, .mode = mode });
}

static void add_file(struct tt_buf *t, const char *path, const char *content)
{
	tt_tar_add(t, &(struct tt_member){ .type = '0',
					   .path = path,
					   .mode = 0644,
					   .data = content,
					   .size = strlen(content) });
}

static void add_link(struct tt_buf *t, char type, const char *path, const char *target)
{
	tt_tar_add(t, &(struct tt_member){
			      .type = type, .path = path, .linkpath = target, .mode = 0777 });
}

/* Apply each tar (in order) to a new tree; returns the first error code. */
static int build(struct clip_tree **out, struct clip_err *err, int n, ...)
{
	struct clip_tree *tree = clip_tree_new();
	assert_non_null(tree);
	va_list ap;
	va_start(ap, n);
	int rc = 0;
	for (int i = 0; i < n && rc == 0; i++) {
		struct tt_buf *tar = va_arg(ap, struct tt_buf *);
		struct clip_tree_layer *layer = layer_of(tar);
		rc = clip_tree_apply(tree, (uint32_t)i, layer, err);
		clip_tree_layer_free(layer);
	}
	va_end(ap);
	if (rc == 0)
		rc = clip_tree_finish(tree, err);
	*out = tree;
	return rc;
}

/* Find a path in a finished tree by walking the sorted children arrays. */
static const struct clip_tree_node *find(const struct clip_tree *tree, const char *path)
{
	const struct clip_tree_node *cur = clip_tree_root(tree);
	char *copy = strdup(path), *save = NULL;
	for (char *c = strtok_r(copy, "/", &save); c && cur; c = strtok_r(NULL, "/", &save)) {
		const struct clip_tree_node *next = NULL;
		for (size_t i = 0; i < cur->nchildren; i++)
			if (strcmp(cur->children[i]->name, c) == 0)
				next = cur->children[i];
		cur = next;
	}
	free(copy);
	return cur;
}

static void test_basic_and_implicit_parents(void **state)
{
	(void)state;
	struct tt_buf l0 = { 0 };
	add_dir(&l0, "etc/", 0755);
	add_file(&l0, "etc/hostname", "box\n");
	add_file(&l0, "usr/lib/deep/file", "x"); /* parents never declared */
	tt_tar_finish(&l0);
	struct clip_tree *tree;
	struct clip_err err = { 0 };
	assert_int_equal(build(&tree, &err, 1, &l0), 0);
	const struct clip_tree_node *n = find(tree, "usr/lib/deep");
	assert_non_null(n);
	assert_true(S_ISDIR(n->inode->mode));
	assert_int_equal(n->inode->mode & 07777, 0755);
	n = find(tree, "etc/hostname");
	assert_non_null(n);
	assert_int_equal(n->inode->size, 4);
	assert_int_equal(n->inode->layer, 0);
	/* The data offset points at the member's bytes in the tar. */
	assert_memory_equal(l0.data + n->inode->data_offset, "box\n", 4);
	/* Root has etc and usr: nlink 2 + 2 subdirectories. */
	assert_int_equal(clip_tree_root(tree)->inode->nlink, 4);
	assert_int_equal(clip_tree_root(tree)->nchildren, 2);
	assert_string_equal(clip_tree_root(tree)->children[0]->name, "etc");
	clip_tree_free(tree);
	tt_buf_free(&l0);
}

static void test_replace_across_layers(void **state)
{
	(void)state;
	struct tt_buf l0 = { 0 }, l1 = { 0 };
	add_file(&l0, "a", "old");
	add_dir(&l0, "d", 0700);
	add_file(&l0, "d/keep", "k");
	add_dir(&l0, "x", 0755);
	add_file(&l0, "x/child", "c");
	add_file(&l0, "f", "file");
	tt_tar_finish(&l0);
	add_file(&l1, "a", "newer");
	add_dir(&l1, "d", 0750);	  /* dir over dir: metadata changes, children stay */
	add_file(&l1, "x", "now a file"); /* file replaces a directory and its subtree */
	add_dir(&l1, "f", 0755);	  /* directory replaces a file */
	add_file(&l1, "f/inner", "i");
	tt_tar_finish(&l1);
	struct clip_tree *tree;
	struct clip_err err = { 0 };
	assert_int_equal(build(&tree, &err, 2, &l0, &l1), 0);
	const struct clip_tree_node *a = find(tree, "a");
	assert_int_equal(a->inode->layer, 1);
	assert_int_equal(a->inode->size, 5);
	assert_memory_equal(l1.data + a->inode->data_offset, "newer", 5);
	const struct clip_tree_node *d = find(tree, "d");
	assert_int_equal(d->inode->mode & 07777, 0750);
	assert_non_null(find(tree, "d/keep"));
	assert_true(S_ISREG(find(tree, "x")->inode->mode));
	assert_null(find(tree, "x/child"));
	assert_true(S_ISDIR(find(tree, "f")->inode->mode));
	assert_non_null(find(tree, "f/inner"));
	clip_tree_free(tree);
	tt_buf_free(&l0);
	tt_buf_free(&l1);
}

static void test_whiteouts(void **state)
{
	(void)state;
	struct tt_buf l0 = { 0 }, l1 = { 0 };
	add_file(&l0, "etc/passwd", "root");
	add_file(&l0, "etc/shadow", "secret");
	add_file(&l0, "usr/share/doc/a/README", "r");
	add_file(&l0, "usr/share/doc/b/README", "r");
	tt_tar_finish(&l0);
	add_file(&l1, "etc/.wh.shadow", "");
	add_file(&l1, "usr/share/.wh.doc", ""); /* whole subtree */
	add_file(&l1, "nothere/.wh.ghost", ""); /* whiteout of nothing: ignored */
	add_file(&l1, ".wh.missing", "");
	/* Same layer: a whiteout does not hide what this layer adds. */
	add_file(&l1, "etc/new", "n");
	add_file(&l1, "etc/.wh.new", "");
	add_file(&l1, "etc/.wh..wh.plnk", ""); /* aufs metadata, not a path */
	tt_tar_finish(&l1);
	struct clip_tree *tree;
	struct clip_err err = { 0 };
	assert_int_equal(build(&tree, &err, 2, &l0, &l1), 0);
	assert_non_null(find(tree, "etc/passwd"));
	assert_null(find(tree, "etc/shadow"));
	assert_null(find(tree, "usr/share/doc"));
	assert_non_null(find(tree, "usr/share"));
	assert_null(find(tree, "nothere")); /* whiteouts create nothing */
	assert_non_null(find(tree, "etc/new"));
	assert_null(find(tree, "etc/.wh..wh.plnk"));
	assert_null(find(tree, "etc/.wh.new"));
	clip_tree_free(tree);
	tt_buf_free(&l0);
	tt_buf_free(&l1);
}

static void test_opaque_directory(void **state)
{
	(void)state;
	struct tt_buf l0 = { 0 }, l1 = { 0 }, l2 = { 0 };
	add_file(&l0, "app/a", "a");
	add_file(&l0, "app/sub/lower", "l");
	add_file(&l0, "app/sub/also", "l");
	add_file(&l0, "other/x", "x");
	tt_tar_finish(&l0);
	add_file(&l1, "app/early", "e"); /* before the marker: same layer, kept */
	add_dir(&l1, "app", 0711);
	add_file(&l1, "app/.wh..wh..opq", "");
	add_file(&l1, "app/sub/upper", "u"); /* sub only implicitly declared */
	tt_tar_finish(&l1);
	add_file(&l2, "app/late", "z"); /* a later layer adds on top of the opaque dir */
	tt_tar_finish(&l2);
	struct clip_tree *tree;
	struct clip_err err = { 0 };
	assert_int_equal(build(&tree, &err, 3, &l0, &l1, &l2), 0);
	assert_null(find(tree, "app/a"));
	assert_null(find(tree, "app/sub/lower"));
	assert_null(find(tree, "app/sub/also"));
	assert_non_null(find(tree, "app/sub/upper"));
	assert_non_null(find(tree, "app/early"));
	assert_non_null(find(tree, "app/late"));
	assert_null(find(tree, "app/.wh..wh..opq"));
	assert_non_null(find(tree, "other/x"));
	assert_int_equal(find(tree, "app")->inode->mode & 07777, 0711);
	clip_tree_free(tree);
	tt_buf_free(&l0);
	tt_buf_free(&l1);
	tt_buf_free(&l2);
}

static void test_hard_links(void **state)
{
	(void)state;
	struct tt_buf l0 = { 0 }, l1 = { 0 };
	add_file(&l0, "bin/busybox", "BB");
	add_link(&l0, '1', "bin/sh", "bin/busybox");
	add_link(&l0, '1', "bin/ls", "./bin/busybox");
	tt_tar_finish(&l0);
	add_link(&l1, '1', "usr/bin/sh2", "bin/sh"); /* link to a lower layer's file */
	add_file(&l1, "bin/busybox", "NEW");	     /* replaces one name only */
	tt_tar_finish(&l1);
	struct clip_tree *tree;
	struct clip_err err = { 0 };
	assert_int_equal(build(&tree, &err, 2, &l0, &l1), 0);
	const struct clip_tree_node *sh = find(tree, "bin/sh");
	const struct clip_tree_node *ls = find(tree, "bin/ls");
	const struct clip_tree_node *sh2 = find(tree, "usr/bin/sh2");
	const struct clip_tree_node *bb = find(tree, "bin/busybox");
	assert_ptr_equal(sh->inode, ls->inode);
	assert_ptr_equal(sh->inode, sh2->inode);
	assert_ptr_not_equal(sh->inode, bb->inode);
	assert_int_equal(sh->inode->nlink, 3);
	assert_int_equal(bb->inode->nlink, 1);
	assert_int_equal(sh->inode->layer, 0);
	assert_memory_equal(l0.data + sh->inode->data_offset, "BB", 2);
	assert_int_equal(bb->inode->layer, 1);
	assert_int_equal(sh->inode->ino, ls->inode->ino);
	clip_tree_free(tree);
	tt_buf_free(&l0);
	tt_buf_free(&l1);
}

static void test_bad_links_and_parents(void **state)
{
	(void)state;
	struct clip_tree *tree;
	struct clip_err err = { 0 };
	struct tt_buf t = { 0 };
	add_link(&t, '1', "a", "missing");
	tt_tar_finish(&t);
	assert_int_equal(build(&tree, &err, 1, &t), -ENOENT);
	assert_non_null(strstr(err.msg, "hard link target missing not found"));
	clip_tree_free(tree);
	tt_buf_free(&t);

	add_dir(&t, "d", 0755);
	add_link(&t, '1', "a", "d");
	tt_tar_finish(&t);
	assert_int_equal(build(&tree, &err, 1, &t), -EPERM);
	assert_non_null(strstr(err.msg, "is a directory"));
	clip_tree_free(tree);
	tt_buf_free(&t);

	add_file(&t, "f", "x");
	add_file(&t, "f/g", "y");
	tt_tar_finish(&t);
	assert_int_equal(build(&tree, &err, 1, &t), -ENOTDIR);
	assert_non_null(strstr(err.msg, "f/g: a parent is not a directory"));
	clip_tree_free(tree);
	tt_buf_free(&t);
}

/* A member under a symlinked directory lands where the link points, as a
 * runtime extracting the layer puts it (umoci unpack does the same). */
static void test_symlinked_parents(void **state)
{
	(void)state;
	struct tt_buf l0 = { 0 }, l1 = { 0 };
	add_dir(&l0, "usr/bin/", 0755);
	add_file(&l0, "usr/bin/a", "a");
	add_file(&l0, "usr/bin/b", "b");
	add_link(&l0, '2', "bin", "usr/bin");	   /* usrmerge */
	add_link(&l0, '2', "lib", "/usr/lib");	   /* absolute, target missing */
	add_link(&l0, '2', "etc/up", "../../usr"); /* climbs past the root */
	tt_tar_finish(&l0);
	add_file(&l1, "bin/foo", "foo");
	add_file(&l1, "lib/x/y", "y");
	add_file(&l1, "etc/up/./bin/z", "z");
	add_link(&l1, '0', "bin/.wh.a", ""); /* a whiteout through the link */
	add_link(&l1, '1', "h", "bin/foo");  /* a hard link whose target's parent is a link */
	tt_tar_finish(&l1);
	struct clip_tree *tree;
	struct clip_err err = { 0 };
	if (build(&tree, &err, 2, &l0, &l1) != 0)
		fail_msg("%s", err.msg);
	assert_true(S_ISLNK(find(tree, "bin")->inode->mode));
	assert_true(S_ISLNK(find(tree, "lib")->inode->mode));
	const struct clip_tree_node *foo = find(tree, "usr/bin/foo");
	assert_non_null(foo);
	assert_int_equal(foo->inode->layer, 1);
	assert_non_null(find(tree, "usr/lib/x/y"));
	assert_true(S_ISDIR(find(tree, "usr/lib")->inode->mode));
	assert_non_null(find(tree, "usr/bin/z"));
	assert_null(find(tree, "usr/bin/a"));
	assert_non_null(find(tree, "usr/bin/b"));
	assert_ptr_equal(find(tree, "h")->inode, foo->inode);
	assert_int_equal(foo->inode->nlink, 2);
	clip_tree_free(tree);
	tt_buf_free(&l0);
	tt_buf_free(&l1);

	/* A loop, and a link to a file, as parents: errors naming the member. */
	struct tt_buf t = { 0 };
	add_link(&t, '2', "p", "q");
	add_link(&t, '2', "q", "p");
	add_file(&t, "p/x", "x");
	tt_tar_finish(&t);
	assert_int_equal(build(&tree, &err, 1, &t), -ELOOP);
	assert_non_null(strstr(err.msg, "p/x: too many symlinks in its parents"));
	clip_tree_free(tree);
	tt_buf_free(&t);
	/* Nine links whose targets are 2000 components long: within the
	 * symlink count, past the steps a member may take. */
	char target[4100];
	for (int i = 1; i <= 9; i++) {
		char name[8], prev[8];
		snprintf(name, sizeof(name), "s%d", i);
		snprintf(prev, sizeof(prev), "s%d", i - 1);
		size_t n = 0;
		for (int k = 0; k < 2000; k++) {
			target[n++] = '.';
			target[n++] = '/';
		}
		memcpy(target + n, prev, strlen(prev) + 1);
		add_link(&t, '2', name, target);
	}
	add_dir(&t, "s0", 0755);
	add_file(&t, "s9/x", "x");
	tt_tar_finish(&t);
	assert_int_equal(build(&tree, &err, 1, &t), -ELOOP);
	assert_non_null(strstr(err.msg, "s9/x: too many symlinks"));
	clip_tree_free(tree);
	tt_buf_free(&t);
	/* Three such links are fine: the member lands in s0. */
	for (int i = 1; i <= 3; i++) {
		char name[8];
		snprintf(name, sizeof(name), "s%d", i);
		snprintf(target + 4000, sizeof(target) - 4000, "s%d", i - 1);
		add_link(&t, '2', name, target);
	}
	add_dir(&t, "s0", 0755);
	add_file(&t, "s3/x", "x");
	tt_tar_finish(&t);
	assert_int_equal(build(&tree, &err, 1, &t), 0);
	assert_non_null(find(tree, "s0/x"));
	clip_tree_free(tree);
	tt_buf_free(&t);
	add_file(&t, "f", "x");
	add_link(&t, '2', "s", "f");
	add_file(&t, "s/x", "y");
	tt_tar_finish(&t);
	assert_int_equal(build(&tree, &err, 1, &t), -ENOTDIR);
	assert_non_null(strstr(err.msg, "s/x: a parent is not a directory"));
	clip_tree_free(tree);
	tt_buf_free(&t);
}

static void test_root_metadata_symlinks_devices_xattrs(void **state)
{
	(void)state;
	struct tt_buf t = { 0 };
	tt_tar_add(&t, &(struct tt_member){ .type = '5',
					    .path = "./",
					    .mode = 0700,
					    .uid = 7,
					    .mtime_sec = 1234,
					    .mtime_nsec = 5 });
	tt_tar_add(&t, &(struct tt_member){
			       .type = '2', .path = "lib", .linkpath = "usr/lib", .mode = 0644 });
	tt_tar_add(&t, &(struct tt_member){ .type = '3',
					    .path = "dev/null",
					    .mode = 0666,
					    .devmajor = 1,
					    .devminor = 3 });
	tt_tar_add(&t, &(struct tt_member){ .type = '6', .path = "run/fifo", .mode = 0600 });
	struct tt_xattr xs[] = { { "user.z", "1", 1 }, { "user.a", "\0\1", 2 } };
	tt_tar_add(&t,
		   &(struct tt_member){
			   .type = '0', .path = "x", .mode = 04755, .xattrs = xs, .nxattrs = 2 });
	tt_tar_finish(&t);
	struct clip_tree *tree;
	struct clip_err err = { 0 };
	assert_int_equal(build(&tree, &err, 1, &t), 0);
	const struct clip_tree_inode *root = clip_tree_root(tree)->inode;
	assert_int_equal(root->mode & 07777, 0700);
	assert_int_equal(root->uid, 7);
	assert_int_equal(root->mtime_sec, 1234);
	assert_int_equal(root->mtime_nsec, 5);
	const struct clip_tree_inode *lib = find(tree, "lib")->inode;
	assert_true(S_ISLNK(lib->mode));
	assert_int_equal(lib->mode & 07777, 0777); /* as Linux shows any symlink */
	assert_string_equal(lib->symlink, "usr/lib");
	assert_int_equal(lib->size, 7);
	const struct clip_tree_inode *dn = find(tree, "dev/null")->inode;
	assert_true(S_ISCHR(dn->mode));
	assert_int_equal(dn->rdev_major, 1);
	assert_int_equal(dn->rdev_minor, 3);
	assert_true(S_ISFIFO(find(tree, "run/fifo")->inode->mode));
	const struct clip_tree_inode *x = find(tree, "x")->inode;
	assert_int_equal(x->mode & 07777, 04755);
	assert_int_equal(x->nxattrs, 2);
	assert_string_equal(x->xattrs[0].name, "user.a"); /* sorted by finish */
	assert_int_equal(x->xattrs[0].len, 2);
	assert_memory_equal(x->xattrs[0].value, "\0\1", 2);
	/* Inode numbers: root first, every inode exactly once. */
	assert_int_equal(root->ino, 0);
	size_t n = clip_tree_inode_count(tree);
	for (uint32_t i = 0; i < n; i++)
		assert_int_equal(clip_tree_inode_node(tree, i)->inode->ino, i);
	clip_tree_free(tree);
	tt_buf_free(&t);
}

/* Many entries and layers: removal and re-adding stress the hash table. */
static void test_many_entries(void **state)
{
	(void)state;
	struct tt_buf l0 = { 0 }, l1 = { 0 };
	char path[64];
	for (int i = 0; i < 20000; i++) {
		snprintf(path, sizeof(path), "d%d/f%d", i % 100, i);
		add_file(&l0, path, "");
	}
	tt_tar_finish(&l0);
	for (int i = 0; i < 100; i += 2) {
		snprintf(path, sizeof(path), ".wh.d%d", i);
		add_file(&l1, path, "");
	}
	tt_tar_finish(&l1);
	struct clip_tree *tree;
	struct clip_err err = { 0 };
	assert_int_equal(build(&tree, &err, 2, &l0, &l1), 0);
	assert_int_equal(clip_tree_root(tree)->nchildren, 50);
	assert_int_equal(clip_tree_entry_count(tree), 50 + 10000);
	assert_int_equal(clip_tree_inode_count(tree), 1 + 50 + 10000);
	assert_null(find(tree, "d0/f0"));
	assert_non_null(find(tree, "d1/f1"));
	clip_tree_free(tree);

	/* The cap on the merged tree counts entries across layers, after
	 * whiteouts: 20100 entries in layer 0 fit under 20100 ... */
	struct clip_tree_layer *a = layer_of(&l0), *b = layer_of(&l1);
	tree = clip_tree_new();
	clip_tree_set_max_entries(tree, 20100);
	assert_int_equal(clip_tree_apply(tree, 0, a, &err), 0);
	assert_int_equal(clip_tree_apply(tree, 1, b, &err), 0);
	clip_tree_free(tree);
	/* ... and one more directory does not. */
	tree = clip_tree_new();
	clip_tree_set_max_entries(tree, 20099);
	assert_int_equal(clip_tree_apply(tree, 0, a, &err), -E2BIG);
	assert_non_null(strstr(err.msg, "more than 20099 files and directories"));
	clip_tree_free(tree);
	clip_tree_layer_free(a);
	clip_tree_layer_free(b);
	tt_buf_free(&l0);
	tt_buf_free(&l1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic_and_implicit_parents),
		cmocka_unit_test(test_replace_across_layers),
		cmocka_unit_test(test_whiteouts),
		cmocka_unit_test(test_opaque_directory),
		cmocka_unit_test(test_hard_links),
		cmocka_unit_test(test_bad_links_and_parents),
		cmocka_unit_test(test_symlinked_parents),
		cmocka_unit_test(test_root_metadata_symlinks_devices_xattrs),
		cmocka_unit_test(test_many_entries),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
