/* The disk cache: uncompressed layer data in fixed-size chunk files.
 *
 * Layout under the cache directory DIR (docs/DISKCACHE.md has it byte by byte):
 *
 *   DIR/lock                        flock()ed exclusively while scanning/evicting;
 *                                   its first 8 bytes are the shared usage counter
 *   DIR/tmp/<pid>-<counter>-<rand>  chunks being written, renamed into place
 *   DIR/chunks/<ab>/<layer>/<index> one chunk: <layer> is the 64-hex layer digest,
 *                                   <ab> its first two hex digits (256 fan-out
 *                                   directories so no directory grows huge),
 *                                   <index> the chunk index as 16 lowercase hex
 *
 * A chunk file is a 64-byte header (magic "CLIPCHK1", version, header size,
 * chunk index, payload length, SHA-256 of the payload) followed by the payload.
 *
 * Writing: the chunk is written to DIR/tmp and renamed into place. tmp/ is on
 * the same filesystem, so rename() is atomic: a reader sees the whole file or
 * none, and two processes putting the same chunk just replace one good file
 * with an identical one. Chunks are not fsync()ed: after a power loss a
 * renamed file may hold zeros or be short, but every process verifies a chunk
 * in full (length and SHA-256) before it first serves it, so such a file is
 * found and removed instead of served. An fsync per chunk would cost a journal
 * commit per megabyte fetched for no gain in what is served.
 *
 * Reading: the first read of a chunk through a cache handle reads the whole
 * file, checks every header field against what the caller expects and the
 * payload's SHA-256 against the header (and against `expected` when given).
 * The chunk is then remembered in a per-handle set (hash table under a mutex),
 * keyed by layer and index and holding the file's device, inode, size and
 * hash; later reads fstat() the file, and when it is still that file, pread()
 * only the range asked for. A replaced file (other inode) or one of another
 * size is verified again. A bad chunk is unlinked (only if the path still
 * names the file that was checked), counted as corrupt and reported as absent.
 *
 * LRU: a chunk's use time is its file's mtime, so every process sharing the
 * directory sees it. A read touches it (futimens) only when it is over a
 * minute old, which keeps hot chunks from costing a metadata write per read.
 *
 * Bound: the usage of the whole directory is one counter shared by every
 * process using it: the first 8 bytes of DIR/lock (host byte order), mapped
 * MAP_SHARED and updated with atomic adds, so that a put costs no system call
 * for accounting and every process sees every other's puts at once. A put
 * adds its file's charge; one that takes the counter over max_bytes rescans
 * the directory under the flock and unlinks the oldest chunks until the total
 * is at most 90% of max_bytes. The 10% slack means a rescan about once per 10%
 * of the bound, not on every put; in between the cache exceeds the bound by at
 * most one chunk per writer in flight. A rescan does not store its total but
 * adds (total - counter when the scan started): puts that land during the scan
 * may then be counted twice, which errs towards evicting a little early and is
 * corrected by the next rescan, and a counter that drifted (a writer killed
 * between rename and add, files removed by hand, a fresh lock file) is brought
 * back to the truth. A bounded handle rescans at open too. Each file is
 * charged its allocated size (st_blocks * 512, or st_size when larger);
 * directories are not charged. Eviction never touches tmp/ except to remove
 * files untouched for STALE_TMP_SEC (left by a killed writer): a live writer
 * finishes a chunk in well under a second, so it cannot lose its file.
 *
 * Free space: a put first asks fstatvfs whether the chunk fits with the
 * reserve left over; if not, or if the write fails with ENOSPC or EDQUOT, it
 * waits for the evict lock (another thread may be making room already),
 * looks again, and rescans with a target that frees the shortfall plus 10%
 * of the cache, then writes (once more). The cache then counts as full for
 * a while (clip_diskcache_full), so callers know what they put may go soon.
 *
 * Threads: reads and puts run concurrently; the verified set is under `lock`,
 * counters are atomics, one thread of a handle at a time evicts (the flock
 * serialises handles and processes).
 */
#include "clip/diskcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "sha256.h"
#include "util.h"

/* Chunk file header: 64 bytes, little-endian. */
#define CHUNK_MAGIC	   "CLIPCHK1"
#define CHUNK_MAGIC_LEN	   8
#define CHUNK_VERSION	   1u
#define CHUNK_HDR_MAGIC	   0  /* 8 bytes */
#define CHUNK_HDR_VERSION  8  /* u32 */
#define CHUNK_HDR_SIZE_FLD 12 /* u32, 64 */
#define CHUNK_HDR_INDEX	   16 /* u64, the chunk index */
#define CHUNK_HDR_LENGTH   24 /* u64, payload bytes */
#define CHUNK_HDR_SHA256   32 /* 32 bytes, SHA-256 of the payload */
#define CHUNK_HDR_SIZE	   64

#define LAYER_HEX_LEN 64
#define INDEX_HEX_LEN 16
/* "chunks/ab/<64 hex>/<16 hex>" and its NUL */
#define CHUNK_PATH_MAX (7 + 3 + LAYER_HEX_LEN + 1 + INDEX_HEX_LEN + 1)

#define TOUCH_INTERVAL_SEC 60
#define LOCK_FILE_SIZE	   4096 /* one page, so the mapping never reaches past EOF */
#define STALE_TMP_SEC	   3600
#define VERIFY_BLOCK	   (256u << 10)
#define RENAME_ATTEMPTS	   4
/* Free space a put leaves to the filesystem's other users: 1% of it, at most
 * FREE_RESERVE_MAX. */
#define FREE_RESERVE_MAX (64ull << 20)
/* How long the cache counts as full after it last had to evict or could not
 * keep a chunk (clip_diskcache_full). */
#define FULL_WINDOW_NS (30ull * 1000000000u)

