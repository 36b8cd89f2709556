/* The merged tree: OCI layer semantics applied to per-layer member lists.
 *
 * Nodes are directory entries; inodes are shared between hard links and
 * reference counted by the entries naming them. Children are found through
 * one hash table keyed by (parent, name), so applying a member costs O(depth)
 * hash lookups whatever the directory sizes. Every node carries the last layer
 * that declared its path (`stamp`), which is what whiteouts and opaque
 * directories need: both hide only what *lower* layers put there.
 */
#include "clip/tree.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

#define WHITEOUT_PREFIX	     ".wh."
#define WHITEOUT_OPAQUE	     ".wh..wh..opq"
#define WHITEOUT_META_PREFIX ".wh..wh."

/* ---- per-layer member lists ------------------------------------------- */

struct layer_entry {
	enum clip_tar_type type;
	char *path;
	char *linkpath;
	uint32_t mode, uid, gid;
	uint64_t size;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint32_t devmajor, devminor;
	uint64_t data_offset;
	struct clip_tree_xattr *xattrs;
	size_t nxattrs;
};

struct clip_tree_layer {
	struct layer_entry *entries;
	size_t count, cap;
};

struct clip_tree_layer *clip_tree_layer_new(void)
{
	return calloc(1, sizeof(struct clip_tree_layer));
}

static void xattrs_free(struct clip_tree_xattr *xattrs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(xattrs[i].name);
		free(xattrs[i].value);
	}
	free(xattrs);
}

/* Deep-copy `n` tar xattrs; NULL on allocation failure (nothing leaked). */
static int xattrs_copy_tar(const struct clip_tar_xattr *src, size_t n, struct clip_tree_xattr **out)
{
	*out = NULL;
	if (n == 0)
		return 0;
	struct clip_tree_xattr *x = calloc(n, sizeof(*x));
	if (x == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		x[i].name = strdup(src[i].name);
		x[i].value = malloc(src[i].len ? src[i].len : 1);
		if (x[i].name == NULL || x[i].value == NULL) {
			xattrs_free(x, i + 1);
			return -ENOMEM;
		}
		memcpy(x[i].value, src[i].value, src[i].len);
		x[i].len = src[i].len;
	}
	*out = x;
	return 0;
}

int clip_tree_layer_add(struct clip_tree_layer *layer, const struct clip_tar_entry *entry,
			struct clip_err *err)
{
	if (layer->count >= CLIP_TREE_MAX_ENTRIES)
		return clip_err_set(err, E2BIG, "layer has more than %u members",
				    CLIP_TREE_MAX_ENTRIES);
	if (layer->count == layer->cap) {
		size_t cap = layer->cap ? layer->cap * 2 : 256;
		struct layer_entry *e = realloc(layer->entries, cap * sizeof(*e));
		if (e == NULL)
			return clip_err_nomem(err);
		layer->entries = e;
		layer->cap = cap;
	}
	struct layer_entry *e = &layer->entries[layer->count];
	memset(e, 0, sizeof(*e));
	e->type = entry->type;
	e->path = strdup(entry->path);
	e->linkpath = entry->linkpath ? strdup(entry->linkpath) : NULL;
	if (e->path == NULL || (entry->linkpath && e->linkpath == NULL) ||
	    xattrs_copy_tar(entry->xattrs, entry->nxattrs, &e->xattrs) < 0) {
		free(e->path);
		free(e->linkpath);
		return clip_err_nomem(err);
	}
	e->nxattrs = entry->nxattrs;
	e->mode = entry->mode & 07777;
	e->uid = entry->uid;
	e->gid = entry->gid;
	e->size = entry->size;
	e->mtime_sec = entry->mtime_sec;
	e->mtime_nsec = entry->mtime_nsec;
	e->devmajor = entry->devmajor;
	e->devminor = entry->devminor;
	e->data_offset = entry->data_offset;
	layer->count++;
	return 0;
}

size_t clip_tree_layer_count(const struct clip_tree_layer *layer)
{
	return layer->count;
}

