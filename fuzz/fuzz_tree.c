/* libFuzzer harness for merging layers into the file tree (src/lib/tree.c).
 *
 * The input is two tar streams: a 4-byte little-endian length, that many
 * bytes of layer 0, and the rest as layer 1. Each parsed layer is applied in
 * order (whiteouts, opaque directories, hard links, members under symlinked
 * directories), then the tree is finished and walked: every directory's
 * children are strictly sorted and point back at it, every inode number is
 * in range and reached, directories' link counts are 2 + subdirectories.
 * Errors are fine (they are the hostile-input path); crashes, leaks and
 * broken invariants abort.
 *
 * Seeds: fuzz/corpus/tree/ (fuzz/gen-seeds).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clip/tar.h"
#include "clip/tree.h"
#include "util.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int collect(void *opaque, const struct clip_tar_entry *e, struct clip_err *err)
{
	return clip_tree_layer_add(opaque, e, err);
}

/* The members of one tar stream; NULL when it does not parse. */
static struct clip_tree_layer *parse(const uint8_t *p, size_t n)
{
	struct clip_tree_layer *layer = clip_tree_layer_new();
	struct clip_tar_parser *tp = clip_tar_parser_new(collect, layer);
	struct clip_err err = { 0 };
	if (layer == NULL || tp == NULL || clip_tar_parser_feed(tp, p, n, &err) < 0 ||
	    clip_tar_parser_finish(tp, &err) < 0) {
		clip_tar_parser_free(tp);
		clip_tree_layer_free(layer);
		return NULL;
	}
	clip_tar_parser_free(tp);
	return layer;
}

/* Walk the finished tree; returns the number of entries below `n`. */
static size_t walk(const struct clip_tree *tree, const struct clip_tree_node *n,
		   unsigned char *seen, size_t ninodes, unsigned depth)
{
	CHECK(depth < 4096);
	CHECK(n->inode->ino < ninodes);
	seen[n->inode->ino] = 1;
	if (!S_ISDIR(n->inode->mode)) {
		CHECK(n->nchildren == 0);
		return 0;
	}
	size_t count = 0, subdirs = 0;
	for (size_t i = 0; i < n->nchildren; i++) {
		const struct clip_tree_node *c = n->children[i];
		CHECK(c->parent == n);
		CHECK(c->name_len > 0 && memchr(c->name, '/', c->name_len) == NULL);
		if (i > 0) {
			const struct clip_tree_node *b = n->children[i - 1];
			size_t m = b->name_len < c->name_len ? b->name_len : c->name_len;
			int r = memcmp(b->name, c->name, m);
			CHECK(r < 0 || (r == 0 && b->name_len < c->name_len));
		}
		if (S_ISDIR(c->inode->mode))
			subdirs++;
		count += 1 + walk(tree, c, seen, ninodes, depth + 1);
	}
	CHECK(n->inode->nlink == 2 + subdirs);
	return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	size_t len0 = clip_get_le32(data);
	if (len0 > size - 4)
		len0 = size - 4;
	const uint8_t *tars[2] = { data + 4, data + 4 + len0 };
	size_t lens[2] = { len0, size - 4 - len0 };

	struct clip_tree *tree = clip_tree_new();
	if (tree == NULL)
		return 0;
	struct clip_err err = { 0 };
	int rc = 0;
	for (uint32_t i = 0; i < 2 && rc == 0; i++) {
		struct clip_tree_layer *layer = parse(tars[i], lens[i]);
		if (layer == NULL)
			break;
		rc = clip_tree_apply(tree, i, layer, &err);
		clip_tree_layer_free(layer);
	}
	if (rc == 0 && clip_tree_finish(tree, &err) == 0) {
		size_t ninodes = clip_tree_inode_count(tree);
		unsigned char *seen = calloc(ninodes ? ninodes : 1, 1);
		CHECK(seen != NULL);
		size_t entries = walk(tree, clip_tree_root(tree), seen, ninodes, 0);
		CHECK(entries == clip_tree_entry_count(tree));
		for (size_t i = 0; i < ninodes; i++)
			CHECK(seen[i]);
		free(seen);
	} else {
		CHECK(err.msg[0] != '\0');
	}
	clip_tree_free(tree);
	return 0;
}