struct verified {
	struct verified *next;
	unsigned char layer[32];
	uint64_t chunk;
	dev_t dev;
	ino_t ino;
	off_t size;
	unsigned char sha[32];
};

struct clip_diskcache {
	char *dir;
	int root_fd;	 /* DIR */
	int lock_fd;	 /* DIR/lock, flock()ed while scanning */
	uint64_t *usage; /* DIR/lock mapped shared: the directory's usage */
	uint64_t max_bytes;

	pthread_mutex_t lock; /* guards the verified set */
	struct verified **buckets;
	size_t nbuckets, nverified;

	pthread_mutex_t evict_lock; /* one evicting thread at a time */
	uint64_t tmp_counter;	    /* atomic */
	uint64_t full_at;	    /* atomic: CLOCK_MONOTONIC ns it was last full; 0 never */
	struct clip_diskcache_stats stats; /* fields updated atomically; usage unused */
};

/* ---- small helpers ------------------------------------------------------- */

static void stat_add(uint64_t *field, uint64_t n)
{
	__atomic_add_fetch(field, n, __ATOMIC_RELAXED);
}

static uint64_t monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + 1; /* never 0 */
}

/* The cache just had to evict, or could not keep a chunk. */
static void mark_full(struct clip_diskcache *c)
{
	__atomic_store_n(&c->full_at, monotonic_ns(), __ATOMIC_RELAXED);
}

static void usage_sub(struct clip_diskcache *c, uint64_t n)
{
	uint64_t cur = __atomic_load_n(c->usage, __ATOMIC_RELAXED);
	uint64_t next;
	do
		next = cur > n ? cur - n : 0;
	while (!__atomic_compare_exchange_n(c->usage, &cur, next, false, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED));
}

/* What a file costs on disk: its allocated blocks, or its length when that is
 * larger (a sparse or not yet allocated file still will be). */
static uint64_t file_charge(const struct stat *st)
{
	uint64_t blocks = (uint64_t)st->st_blocks * 512;
	uint64_t size = st->st_size > 0 ? (uint64_t)st->st_size : 0;
	return blocks > size ? blocks : size;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

/* `s` is exactly `n` lowercase hex digits (followed by NUL when terminated). */
static bool is_hex(const char *s, size_t n, bool terminated)
{
	for (size_t i = 0; i < n; i++)
		if (hexval(s[i]) < 0)
			return false;
	return !terminated || s[n] == '\0';
}

static void layer_to_bin(const char *hex, unsigned char bin[32])
{
	for (int i = 0; i < 32; i++)
		bin[i] = (unsigned char)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
}

static int check_layer(const char *layer_hex, struct clip_err *err)
{
	if (layer_hex == NULL || strnlen(layer_hex, LAYER_HEX_LEN + 1) != LAYER_HEX_LEN ||
	    !is_hex(layer_hex, LAYER_HEX_LEN, true))
		return clip_err_set(err, EINVAL,
				    "disk cache: layer \"%.80s\" is not 64 lowercase hex",
				    layer_hex ? layer_hex : "(null)");
	return 0;
}

static void chunk_path(char out[CHUNK_PATH_MAX], const char *layer_hex, uint64_t chunk)
{
	snprintf(out, CHUNK_PATH_MAX, "chunks/%.2s/%s/%016llx", layer_hex, layer_hex,
		 (unsigned long long)chunk);
}

static int mkdir_at(int dirfd, const char *path)
{
	if (mkdirat(dirfd, path, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* mkdir -p for an absolute or relative path. */
static int mkdir_parents(const char *path)
{
	cleanup_free char *copy = strdup(path);
	if (copy == NULL)
		return -ENOMEM;
	for (char *p = copy + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		int rc = mkdir_at(AT_FDCWD, copy);
		*p = '/';
		if (rc < 0)
			return rc;
	}
	return mkdir_at(AT_FDCWD, copy);
}

/* 1 when all `len` bytes at `off` were read, 0 when the file ends first,
 * or -errno. */
static int pread_full(int fd, void *buf, size_t len, off_t off)
{
	ssize_t n = clip_pread_full(fd, buf, len, (uint64_t)off);
	return n < 0 ? (int)n : (int)((size_t)n == len);
}

/* ---- the verified set ---------------------------------------------------- */

static size_t verified_bucket(const struct clip_diskcache *c, const unsigned char layer[32],
			      uint64_t chunk)
{
	uint64_t h = clip_fnv1a(CLIP_FNV1A_SEED, layer, 32);
	h = clip_fnv1a(h, &chunk, sizeof(chunk));
	return (size_t)(h & (c->nbuckets - 1));
}

/* Caller holds c->lock. */
static struct verified **verified_find(struct clip_diskcache *c, const unsigned char layer[32],
				       uint64_t chunk)
{
	struct verified **pp = &c->buckets[verified_bucket(c, layer, chunk)];
	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->chunk == chunk && memcmp((*pp)->layer, layer, 32) == 0)
			return pp;
	return pp;
}

/* Caller holds c->lock. Out of memory only means the chunk is verified again
 * next time, so it is not an error. */
static void verified_grow(struct clip_diskcache *c)
{
	size_t n = c->nbuckets * 2;
	struct verified **b = calloc(n, sizeof(*b));
	if (b == NULL)
		return;
	for (size_t i = 0; i < c->nbuckets; i++) {
		struct verified *v = c->buckets[i];
		while (v) {
			struct verified *next = v->next;
			uint64_t h = clip_fnv1a(CLIP_FNV1A_SEED, v->layer, 32);
			h = clip_fnv1a(h, &v->chunk, sizeof(v->chunk));
			v->next = b[h & (n - 1)];
			b[h & (n - 1)] = v;
			v = next;
		}
	}
	free(c->buckets);
	c->buckets = b;
	c->nbuckets = n;
}

static void verified_add(struct clip_diskcache *c, const unsigned char layer[32], uint64_t chunk,
			 const struct stat *st, const unsigned char sha[32])
{
	pthread_mutex_lock(&c->lock);
	struct verified **pp = verified_find(c, layer, chunk);
	struct verified *v = *pp;
	if (v == NULL) {
		v = calloc(1, sizeof(*v));
		if (v == NULL)
			goto out;
		memcpy(v->layer, layer, 32);
		v->chunk = chunk;
		*pp = v;
		c->nverified++;
	}
	v->dev = st->st_dev;
	v->ino = st->st_ino;
	v->size = st->st_size;
	memcpy(v->sha, sha, 32);
	if (c->nverified > c->nbuckets)
		verified_grow(c);
out:
	pthread_mutex_unlock(&c->lock);
}

static void verified_remove(struct clip_diskcache *c, const unsigned char layer[32], uint64_t chunk)
{
	pthread_mutex_lock(&c->lock);
	struct verified **pp = verified_find(c, layer, chunk);
	struct verified *v = *pp;
	if (v) {
		*pp = v->next;
		free(v);
		c->nverified--;
	}
	pthread_mutex_unlock(&c->lock);
}

/* Whether the file `st` is the one verified for (layer, chunk), with hash
 * `expected` when given. An inode number reused by a later put of the same
 * chunk also matches; that is safe because only a whole, renamed file can
 * take the path, and a chunk's bytes are fixed by its layer and index. */
static bool verified_match(struct clip_diskcache *c, const unsigned char layer[32], uint64_t chunk,
			   const struct stat *st, const unsigned char *expected)
{
	pthread_mutex_lock(&c->lock);
	struct verified *v = *verified_find(c, layer, chunk);
	bool ok = v && v->dev == st->st_dev && v->ino == st->st_ino && v->size == st->st_size &&
		  (expected == NULL || memcmp(v->sha, expected, 32) == 0);
	pthread_mutex_unlock(&c->lock);
	return ok;
}

/* ---- scanning and eviction ----------------------------------------------- */

struct scan_entry {
	struct timespec mtime;
	uint64_t charge;
	char path[CHUNK_PATH_MAX - 7]; /* "ab/<layer>/<index>", relative to chunks/ */
};

struct scan {
	struct scan_entry *entries;
	size_t n, cap;
	uint64_t total; /* chunk files and temporary files */
};

static int scan_push(struct scan *s, const struct stat *st, const char *prefix, const char *layer,
		     const char *name)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 256;
		struct scan_entry *e = realloc(s->entries, cap * sizeof(*e));
		if (e == NULL)
			return -ENOMEM;
		s->entries = e;
		s->cap = cap;
	}
	struct scan_entry *e = &s->entries[s->n++];
	e->mtime = st->st_mtim;
	e->charge = file_charge(st);
	/* names already checked: 2, 64 and 16 hex digits */
	char *p = e->path;
	memcpy(p, prefix, 2);
	p[2] = '/';
	memcpy(p + 3, layer, LAYER_HEX_LEN);
	p[3 + LAYER_HEX_LEN] = '/';
	memcpy(p + 4 + LAYER_HEX_LEN, name, INDEX_HEX_LEN + 1);
	return 0;
}

static void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}
#define cleanup_dir __attribute__((cleanup(closedirp)))