void clip_tree_layer_free(struct clip_tree_layer *layer)
{
	if (layer == NULL)
		return;
	for (size_t i = 0; i < layer->count; i++) {
		free(layer->entries[i].path);
		free(layer->entries[i].linkpath);
		xattrs_free(layer->entries[i].xattrs, layer->entries[i].nxattrs);
	}
	free(layer->entries);
	free(layer);
}

/* ---- the tree ----------------------------------------------------------- */

struct clip_tree {
	struct clip_tree_node *root;
	struct clip_tree_node **buckets; /* (parent, name) -> child */
	size_t nbuckets;
	size_t nnodes; /* excluding the root */
	size_t max_nodes;
	bool finished;
	struct clip_tree_node **inode_nodes; /* by ino, after finish */
	size_t ninodes;
};

static uint64_t hash_key(const struct clip_tree_node *parent, const char *name, size_t len)
{
	/* FNV-1a over the name, seeded with the parent's address. */
	uint64_t h = clip_fnv1a(CLIP_FNV1A_SEED ^ (uint64_t)(uintptr_t)parent, name, len);
	return h ^ (h >> 29);
}

static struct clip_tree_node **
bucket_of(struct clip_tree *tree, const struct clip_tree_node *parent, const char *name, size_t len)
{
	return &tree->buckets[hash_key(parent, name, len) & (tree->nbuckets - 1)];
}

static struct clip_tree_node *child_find(struct clip_tree *tree,
					 const struct clip_tree_node *parent, const char *name,
					 size_t len)
{
	for (struct clip_tree_node *n = *bucket_of(tree, parent, name, len); n; n = n->hash_next)
		if (n->parent == parent && n->name_len == len && memcmp(n->name, name, len) == 0)
			return n;
	return NULL;
}

static int hash_grow(struct clip_tree *tree)
{
	size_t nb = tree->nbuckets * 2;
	struct clip_tree_node **b = calloc(nb, sizeof(*b));
	if (b == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < tree->nbuckets; i++) {
		struct clip_tree_node *n = tree->buckets[i];
		while (n) {
			struct clip_tree_node *next = n->hash_next;
			struct clip_tree_node **slot =
				&b[hash_key(n->parent, n->name, n->name_len) & (nb - 1)];
			n->hash_next = *slot;
			*slot = n;
			n = next;
		}
	}
	free(tree->buckets);
	tree->buckets = b;
	tree->nbuckets = nb;
	return 0;
}

static struct clip_tree_inode *inode_new(uint32_t mode)
{
	struct clip_tree_inode *ino = calloc(1, sizeof(*ino));
	if (ino)
		ino->mode = mode;
	return ino;
}

static void inode_unref(struct clip_tree_inode *ino)
{
	if (ino == NULL || --ino->refs > 0)
		return;
	free(ino->symlink);
	xattrs_free(ino->xattrs, ino->nxattrs);
	free(ino);
}

static bool node_is_dir(const struct clip_tree_node *n)
{
	return S_ISDIR(n->inode->mode);
}

/* Link a new node named name[0..len) under `parent`, taking a reference on
 * `inode`. NULL when out of memory (the inode reference is not taken). */
static struct clip_tree_node *node_add(struct clip_tree *tree, struct clip_tree_node *parent,
				       const char *name, size_t len, struct clip_tree_inode *inode,
				       uint32_t stamp)
{
	if (tree->nnodes + 1 > tree->nbuckets && hash_grow(tree) < 0)
		return NULL;
	struct clip_tree_node *n = calloc(1, sizeof(*n));
	if (n == NULL)
		return NULL;
	n->name = clip_strdup_len(name, len);
	if (n->name == NULL) {
		free(n);
		return NULL;
	}
	n->name_len = len;
	n->inode = inode;
	inode->refs++;
	n->parent = parent;
	n->stamp = stamp;
	n->next_sibling = parent->first_child;
	if (parent->first_child)
		parent->first_child->prev_sibling = n;
	parent->first_child = n;
	struct clip_tree_node **slot = bucket_of(tree, parent, name, len);
	n->hash_next = *slot;
	*slot = n;
	tree->nnodes++;
	return n;
}

