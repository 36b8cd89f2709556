/* clip: the merged file tree of an image, built in memory while indexing.
 *
 * Layers are parsed (possibly in parallel) into per-layer entry lists
 * (struct clip_tree_layer), then applied to the tree in image order with OCI
 * semantics: later entries replace earlier ones, ".wh.NAME" removes NAME from
 * lower layers, ".wh..wh..opq" hides everything lower layers put in its
 * directory, missing parent directories are created implicitly, and hard links
 * name the same inode as their target. clip_tree_finish() then numbers inodes
 * (root first, breadth-first) and sorts every directory by name, which is the
 * order the archive writer stores.
 *
 * Thread safety: none inside. Each layer list is filled by one thread at a
 * time (different layers in parallel); the tree is applied to and finished by
 * one thread at a time; once finished it is read-only and may be read from any
 * number of threads.
 */
#ifndef CLIP_TREE_H
#define CLIP_TREE_H

#include <stddef.h>
#include <stdint.h>

#include "clip/err.h"
#include "clip/tar.h"

/* One layer's members, copied out of the tar parser's callbacks. */
struct clip_tree_layer;

/* NULL when out of memory. */
struct clip_tree_layer *clip_tree_layer_new(void);
/* Copy `entry` (borrowed) into the list. -ENOMEM, or -E2BIG when the layer
 * exceeds CLIP_TREE_MAX_ENTRIES members. */
int clip_tree_layer_add(struct clip_tree_layer *layer, const struct clip_tar_entry *entry,
			struct clip_err *err);
/* Members added so far. */
size_t clip_tree_layer_count(const struct clip_tree_layer *layer);
/* Free the list and its copies; NULL is a no-op. */
void clip_tree_layer_free(struct clip_tree_layer *layer);

#define CLIP_TREE_MAX_ENTRIES (16u << 20) /* members in one layer */
/* Entries of the merged tree, whatever the number of layers: each layer is
 * bounded, and this bounds their sum (the memory of the merge). */
#define CLIP_TREE_MAX_TOTAL (16u << 20)

/* An inode of the merged tree. Hard links share one. */
struct clip_tree_inode {
	uint32_t mode; /* S_IFxxx | permission bits */
	uint32_t uid, gid;
	uint32_t nlink; /* set by clip_tree_finish */
	uint64_t size;	/* regular: data length; symlink: target length */
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint32_t rdev_major, rdev_minor;
	uint32_t layer;			/* regular files: layer holding the data */
	uint64_t data_offset;		/* regular files: offset of the data in that layer's tar */
	char *symlink;			/* symlink target, owned */
	struct clip_tree_xattr *xattrs; /* owned, sorted by name at finish */
	size_t nxattrs;
	uint32_t ino;  /* number assigned by finish: 0 is the root */
	uint32_t refs; /* directory entries naming it */
};

struct clip_tree_xattr {
	char *name;
	unsigned char *value;
	size_t len;
};

/* A directory entry. After clip_tree_finish(), a directory's children are
 * `children[0..nchildren)` sorted bytewise by name. */
struct clip_tree_node {
	char *name; /* owned; "" for the root */
	size_t name_len;
	struct clip_tree_inode *inode; /* shared by hard links */
	struct clip_tree_node *parent;
	struct clip_tree_node **children;
	size_t nchildren;
	/* building state (internal) */
	struct clip_tree_node *first_child, *next_sibling, *prev_sibling, *hash_next;
	uint32_t stamp; /* the last layer that declared this path */
	uint32_t opaque_layer_plus1;
};

struct clip_tree;

/* An empty tree (a root directory 0755 root:root). NULL when out of memory;
 * free with clip_tree_free(). */
struct clip_tree *clip_tree_new(void);

/* Lower the cap on the merged tree's entries from CLIP_TREE_MAX_TOTAL (tests
 * use a small one). clip_tree_apply() fails with -E2BIG past it. */
void clip_tree_set_max_entries(struct clip_tree *tree, size_t max_entries);

/* Apply one layer's members (index `layer_index`, applied in increasing order).
 * Errors name the member: hard link to a missing target or a directory, a
 * member whose parent is not a directory; -E2BIG past the entry cap. */
int clip_tree_apply(struct clip_tree *tree, uint32_t layer_index,
		    const struct clip_tree_layer *layer, struct clip_err *err);

/* Number inodes and sort directories. After this the tree is read-only;
 * calling it again does nothing. 0 or -ENOMEM. */
int clip_tree_finish(struct clip_tree *tree, struct clip_err *err);

/* Valid after finish: the root, and inodes by number (0..count). */
const struct clip_tree_node *clip_tree_root(const struct clip_tree *tree);
size_t clip_tree_inode_count(const struct clip_tree *tree);
/* The node through which inode `ino` was first reached (for directories the
 * only one); borrowed. */
const struct clip_tree_node *clip_tree_inode_node(const struct clip_tree *tree, uint32_t ino);
/* Number of directory entries in the tree (excluding the root). */
size_t clip_tree_entry_count(const struct clip_tree *tree);

/* Free the tree, its nodes and inodes; NULL is a no-op. */
void clip_tree_free(struct clip_tree *tree);

#endif