/* Open directory `name` under `dirfd` for listing; NULL with errno set. */
static DIR *open_dir_at(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return NULL;
	DIR *d = fdopendir(fd);
	if (d == NULL) {
		int e = errno;
		close(fd);
		errno = e;
	}
	return d;
}

/* Chunk files of one layer directory. Entries that vanish while listed (a
 * reader removing a bad chunk) are skipped; names that are not ours are left
 * alone and not charged. */
/* Stat entry `name` of `d`: 1 for a regular file, 0 for anything else or an
 * entry gone meanwhile, -errno. */
static int stat_regular(DIR *d, const char *name, struct stat *st)
{
	if (fstatat(dirfd(d), name, st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	return S_ISREG(st->st_mode) ? 1 : 0;
}

static int scan_layer(struct scan *s, int prefix_fd, const char *prefix, const char *layer)
{
	cleanup_dir DIR *d = open_dir_at(prefix_fd, layer);
	if (d == NULL)
		return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!is_hex(de->d_name, INDEX_HEX_LEN, true))
			continue;
		struct stat st;
		int rc = stat_regular(d, de->d_name, &st);
		if (rc <= 0) {
			if (rc < 0)
				return rc;
			continue;
		}
		rc = scan_push(s, &st, prefix, layer, de->d_name);
		if (rc < 0)
			return rc;
		s->total += file_charge(&st);
	}
	return 0;
}