/* Unlink `n` and everything below it, dropping their inode references. */
static void node_remove(struct clip_tree *tree, struct clip_tree_node *n)
{
	while (n->first_child)
		node_remove(tree, n->first_child);
	struct clip_tree_node *parent = n->parent;
	if (n->prev_sibling)
		n->prev_sibling->next_sibling = n->next_sibling;
	else
		parent->first_child = n->next_sibling;
	if (n->next_sibling)
		n->next_sibling->prev_sibling = n->prev_sibling;
	struct clip_tree_node **slot = bucket_of(tree, parent, n->name, n->name_len);
	while (*slot != n)
		slot = &(*slot)->hash_next;
	*slot = n->hash_next;
	tree->nnodes--;
	inode_unref(n->inode);
	free(n->children);
	free(n->name);
	free(n);
}

struct clip_tree *clip_tree_new(void)
{
	struct clip_tree *tree = calloc(1, sizeof(*tree));
	if (tree == NULL)
		return NULL;
	tree->nbuckets = 1024;
	tree->max_nodes = CLIP_TREE_MAX_TOTAL;
	tree->buckets = calloc(tree->nbuckets, sizeof(*tree->buckets));
	tree->root = calloc(1, sizeof(*tree->root));
	struct clip_tree_inode *ri = inode_new(S_IFDIR | 0755);
	if (tree->buckets == NULL || tree->root == NULL || ri == NULL ||
	    (tree->root->name = strdup("")) == NULL) {
		free(ri);
		if (tree->root)
			free(tree->root->name);
		free(tree->root);
		free(tree->buckets);
		free(tree);
		return NULL;
	}
	ri->refs = 1;
	tree->root->inode = ri;
	return tree;
}

/* Resolving one member's parents follows at most FOLLOW_MAX symlinks (the
 * kernel's limit) and takes at most WALK_STEPS_MAX steps (components): a path
 * has at most 2048 components of its own, and the cap keeps a hostile chain of
 * long targets from costing each member 40 times that. */
#define FOLLOW_MAX     40
#define WALK_STEPS_MAX (4u * CLIP_TAR_MAX_PATH)

struct walk_budget {
	int follows;
	unsigned steps;
};

/* Walk p[0..len) as directories from `start`, the way a container runtime
 * resolves a member's parent when it extracts a layer (umoci through
 * securejoin, containerd through its RootPath): a symlink is followed, an
 * absolute target from the root and a relative one from the link's
 * directory, and ".." never climbs above the root. When `create`, missing
 * directories are created (0755 root:root, as runtimes do) and existing ones
 * marked as declared by `stamp`, which keeps them when an opaque marker of the
 * same layer prunes their parent; otherwise a missing one is -ENOENT.
 * -ENOTDIR when a component is neither a directory nor a symlink to one,
 * -ELOOP past the budget (FOLLOW_MAX symlinks, WALK_STEPS_MAX components).
 * `err` is not set: the caller names the member. */
static int walk_dirs(struct clip_tree *tree, struct clip_tree_node *start, const char *p,
		     size_t len, bool create, uint32_t stamp, struct walk_budget *budget,
		     struct clip_tree_node **out)
{
	struct clip_tree_node *cur = start;
	const char *end = p + len;
	while (p < end) {
		const char *slash = memchr(p, '/', (size_t)(end - p));
		size_t n = slash ? (size_t)(slash - p) : (size_t)(end - p);
		const char *comp = p;
		p += n + (slash ? 1 : 0);
		if (budget->steps++ >= WALK_STEPS_MAX)
			return -ELOOP;
		if (n == 0 || (n == 1 && comp[0] == '.'))
			continue;
		if (n == 2 && comp[0] == '.' && comp[1] == '.') {
			if (cur->parent != NULL)
				cur = cur->parent;
			continue;
		}
		struct clip_tree_node *next = child_find(tree, cur, comp, n);
		if (next == NULL) {
			if (!create)
				return -ENOENT;
			struct clip_tree_inode *ino = inode_new(S_IFDIR | 0755);
			if (ino == NULL ||
			    (next = node_add(tree, cur, comp, n, ino, stamp)) == NULL) {
				free(ino);
				return -ENOMEM;
			}
		} else if (S_ISLNK(next->inode->mode)) {
			if (--budget->follows < 0)
				return -ELOOP;
			const char *target = next->inode->symlink ? next->inode->symlink : "";
			int r = walk_dirs(tree, target[0] == '/' ? tree->root : cur, target,
					  strlen(target), create, stamp, budget, &next);
			if (r < 0)
				return r;
		} else if (!node_is_dir(next)) {
			return -ENOTDIR;
		} else if (create && next->stamp < stamp) {
			next->stamp = stamp;
		}
		cur = next;
	}
	*out = cur;
	return 0;
}

