/* Small helpers shared by the library's .c files (not installed). */
#ifndef CLIP_UTIL_H
#define CLIP_UTIL_H

#include <endian.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static inline void clip_freep(void *p)
{
	free(*(void **)p);
}

static inline void clip_closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

/* Locals freed or closed when they leave scope; hand ownership on with
 * clip_steal() so that the cleanup sees NULL (or -1 for clip_steal_fd). */
#define cleanup_free  __attribute__((cleanup(clip_freep)))
#define cleanup_close __attribute__((cleanup(clip_closep)))
#define clip_steal(p)                                                                              \
	({                                                                                         \
		__typeof__(p) clip_steal_tmp_ = (p);                                               \
		(p) = NULL;                                                                        \
		clip_steal_tmp_;                                                                   \
	})
#define clip_steal_fd(fd)                                                                          \
	({                                                                                         \
		int clip_steal_tmp_ = (fd);                                                        \
		(fd) = -1;                                                                         \
		clip_steal_tmp_;                                                                   \
	})

/* A NUL-terminated copy of `len` bytes that need not be NUL-terminated
 * themselves (strndup may look past `len` for the NUL under sanitizers'
 * strict string checks). NULL when out of memory. */
static inline char *clip_strdup_len(const void *data, size_t len)
{
	char *s = malloc(len + 1);
	if (s) {
		memcpy(s, data, len);
		s[len] = '\0';
	}
	return s;
}

/* FNV-1a over `len` bytes, continuing from `h` (start with CLIP_FNV1A_SEED):
 * the hash of the in-memory hash tables (tree, archive string table). */
#define CLIP_FNV1A_SEED 1469598103934665603ull
static inline uint64_t clip_fnv1a(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ull;
	}
	return h;
}

/* Write all `len` bytes, retrying short writes and EINTR: 0 or -errno. */
int clip_write_full(int fd, const void *buf, size_t len);

/* Read up to `len` bytes at `offset`, retrying short reads and EINTR: the
 * bytes read (fewer only at the end of the file) or -errno. */
ssize_t clip_pread_full(int fd, void *buf, size_t len, uint64_t offset);

struct clip_err;

/* Write `len` bytes to `path` through a temporary file in the same directory,
 * fsync and rename, so that `path` is either the old file or the whole new
 * one (mode 0644 less the umask). 0, or -errno with `err` naming `path`. */
int clip_write_file_atomic(const char *path, const void *data, size_t len, struct clip_err *err);

#define CLIP_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Statistics counters are `_Atomic uint64_t` fields bumped with this one
 * macro: relaxed ordering, since a counter orders no other memory, and no
 * lock, so counting never contends with the work it counts. */
#define CLIP_COUNT(field, n)                                                                       \
	atomic_fetch_add_explicit(&(field), (uint64_t)(n), memory_order_relaxed)
#define CLIP_COUNTER_LOAD(field) atomic_load_explicit(&(field), memory_order_relaxed)

/* Little-endian stores and loads for the on-disk format. memcpy keeps them
 * safe on unaligned pointers into an mmap and lets the compiler make each one
 * a single move (the byte loop it replaced was a tenth of opening a large
 * archive); the byte swap is a no-op on little-endian hosts. */
static inline void clip_put_le16(void *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, sizeof(v));
}
static inline void clip_put_le32(void *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}
static inline void clip_put_le64(void *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}
static inline uint16_t clip_get_le16(const void *p)
{
	uint16_t v;
	memcpy(&v, p, sizeof(v));
	return le16toh(v);
}
static inline uint32_t clip_get_le32(const void *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}
static inline uint64_t clip_get_le64(const void *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

#endif