static int scan_chunks(struct scan *s, int root_fd)
{
	cleanup_dir DIR *top = open_dir_at(root_fd, "chunks");
	if (top == NULL)
		return errno == ENOENT ? 0 : -errno;
	struct dirent *pe;
	while ((pe = readdir(top)) != NULL) {
		if (!is_hex(pe->d_name, 2, true))
			continue;
		cleanup_dir DIR *pd = open_dir_at(dirfd(top), pe->d_name);
		if (pd == NULL) {
			if (errno == ENOENT || errno == ENOTDIR)
				continue;
			return -errno;
		}
		struct dirent *le;
		while ((le = readdir(pd)) != NULL) {
			if (!is_hex(le->d_name, LAYER_HEX_LEN, true) ||
			    memcmp(le->d_name, pe->d_name, 2) != 0)
				continue;
			int rc = scan_layer(s, dirfd(pd), pe->d_name, le->d_name);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

/* Charge temporary files (they use disk too) and remove those a killed writer
 * left behind. */
static int scan_tmp(struct scan *s, int root_fd)
{
	cleanup_dir DIR *d = open_dir_at(root_fd, "tmp");
	if (d == NULL)
		return errno == ENOENT ? 0 : -errno;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		struct stat st;
		int rc = stat_regular(d, de->d_name, &st);
		if (rc <= 0) {
			if (rc < 0)
				return rc;
			continue;
		}
		if (now.tv_sec - st.st_mtim.tv_sec > STALE_TMP_SEC &&
		    unlinkat(dirfd(d), de->d_name, 0) == 0)
			continue;
		s->total += file_charge(&st);
	}
	return 0;
}

static int by_mtime(const void *a, const void *b)
{
	const struct scan_entry *x = a, *y = b;
	if (x->mtime.tv_sec != y->mtime.tv_sec)
		return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
	if (x->mtime.tv_nsec != y->mtime.tv_nsec)
		return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
	return strcmp(x->path, y->path);
}

/* Remove the oldest chunks of `s` until its total is at most `target`.
 * Caller holds the flock. */
static int evict_oldest(struct clip_diskcache *c, struct scan *s, uint64_t target)
{
	int chunks_fd = openat(c->root_fd, "chunks", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (chunks_fd < 0)
		return -errno;
	qsort(s->entries, s->n, sizeof(*s->entries), by_mtime);
	int rc = 0;
	size_t i;
	for (i = 0; i < s->n && s->total > target; i++) {
		struct scan_entry *e = &s->entries[i];
		if (unlinkat(chunks_fd, e->path, 0) < 0 && errno != ENOENT) {
			rc = -errno;
			break;
		}
		s->total -= e->charge;
		stat_add(&c->stats.evicted, 1);
		/* "ab/<layer>/<index>" */
		unsigned char layer[32];
		layer_to_bin(e->path + 3, layer);
		verified_remove(c, layer, strtoull(e->path + 3 + LAYER_HEX_LEN + 1, NULL, 16));
	}
	if (i > 0)
		mark_full(c);
	/* Drop layer directories left empty so that they do not pile up; a put
	 * racing with this recreates its directory (see put_rename). */
	for (size_t j = 0; j < i; j++) {
		char *slash = s->entries[j].path + 2 + 1 + LAYER_HEX_LEN;
		*slash = '\0';
		unlinkat(chunks_fd, s->entries[j].path, AT_REMOVEDIR);
	}
	close(chunks_fd);
	return rc;
}

/* Bytes free for the cache's files on its filesystem, and the share of the
 * filesystem a put leaves free for others. An unknown answer is plenty of
 * room and no reserve: only a failed write then makes room. */
static void free_space(struct clip_diskcache *c, uint64_t *avail, uint64_t *reserve)
{
	struct statvfs vfs;
	if (fstatvfs(c->root_fd, &vfs) < 0) {
		*avail = UINT64_MAX;
		*reserve = 0;
		return;
	}
	*avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	*reserve = (uint64_t)vfs.f_blocks * vfs.f_frsize / 100;
	if (*reserve > FREE_RESERVE_MAX)
		*reserve = FREE_RESERVE_MAX;
}

/* Whether a put of `need` bytes leaves the filesystem's reserve free. */
static bool room_for(struct clip_diskcache *c, uint64_t need)
{
	uint64_t avail, reserve;
	free_space(c, &avail, &reserve);
	return avail >= reserve && avail - reserve >= need;
}

/* What a scan's total must come down to: 90% of the bound when over it, and,
 * when a put needs `need` bytes, low enough to free what the filesystem
 * lacks for them and its reserve. `forced` (a write failed for want of
 * space, which a quota can say where statvfs does not) frees at least `need`
 * whatever statvfs says. Room is made with 10% of the cache to spare, so
 * that the next few puts do not each scan again. */
static uint64_t evict_target(struct clip_diskcache *c, const struct scan *s, uint64_t need,
			     bool forced)
{
	uint64_t target = UINT64_MAX;
	if (c->max_bytes && s->total > c->max_bytes)
		target = c->max_bytes / 10 * 9 + c->max_bytes % 10 * 9 / 10;
	if (need == 0)
		return target;
	uint64_t avail, reserve;
	free_space(c, &avail, &reserve);
	uint64_t lacking = forced ? need : 0;
	if (avail < need + reserve && need + reserve - avail > lacking)
		lacking = need + reserve - avail;
	if (lacking == 0)
		return target;
	lacking += s->total / 10;
	uint64_t room_target = s->total > lacking ? s->total - lacking : 0;
	return room_target < target ? room_target : target;
}

/* Rescan the cache under the flock, remove stale temporary files, evict down
 * to what evict_target says (for the bound, and for `need` bytes of free
 * space when not 0), and correct the shared usage counter by the difference
 * between what is left and what it held at the start. */
static int rescan(struct clip_diskcache *c, uint64_t need, bool forced, struct clip_err *err)
{
	struct scan s = { 0 };
	int rc;
	while ((rc = flock(c->lock_fd, LOCK_EX)) < 0 && errno == EINTR)
		;
	if (rc < 0)
		return clip_err_errno(err, errno, "disk cache %s: lock", c->dir);
	uint64_t before = __atomic_load_n(c->usage, __ATOMIC_RELAXED);
	rc = scan_chunks(&s, c->root_fd);
	if (rc == 0)
		rc = scan_tmp(&s, c->root_fd);
	uint64_t target = rc == 0 ? evict_target(c, &s, need, forced) : UINT64_MAX;
	if (s.total > target)
		rc = evict_oldest(c, &s, target);
	flock(c->lock_fd, LOCK_UN);
	if (rc < 0) {
		free(s.entries);
		return clip_err_errno(err, rc, "disk cache %s: scan", c->dir);
	}
	/* Unsigned wrap-around makes this right whichever way the total moved;
	 * a result that would go below zero (files removed during the scan)
	 * is clamped. */
	uint64_t cur = __atomic_load_n(c->usage, __ATOMIC_RELAXED), next;
	do {
		uint64_t during = cur - before; /* added by puts while scanning */
		next = during > UINT64_MAX / 2 ? s.total : s.total + during;
	} while (!__atomic_compare_exchange_n(c->usage, &cur, next, false, __ATOMIC_RELAXED,
					      __ATOMIC_RELAXED));
	free(s.entries);
	return 0;
}

/* After a put: rescan when the directory is over the bound. A thread that
 * finds another one of this handle evicting leaves it to that one. */
static int maybe_evict(struct clip_diskcache *c, struct clip_err *err)
{
	if (c->max_bytes == 0 || __atomic_load_n(c->usage, __ATOMIC_RELAXED) <= c->max_bytes)
		return 0;
	if (pthread_mutex_trylock(&c->evict_lock) != 0)
		return 0;
	int rc = rescan(c, 0, false, err);
	pthread_mutex_unlock(&c->evict_lock);
	return rc;
}

/* Before a put of `need` bytes that the filesystem has no room for (or, with
 * `forced`, after one failed for want of space): evict the oldest chunks to
 * make room. Unlike maybe_evict it waits for a thread evicting already, and
 * then looks whether that one made room enough. */
static int make_room(struct clip_diskcache *c, uint64_t need, bool forced, struct clip_err *err)
{
	pthread_mutex_lock(&c->evict_lock);
	int rc = 0;
	if (forced || !room_for(c, need))
		rc = rescan(c, need, forced, err);
	pthread_mutex_unlock(&c->evict_lock);
	return rc;
}

/* ---- open / close -------------------------------------------------------- */

int clip_diskcache_open(const struct clip_diskcache_options *options, struct clip_diskcache **out,
			struct clip_err *err)
{
	if (options == NULL || options->dir == NULL || options->dir[0] == '\0')
		return clip_err_set(err, EINVAL, "disk cache: no directory given");
	const char *dir = options->dir;
	int rc = mkdir_parents(dir);
	if (rc < 0)
		return clip_err_errno(err, rc, "disk cache %s: create", dir);
	struct clip_diskcache *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return clip_err_nomem(err);
	c->root_fd = c->lock_fd = -1;
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->evict_lock, NULL);
	c->max_bytes = options->max_bytes;
	c->nbuckets = 1024;
	c->dir = strdup(dir);
	c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
	if (c->dir == NULL || c->buckets == NULL) {
		clip_diskcache_close(c);
		return clip_err_nomem(err);
	}
	c->root_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->root_fd < 0) {
		rc = clip_err_errno(err, errno, "disk cache %s", dir);
		clip_diskcache_close(c);
		return rc;
	}
	if ((rc = mkdir_at(c->root_fd, "chunks")) < 0 || (rc = mkdir_at(c->root_fd, "tmp")) < 0) {
		rc = clip_err_errno(err, rc, "disk cache %s: create subdirectory", dir);
		clip_diskcache_close(c);
		return rc;
	}
	c->lock_fd = openat(c->root_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	void *map = MAP_FAILED;
	/* Only ever grown, so another process's mapping never loses its page;
	 * two processes growing it at once both make it the same size. Its
	 * block is allocated here, not left a hole: the first store through the
	 * mapping would otherwise allocate it, and on a full filesystem that is
	 * a SIGBUS instead of an error. (posix_fallocate returns its error.) */
	if (c->lock_fd < 0 || (errno = posix_fallocate(c->lock_fd, 0, LOCK_FILE_SIZE)) != 0 ||
	    (map = mmap(NULL, LOCK_FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, c->lock_fd, 0)) ==
		    MAP_FAILED) {
		rc = clip_err_errno(err, errno, "disk cache %s/lock", dir);
		clip_diskcache_close(c);
		return rc;
	}
	c->usage = map;
	if (c->max_bytes) {
		rc = rescan(c, 0, false, err);
		if (rc < 0) {
			clip_diskcache_close(c);
			return rc;
		}
	}
	*out = c;
	return 0;
}

void clip_diskcache_close(struct clip_diskcache *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; c->buckets && i < c->nbuckets; i++) {
		struct verified *v = c->buckets[i];
		while (v) {
			struct verified *next = v->next;
			free(v);
			v = next;
		}
	}
	free(c->buckets);
	if (c->usage)
		munmap(c->usage, LOCK_FILE_SIZE);
	if (c->root_fd >= 0)
		close(c->root_fd);
	if (c->lock_fd >= 0)
		close(c->lock_fd);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->evict_lock);
	free(c->dir);
	free(c);
}