/* The directory that holds `path`'s last component, created as needed (see
 * walk_dirs); *base is that component. */
static int walk_parent(struct clip_tree *tree, const char *path, uint32_t stamp,
		       struct clip_tree_node **dir, const char **base, struct clip_err *err)
{
	const char *last = strrchr(path, '/');
	*base = last ? last + 1 : path;
	struct walk_budget budget = { FOLLOW_MAX, 0 };
	int r = walk_dirs(tree, tree->root, path, last ? (size_t)(last - path) : 0, true, stamp,
			  &budget, dir);
	if (r == -ENOTDIR)
		return clip_err_set(err, ENOTDIR, "%s: a parent is not a directory", path);
	if (r == -ELOOP)
		return clip_err_set(err, ELOOP,
				    "%s: too many symlinks in its parents (more than %d, or %u "
				    "path components)",
				    path, FOLLOW_MAX, WALK_STEPS_MAX);
	if (r < 0) /* with `create`, walk_dirs has no other failure */
		return clip_err_nomem(err);
	return 0;
}

/* Find an existing path without creating anything (hard link targets): its
 * parents are resolved as in walk_dirs, its last component is not followed. */
static struct clip_tree_node *lookup_path(struct clip_tree *tree, const char *path)
{
	const char *last = strrchr(path, '/');
	const char *base = last ? last + 1 : path;
	struct clip_tree_node *dir;
	struct walk_budget budget = { FOLLOW_MAX, 0 };
	if (walk_dirs(tree, tree->root, path, last ? (size_t)(last - path) : 0, false, 0, &budget,
		      &dir) < 0)
		return NULL;
	if (*base == '\0')
		return dir;
	return child_find(tree, dir, base, strlen(base));
}

/* An existing directory, symlinks followed (whiteouts); NULL when none. */
static struct clip_tree_node *lookup_dir(struct clip_tree *tree, const char *path)
{
	struct clip_tree_node *dir;
	struct walk_budget budget = { FOLLOW_MAX, 0 };
	if (walk_dirs(tree, tree->root, path, strlen(path), false, 0, &budget, &dir) < 0)
		return NULL;
	return dir;
}

static uint32_t type_bits(enum clip_tar_type type)
{
	switch (type) {
	case CLIP_TAR_REG:
	case CLIP_TAR_HARDLINK: return S_IFREG;
	case CLIP_TAR_SYMLINK: return S_IFLNK;
	case CLIP_TAR_CHR: return S_IFCHR;
	case CLIP_TAR_BLK: return S_IFBLK;
	case CLIP_TAR_DIR: return S_IFDIR;
	case CLIP_TAR_FIFO: return S_IFIFO;
	}
	return 0;
}

/* Set an inode's metadata from a member; the inode takes over the member's
 * xattrs only by copy since a layer list may be applied once only but stays
 * owned by its caller. */