bool clip_diskcache_full(const struct clip_diskcache *c)
{
	uint64_t at = __atomic_load_n(&c->full_at, __ATOMIC_RELAXED);
	return at != 0 && monotonic_ns() - at < FULL_WINDOW_NS;
}

void clip_diskcache_stats(const struct clip_diskcache *c, struct clip_diskcache_stats *out)
{
	out->hits = __atomic_load_n(&c->stats.hits, __ATOMIC_RELAXED);
	out->misses = __atomic_load_n(&c->stats.misses, __ATOMIC_RELAXED);
	out->bytes_read = __atomic_load_n(&c->stats.bytes_read, __ATOMIC_RELAXED);
	out->bytes_written = __atomic_load_n(&c->stats.bytes_written, __ATOMIC_RELAXED);
	out->corrupt = __atomic_load_n(&c->stats.corrupt, __ATOMIC_RELAXED);
	out->evicted = __atomic_load_n(&c->stats.evicted, __ATOMIC_RELAXED);
	out->declined = __atomic_load_n(&c->stats.declined, __ATOMIC_RELAXED);
	out->usage = __atomic_load_n(c->usage, __ATOMIC_RELAXED);
}

/* ---- read ---------------------------------------------------------------- */

/* A chunk found bad: forget it, unlink it if `path` still names the file that
 * was checked (another process may have just renamed a good copy over it),
 * and report it absent. */
static ssize_t discard(struct clip_diskcache *c, const unsigned char layer[32], uint64_t chunk,
		       const char *path, const struct stat *st, const char *why,
		       struct clip_err *err)
{
	verified_remove(c, layer, chunk);
	struct stat now;
	if (fstatat(c->root_fd, path, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_dev == st->st_dev &&
	    now.st_ino == st->st_ino && unlinkat(c->root_fd, path, 0) == 0)
		usage_sub(c, file_charge(st));
	stat_add(&c->stats.corrupt, 1);
	stat_add(&c->stats.misses, 1);
	return clip_err_set(err, ENOENT, "disk cache %s/%s: %s; removed", c->dir, path, why);
}

/* Check the header of a chunk file against what the caller expects; NULL when
 * it is right, the reason otherwise. */
static const char *check_header(const unsigned char hdr[CHUNK_HDR_SIZE], uint64_t chunk,
				size_t chunk_len, const unsigned char *expected)
{
	if (memcmp(hdr + CHUNK_HDR_MAGIC, CHUNK_MAGIC, CHUNK_MAGIC_LEN) != 0)
		return "bad magic";
	if (clip_get_le32(hdr + CHUNK_HDR_VERSION) != CHUNK_VERSION)
		return "unknown version";
	if (clip_get_le32(hdr + CHUNK_HDR_SIZE_FLD) != CHUNK_HDR_SIZE)
		return "bad header size";
	if (clip_get_le64(hdr + CHUNK_HDR_INDEX) != chunk)
		return "header names another chunk";
	if (clip_get_le64(hdr + CHUNK_HDR_LENGTH) != chunk_len)
		return "payload length differs from the chunk's";
	if (expected && memcmp(hdr + CHUNK_HDR_SHA256, expected, 32) != 0)
		return "hash differs from the archive's";
	return NULL;
}

/* Read the whole file, hashing the payload and copying [offset, offset+len)
 * of it into buf. Returns 1 when the file is good, 0 when it is not (reason in
 * *why), a negative errno for an I/O error. */
static int verify_copy(int fd, uint64_t chunk, size_t chunk_len, const unsigned char *expected,
		       void *buf, size_t len, size_t offset, unsigned char sha[32],
		       const char **why)
{
	unsigned char hdr[CHUNK_HDR_SIZE];
	int rc = pread_full(fd, hdr, sizeof(hdr), 0);
	if (rc <= 0) {
		*why = "truncated header";
		return rc;
	}
	if ((*why = check_header(hdr, chunk, chunk_len, expected)) != NULL)
		return 0;
	memcpy(sha, hdr + CHUNK_HDR_SHA256, 32);

	cleanup_free unsigned char *block = malloc(VERIFY_BLOCK);
	if (block == NULL)
		return -ENOMEM;
	struct clip_sha256 md;
	clip_sha256_init(&md);
	rc = 1;
	for (size_t pos = 0; rc == 1 && pos < chunk_len;) {
		size_t n = chunk_len - pos < VERIFY_BLOCK ? chunk_len - pos : VERIFY_BLOCK;
		rc = pread_full(fd, block, n, (off_t)(CHUNK_HDR_SIZE + pos));
		if (rc == 0) {
			*why = "truncated payload";
			break;
		}
		if (rc < 0)
			break;
		clip_sha256_update(&md, block, n);
		/* the part of [pos, pos+n) inside [offset, offset+len) */
		size_t lo = offset > pos ? offset : pos;
		size_t hi = offset + len < pos + n ? offset + len : pos + n;
		if (lo < hi)
			memcpy((char *)buf + (lo - offset), block + (lo - pos), hi - lo);
		pos += n;
	}
	unsigned char got[32];
	if (rc == 1)
		clip_sha256_final(&md, got);
	if (rc == 1 && memcmp(got, sha, 32) != 0) {
		*why = "payload does not match its hash";
		rc = 0;
	}
	return rc;
}

ssize_t clip_diskcache_read(struct clip_diskcache *c, const char *layer_hex, uint64_t chunk,
			    size_t chunk_len, const unsigned char expected[32], void *buf,
			    size_t len, size_t offset, struct clip_err *err)
{
	int rc = check_layer(layer_hex, err);
	if (rc < 0)
		return rc;
	if (offset > chunk_len || len > chunk_len - offset)
		return clip_err_set(err, EINVAL,
				    "disk cache: read of %zu bytes at %zu past chunk length %zu",
				    len, offset, chunk_len);
	char path[CHUNK_PATH_MAX];
	chunk_path(path, layer_hex, chunk);
	unsigned char layer[32];
	layer_to_bin(layer_hex, layer);

	cleanup_close int fd = openat(c->root_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT) {
			stat_add(&c->stats.misses, 1);
			return clip_err_set(err, ENOENT, "disk cache %s/%s: not cached", c->dir,
					    path);
		}
		return clip_err_errno(err, errno, "disk cache %s/%s", c->dir, path);
	}
	struct stat st;
	if (fstat(fd, &st) < 0)
		return clip_err_errno(err, errno, "disk cache %s/%s", c->dir, path);
	if (!S_ISREG(st.st_mode))
		return discard(c, layer, chunk, path, &st, "not a regular file", err);
	if ((uint64_t)st.st_size != CHUNK_HDR_SIZE + (uint64_t)chunk_len)
		return discard(c, layer, chunk, path, &st, "wrong length (torn or truncated)", err);