static int inode_fill(struct clip_tree_inode *ino, const struct layer_entry *e, uint32_t layer)
{
	ino->mode = type_bits(e->type) | e->mode;
	ino->uid = e->uid;
	ino->gid = e->gid;
	ino->mtime_sec = e->mtime_sec;
	ino->mtime_nsec = e->mtime_nsec;
	ino->rdev_major = ino->rdev_minor = 0;
	ino->size = 0;
	ino->layer = 0;
	ino->data_offset = 0;
	free(ino->symlink);
	ino->symlink = NULL;
	xattrs_free(ino->xattrs, ino->nxattrs);
	ino->xattrs = NULL;
	ino->nxattrs = 0;
	switch (e->type) {
	case CLIP_TAR_REG:
		ino->size = e->size;
		ino->layer = layer;
		ino->data_offset = e->data_offset;
		break;
	case CLIP_TAR_SYMLINK:
		/* Linux has no symlink permissions: every unpacked symlink shows
		 * 0777 whatever the tar header said, so the image does too. */
		ino->mode = S_IFLNK | 0777;
		ino->symlink = strdup(e->linkpath ? e->linkpath : "");
		if (ino->symlink == NULL)
			return -ENOMEM;
		ino->size = strlen(ino->symlink);
		break;
	case CLIP_TAR_CHR:
	case CLIP_TAR_BLK:
		ino->rdev_major = e->devmajor;
		ino->rdev_minor = e->devminor;
		break;
	default: break;
	}
	if (e->nxattrs) {
		struct clip_tar_xattr tx[e->nxattrs];
		for (size_t i = 0; i < e->nxattrs; i++)
			tx[i] = (struct clip_tar_xattr){ e->xattrs[i].name, e->xattrs[i].value,
							 e->xattrs[i].len };
		if (xattrs_copy_tar(tx, e->nxattrs, &ino->xattrs) < 0)
			return -ENOMEM;
		ino->nxattrs = e->nxattrs;
	}
	return 0;
}

/* Whiteouts never create anything: a whiteout inside a directory no lower
 * layer has hides nothing. */
static int apply_whiteout(struct clip_tree *tree, uint32_t layer, const struct layer_entry *e,
			  const char *base, struct clip_err *err)
{
	struct clip_tree_node *dir = tree->root;
	if (base != e->path) {
		char parent[base - e->path];
		memcpy(parent, e->path, (size_t)(base - e->path) - 1);
		parent[base - e->path - 1] = '\0';
		dir = lookup_dir(tree, parent);
		if (dir == NULL)
			return 0;
	}
	if (strcmp(base, WHITEOUT_OPAQUE) == 0) {
		dir->opaque_layer_plus1 = layer + 1;
		return 0;
	}
	if (strncmp(base, WHITEOUT_META_PREFIX, strlen(WHITEOUT_META_PREFIX)) == 0)
		return 0; /* aufs bookkeeping (.wh..wh.plnk and the like): not part of the image */
	const char *name = base + strlen(WHITEOUT_PREFIX);
	if (*name == '\0')
		return clip_err_set(err, EINVAL, "%s: whiteout without a name", e->path);
	struct clip_tree_node *victim = child_find(tree, dir, name, strlen(name));
	/* A whiteout of something no lower layer has is legal (and common in
	 * layers made by diffing); only lower layers' entries are hidden. */
	if (victim != NULL && victim->stamp < layer)
		node_remove(tree, victim);
	return 0;
}