	if (verified_match(c, layer, chunk, &st, expected)) {
		rc = pread_full(fd, buf, len, (off_t)(CHUNK_HDR_SIZE + offset));
		if (rc == 0)
			return discard(c, layer, chunk, path, &st, "truncated while read", err);
	} else {
		unsigned char sha[32];
		const char *why = NULL;
		rc = verify_copy(fd, chunk, chunk_len, expected, buf, len, offset, sha, &why);
		if (rc == 0)
			return discard(c, layer, chunk, path, &st, why, err);
		if (rc > 0)
			verified_add(c, layer, chunk, &st, sha);
	}
	if (rc < 0)
		return clip_err_errno(err, rc, "disk cache %s/%s: read", c->dir, path);

	/* Keep the LRU clock cheap: touch at most once per TOUCH_INTERVAL_SEC. A
	 * failure (a cache shared read-only with another user) only costs the
	 * chunk its recency. */
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	if (now.tv_sec - st.st_mtim.tv_sec >= TOUCH_INTERVAL_SEC)
		(void)futimens(fd, NULL);

	stat_add(&c->stats.hits, 1);
	stat_add(&c->stats.bytes_read, len);
	return (ssize_t)len;
}

/* ---- put ----------------------------------------------------------------- */

static int make_layer_dirs(int root_fd, const char *layer_hex)
{
	char path[CHUNK_PATH_MAX];
	snprintf(path, sizeof(path), "chunks/%.2s", layer_hex);
	int rc = mkdir_at(root_fd, path);
	if (rc == 0) {
		snprintf(path, sizeof(path), "chunks/%.2s/%s", layer_hex, layer_hex);
		rc = mkdir_at(root_fd, path);
	}
	return rc;
}

/* Rename the finished temporary file into place. ENOENT means a directory on
 * the way is missing: never made, or removed by an eviction that emptied it
 * between our mkdir and rename; make it and try again. */
static int put_rename(int root_fd, const char *tmp, const char *path, const char *layer_hex)
{
	for (int attempt = 0; attempt < RENAME_ATTEMPTS; attempt++) {
		if (renameat(root_fd, tmp, root_fd, path) == 0)
			return 0;
		if (errno != ENOENT)
			return -errno;
		int rc = make_layer_dirs(root_fd, layer_hex);
		if (rc < 0)
			return rc;
	}
	return -ENOENT;
}

/* Whether chunk `chunk` of `layer_hex` is worth writing: not present already,
 * and not so large that it alone fills the bound (it would only evict
 * everything else and then itself). */