/* Apply one member; `layer` is the stamp (layer index + 1). */
static int apply_entry(struct clip_tree *tree, uint32_t layer, const struct layer_entry *e,
		       struct clip_err *err)
{
	if (e->path[0] == '\0') {
		/* The root itself ("./"): only its metadata can change. */
		if (e->type != CLIP_TAR_DIR)
			return clip_err_set(err, EINVAL, "root entry is not a directory");
		if (inode_fill(tree->root->inode, e, layer - 1) < 0)
			return clip_err_nomem(err);
		return 0;
	}
	const char *base = strrchr(e->path, '/');
	base = base ? base + 1 : e->path;
	if (strncmp(base, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)) == 0)
		return apply_whiteout(tree, layer, e, base, err);
	struct clip_tree_node *dir = NULL;
	int r = walk_parent(tree, e->path, layer, &dir, &base, err);
	if (r < 0)
		return r;

	size_t base_len = strlen(base);
	struct clip_tree_node *old = child_find(tree, dir, base, base_len);

	if (e->type == CLIP_TAR_HARDLINK) {
		struct clip_tree_node *target = lookup_path(tree, e->linkpath);
		if (target == NULL)
			return clip_err_set(err, ENOENT, "%s: hard link target %s not found",
					    e->path, e->linkpath);
		if (node_is_dir(target))
			return clip_err_set(err, EPERM, "%s: hard link target %s is a directory",
					    e->path, e->linkpath);
		if (target == old)
			return 0;
		struct clip_tree_inode *ino = target->inode;
		ino->refs++; /* keep it alive while `old` (maybe its last name) goes */
		if (old)
			node_remove(tree, old);
		struct clip_tree_node *n = node_add(tree, dir, base, base_len, ino, layer);
		inode_unref(ino);
		if (n == NULL)
			return clip_err_nomem(err);
		return 0;
	}

	if (old && node_is_dir(old) && e->type == CLIP_TAR_DIR) {
		/* A directory declared again keeps its children. */
		if (inode_fill(old->inode, e, layer - 1) < 0)
			return clip_err_nomem(err);
		old->stamp = layer;
		return 0;
	}
	if (old)
		node_remove(tree, old);
	struct clip_tree_inode *ino = inode_new(0);
	if (ino == NULL || inode_fill(ino, e, layer - 1) < 0) {
		if (ino) {
			ino->refs = 1;
			inode_unref(ino);
		}
		return clip_err_nomem(err);
	}
	if (node_add(tree, dir, base, base_len, ino, layer) == NULL) {
		ino->refs = 1;
		inode_unref(ino);
		return clip_err_nomem(err);
	}
	return 0;
}

/* Inside an opaque directory keep only what this layer declared. */
static void prune_lower(struct clip_tree *tree, struct clip_tree_node *dir, uint32_t layer)
{
	struct clip_tree_node *c = dir->first_child;
	while (c) {
		struct clip_tree_node *next = c->next_sibling;
		if (c->stamp < layer)
			node_remove(tree, c);
		else if (node_is_dir(c))
			prune_lower(tree, c, layer);
		c = next;
	}
}

static void apply_opaque(struct clip_tree *tree, struct clip_tree_node *dir, uint32_t layer)
{
	for (struct clip_tree_node *c = dir->first_child; c; c = c->next_sibling)
		if (node_is_dir(c))
			apply_opaque(tree, c, layer);
	if (dir->opaque_layer_plus1 == layer + 1) {
		prune_lower(tree, dir, layer);
		dir->opaque_layer_plus1 = 0;
	}
}

int clip_tree_apply(struct clip_tree *tree, uint32_t layer_index,
		    const struct clip_tree_layer *layer, struct clip_err *err)
{
	if (tree->finished)
		return clip_err_set(err, EINVAL, "tree already finished");
	/* Stamps start at 1 so that layer 0 can still whiteout nothing below it. */
	uint32_t stamp = layer_index + 1;
	bool any_opaque = false;
	for (size_t i = 0; i < layer->count; i++) {
		const struct layer_entry *e = &layer->entries[i];
		int r = apply_entry(tree, stamp, e, err);
		if (r < 0)
			return r;
		/* One member adds at most its path's components. */
		if (tree->nnodes > tree->max_nodes)
			return clip_err_set(err, E2BIG,
					    "%s: the image has more than %zu files and directories",
					    e->path, tree->max_nodes);
		if (e->type != CLIP_TAR_HARDLINK) {
			const char *base = strrchr(e->path, '/');
			base = base ? base + 1 : e->path;
			if (strcmp(base, WHITEOUT_OPAQUE) == 0)
				any_opaque = true;
		}
	}
	if (any_opaque)
		apply_opaque(tree, tree->root, stamp);
	return 0;
}

void clip_tree_set_max_entries(struct clip_tree *tree, size_t max_entries)
{
	if (max_entries < tree->max_nodes)
		tree->max_nodes = max_entries;
}

static int cmp_nodes(const void *a, const void *b)
{
	const struct clip_tree_node *x = *(struct clip_tree_node *const *)a;
	const struct clip_tree_node *y = *(struct clip_tree_node *const *)b;
	size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
	int c = memcmp(x->name, y->name, n);
	if (c)
		return c;
	return (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static int cmp_xattrs(const void *a, const void *b)
{
	return strcmp(((const struct clip_tree_xattr *)a)->name,
		      ((const struct clip_tree_xattr *)b)->name);
}

int clip_tree_finish(struct clip_tree *tree, struct clip_err *err)
{
	if (tree->finished)
		return 0;
	/* Breadth-first: directories' entries end up contiguous per level and
	 * inode numbers grow with depth, which keeps lookups local in the
	 * archive. */
	size_t cap = tree->nnodes + 1;
	cleanup_free struct clip_tree_node **queue = malloc(cap * sizeof(*queue));
	cleanup_free struct clip_tree_node **inodes = malloc(cap * sizeof(*inodes));
	if (queue == NULL || inodes == NULL)
		return clip_err_nomem(err);
	/* Mark every inode unnumbered (several nodes may share one). */
	size_t head = 0, tail = 0, ninodes = 0;
	queue[tail++] = tree->root;
	while (head < tail) {
		struct clip_tree_node *n = queue[head++];
		n->inode->ino = UINT32_MAX;
		for (struct clip_tree_node *c = n->first_child; c; c = c->next_sibling)
			queue[tail++] = c;
	}
	head = 0;
	tail = 0;
	queue[tail++] = tree->root;
	while (head < tail) {
		struct clip_tree_node *n = queue[head++];
		struct clip_tree_inode *ino = n->inode;
		if (ino->ino == UINT32_MAX) {
			ino->ino = (uint32_t)ninodes;
			inodes[ninodes++] = n;
		}
		if (ino->nxattrs > 1)
			qsort(ino->xattrs, ino->nxattrs, sizeof(*ino->xattrs), cmp_xattrs);
		if (!node_is_dir(n)) {
			ino->nlink = ino->refs;
			continue;
		}
		size_t nc = 0, nsubdirs = 0;
		for (struct clip_tree_node *c = n->first_child; c; c = c->next_sibling) {
			nc++;
			nsubdirs += node_is_dir(c);
		}
		ino->nlink = (uint32_t)(2 + nsubdirs);
		if (nc) {
			n->children = malloc(nc * sizeof(*n->children));
			if (n->children == NULL)
				return clip_err_nomem(err);
			size_t i = 0;
			for (struct clip_tree_node *c = n->first_child; c; c = c->next_sibling)
				n->children[i++] = c;
			qsort(n->children, nc, sizeof(*n->children), cmp_nodes);
			n->nchildren = nc;
			for (i = 0; i < nc; i++)
				queue[tail++] = n->children[i];
		}
	}
	tree->inode_nodes = clip_steal(inodes);
	tree->ninodes = ninodes;
	tree->finished = true;
	return 0;
}

const struct clip_tree_node *clip_tree_root(const struct clip_tree *tree)
{
	return tree->root;
}

size_t clip_tree_inode_count(const struct clip_tree *tree)
{
	return tree->ninodes;
}

const struct clip_tree_node *clip_tree_inode_node(const struct clip_tree *tree, uint32_t ino)
{
	return ino < tree->ninodes ? tree->inode_nodes[ino] : NULL;
}

size_t clip_tree_entry_count(const struct clip_tree *tree)
{
	return tree->nnodes;
}

void clip_tree_free(struct clip_tree *tree)
{
	if (tree == NULL)
		return;
	while (tree->root->first_child)
		node_remove(tree, tree->root->first_child);
	inode_unref(tree->root->inode);
	free(tree->root->children);
	free(tree->root->name);
	free(tree->root);
	free(tree->buckets);
	free(tree->inode_nodes);
	free(tree);
}