static bool put_wanted(struct clip_diskcache *c, const char *path, size_t len)
{
	if (c->max_bytes && CHUNK_HDR_SIZE + (uint64_t)len > c->max_bytes / 10 * 9) {
		stat_add(&c->stats.declined, 1);
		mark_full(c);
		return false;
	}
	struct stat st;
	return !(fstatat(c->root_fd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
		 (uint64_t)st.st_size == CHUNK_HDR_SIZE + (uint64_t)len);
}

/* Write chunk `chunk` (header and payload) to a new temporary file, named in
 * `tmp`, its stat in *st. */
static int write_tmp(struct clip_diskcache *c, uint64_t chunk, const void *data, size_t len,
		     const unsigned char hash[32], char tmp[64], struct stat *st,
		     struct clip_err *err)
{
	unsigned char hdr[CHUNK_HDR_SIZE] = { 0 };
	memcpy(hdr + CHUNK_HDR_MAGIC, CHUNK_MAGIC, CHUNK_MAGIC_LEN);
	clip_put_le32(hdr + CHUNK_HDR_VERSION, CHUNK_VERSION);
	clip_put_le32(hdr + CHUNK_HDR_SIZE_FLD, CHUNK_HDR_SIZE);
	clip_put_le64(hdr + CHUNK_HDR_INDEX, chunk);
	clip_put_le64(hdr + CHUNK_HDR_LENGTH, len);
	memcpy(hdr + CHUNK_HDR_SHA256, hash, 32);

	/* pid and counter make the name unique among live writers on this
	 * host; the random part covers a cache directory shared across hosts. */
	uint64_t rnd = 0;
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
		struct timespec t;
		clock_gettime(CLOCK_REALTIME, &t);
		rnd = (uint64_t)t.tv_nsec ^ ((uint64_t)t.tv_sec << 30);
	}
	snprintf(tmp, 64, "tmp/%ld-%llu-%016llx", (long)getpid(),
		 (unsigned long long)__atomic_add_fetch(&c->tmp_counter, 1, __ATOMIC_RELAXED),
		 (unsigned long long)rnd);
	cleanup_close int fd =
		openat(c->root_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return clip_err_errno(err, errno, "disk cache %s/%s: create", c->dir, tmp);
	int rc = clip_write_full(fd, hdr, sizeof(hdr));
	if (rc == 0)
		rc = clip_write_full(fd, data, len);
	if (rc == 0 && fstat(fd, st) < 0)
		rc = -errno;
	if (rc == 0 && close(clip_steal_fd(fd)) < 0)
		rc = -errno;
	if (rc < 0) {
		unlinkat(c->root_fd, tmp, 0);
		return clip_err_errno(err, rc, "disk cache %s/%s: write chunk", c->dir, tmp);
	}
	return 0;
}

/* Rename a written temporary file into place as chunk `chunk`, and account
 * for it. */
static int install_tmp(struct clip_diskcache *c, const char *tmp, const char *layer_hex,
		       uint64_t chunk, size_t len, const unsigned char hash[32],
		       const struct stat *st, struct clip_err *err)
{
	char path[CHUNK_PATH_MAX];
	chunk_path(path, layer_hex, chunk);
	int rc = put_rename(c->root_fd, tmp, path, layer_hex);
	if (rc < 0) {
		unlinkat(c->root_fd, tmp, 0);
		return clip_err_errno(err, rc, "disk cache %s/%s: write chunk", c->dir, path);
	}
	/* This process hashed these very bytes: its own reads of the chunk need
	 * not hash them again (another process verifies on its first read). */
	unsigned char layer[32];
	layer_to_bin(layer_hex, layer);
	verified_add(c, layer, chunk, st, hash);
	stat_add(&c->stats.bytes_written, len);
	stat_add(c->usage, file_charge(st));
	return maybe_evict(c, err);
}

static bool no_space(int rc)
{
	return rc == -ENOSPC || rc == -EDQUOT;
}

/* Write chunk `chunk` and rename it into place. */
static int put_once(struct clip_diskcache *c, const char *layer_hex, uint64_t chunk,
		    const void *data, size_t len, const unsigned char hash[32],
		    struct clip_err *err)
{
	char tmp[64];
	struct stat st;
	int rc = write_tmp(c, chunk, data, len, hash, tmp, &st, err);
	if (rc < 0)
		return rc;
	return install_tmp(c, tmp, layer_hex, chunk, len, hash, &st, err);
}

int clip_diskcache_put(struct clip_diskcache *c, const char *layer_hex, uint64_t chunk,
		       const void *data, size_t len, const unsigned char hash[32],
		       struct clip_err *err)
{
	int rc = check_layer(layer_hex, err);
	if (rc < 0)
		return rc;
	char path[CHUNK_PATH_MAX];
	chunk_path(path, layer_hex, chunk);
	if (!put_wanted(c, path, len))
		return 0;
	/* A filesystem short of room: the oldest chunks make way, and when even
	 * that leaves too little, this chunk is not kept rather than the
	 * filesystem's last bytes taken from its other users. */
	uint64_t need = CHUNK_HDR_SIZE + (uint64_t)len;
	if (!room_for(c, need)) {
		rc = make_room(c, need, false, err);
		if (rc < 0)
			return rc;
		if (!room_for(c, need)) {
			stat_add(&c->stats.declined, 1);
			mark_full(c);
			return 0;
		}
	}
	rc = put_once(c, layer_hex, chunk, data, len, hash, err);
	/* statvfs said there was room, but a quota or other writers say not:
	 * make room whatever statvfs says, and try once more. */
	struct clip_err e = { 0 };
	if (no_space(rc) && make_room(c, need, true, &e) == 0) {
		clip_err_clear(err);
		rc = put_once(c, layer_hex, chunk, data, len, hash, err);
	}
	if (rc < 0)
		mark_full(c);
	return rc;
}

/* ---- staging ------------------------------------------------------------- */

struct staged {
	uint64_t chunk;
	size_t len;
	unsigned char hash[32];
	struct stat st;
	char tmp[64];
};

struct clip_diskcache_staging {
	struct clip_diskcache *cache;
	char layer_hex[LAYER_HEX_LEN + 1];
	struct staged *chunks;
	size_t count, cap;
	uint64_t bytes; /* staged bytes, held to the cache's bound */
};

int clip_diskcache_stage_begin(struct clip_diskcache *c, const char *layer_hex,
			       struct clip_diskcache_staging **out, struct clip_err *err)
{
	int rc = check_layer(layer_hex, err);
	if (rc < 0)
		return rc;
	struct clip_diskcache_staging *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return clip_err_nomem(err);
	s->cache = c;
	memcpy(s->layer_hex, layer_hex, LAYER_HEX_LEN);
	*out = s;
	return 0;
}

int clip_diskcache_stage(struct clip_diskcache_staging *s, uint64_t chunk, const void *data,
			 size_t len, const unsigned char hash[32], struct clip_err *err)
{
	struct clip_diskcache *c = s->cache;
	char path[CHUNK_PATH_MAX];
	chunk_path(path, s->layer_hex, chunk);
	/* Staged files are not yet under eviction: past the bound, the rest of
	 * the layer is simply not kept. */
	uint64_t charge = CHUNK_HDR_SIZE + (uint64_t)len;
	if ((c->max_bytes && s->bytes + charge > c->max_bytes / 10 * 9) ||
	    !put_wanted(c, path, len))
		return 0;
	if (s->count == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 64;
		struct staged *p = realloc(s->chunks, cap * sizeof(*p));
		if (p == NULL)
			return clip_err_nomem(err);
		s->chunks = p;
		s->cap = cap;
	}
	struct staged *e = &s->chunks[s->count];
	int rc = write_tmp(c, chunk, data, len, hash, e->tmp, &e->st, err);
	struct clip_err room_err = { 0 };
	if (no_space(rc) && make_room(c, charge, true, &room_err) == 0) {
		clip_err_clear(err);
		rc = write_tmp(c, chunk, data, len, hash, e->tmp, &e->st, err);
	}
	if (rc < 0) {
		mark_full(c);
		return rc;
	}
	e->chunk = chunk;
	e->len = len;
	memcpy(e->hash, hash, 32);
	s->count++;
	s->bytes += charge;
	return 0;
}

int clip_diskcache_stage_publish(struct clip_diskcache_staging *s, struct clip_err *err)
{
	int rc = 0;
	size_t i = 0;
	for (; i < s->count && rc == 0; i++) {
		const struct staged *e = &s->chunks[i];
		rc = install_tmp(s->cache, e->tmp, s->layer_hex, e->chunk, e->len, e->hash, &e->st,
				 err);
	}
	/* What was not installed is discarded by clip_diskcache_stage_free. */
	memmove(s->chunks, s->chunks + i, (s->count - i) * sizeof(*s->chunks));
	s->count -= i;
	return rc;
}

void clip_diskcache_stage_free(struct clip_diskcache_staging *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->count; i++)
		unlinkat(s->cache->root_fd, s->chunks[i].tmp, 0);
	free(s->chunks);
	free(s);
}
