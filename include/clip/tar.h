/* clip: streaming tar parser.
 *
 * Push-based: the caller feeds the uncompressed layer in pieces of any size,
 * in order, and the parser calls back once per archive member as soon as its
 * header (including any PAX / GNU long-name headers before it) is complete,
 * that is, at the moment the member's first data byte offset is known.
 * Member data is skipped, never copied, so feeding costs only header parsing.
 *
 * Understood: ustar and old-GNU headers, GNU long names and links ('L', 'K'),
 * PAX extended ('x') and global ('g') headers (path, linkpath, size, uid, gid,
 * uname, gname, mtime with sub-second part, SCHILY.xattr.*), octal and
 * base-256 numeric fields, header checksums (unsigned and signed sums).
 * Member types: regular ('0', '\0', '7'), hard link, symlink, char/block
 * device, directory, FIFO. Sparse members (GNU 'S', PAX GNU.sparse.*) and
 * unknown types are rejected with an error naming the member.
 *
 * Thread safety: a parser is one stream's state, to be used by one thread at
 * a time (the callback runs on the feeding thread); parsers share nothing,
 * so layers can be parsed in parallel, each with its own.
 */
#ifndef CLIP_TAR_H
#define CLIP_TAR_H

#include <stddef.h>
#include <stdint.h>

#include "clip/err.h"

/* Limits against hostile input; exceeding one is an error naming it. */
#define CLIP_TAR_MAX_PATH	4096	   /* bytes in a path or link target */
#define CLIP_TAR_MAX_EXT_HEADER (1u << 20) /* bytes of one PAX/GNU long header */
#define CLIP_TAR_MAX_XATTRS	1024	   /* xattrs on one member */
/* Xattr limits. A value larger than Linux's XATTR_SIZE_MAX could not be set
 * on any file. The per-member and per-layer totals stop a global ('g') PAX
 * header from multiplying: its xattrs apply to every later member, each of
 * which the tree copies, so 1 MiB of global xattrs over 100000 empty members
 * (kilobytes of gzip) would otherwise ask for 100 GB. Real layers carry a
 * few dozen bytes (security.capability, ACLs) on a few files. */
#define CLIP_TAR_MAX_XATTR_VALUE	65536u
#define CLIP_TAR_MAX_MEMBER_XATTR_BYTES (256u << 10)
#define CLIP_TAR_MAX_LAYER_XATTR_BYTES	(64ull << 20)

enum clip_tar_type {
	CLIP_TAR_REG = 1,
	CLIP_TAR_HARDLINK,
	CLIP_TAR_SYMLINK,
	CLIP_TAR_CHR,
	CLIP_TAR_BLK,
	CLIP_TAR_DIR,
	CLIP_TAR_FIFO,
};

struct clip_tar_xattr {
	const char *name;	    /* e.g. "security.capability" */
	const unsigned char *value; /* may contain NUL bytes */
	size_t len;
};

/* One member, valid only during the callback (all pointers are borrowed from
 * the parser). */
struct clip_tar_entry {
	enum clip_tar_type type;
	/* Normalised: leading "/" and "./" removed, "//" and "/./" collapsed,
	 * trailing "/" removed; the root itself ("." or "./") is "". Any ".."
	 * component is rejected before the callback. Never contains NUL. */
	const char *path;
	/* Symlink: the target exactly as stored. Hard link: the target path,
	 * normalised like `path`. NULL for other types. */
	const char *linkpath;
	uint32_t mode; /* permission bits including setuid/setgid/sticky (07777) */
	uint32_t uid, gid;
	const char *uname, *gname; /* "" when absent */
	uint64_t size;		   /* data bytes in the tar (0 unless regular) */
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint32_t devmajor, devminor;
	uint64_t data_offset;	/* offset of the first data byte in the tar stream */
	uint64_t header_offset; /* offset of the first header block of the member */
	const struct clip_tar_xattr *xattrs;
	size_t nxattrs;
};

/* Called once per member. Return 0 to go on, a negative errno (with `err`
 * set) to stop parsing; that value is returned by clip_tar_parser_feed(). */
typedef int (*clip_tar_entry_fn)(void *opaque, const struct clip_tar_entry *entry,
				 struct clip_err *err);

struct clip_tar_parser;

/* Make a parser that reports members to `fn`. Returns NULL only when out of
 * memory. Free with clip_tar_parser_free(). */
struct clip_tar_parser *clip_tar_parser_new(clip_tar_entry_fn fn, void *opaque);

/* Feed the next `len` bytes of the stream. Returns 0, or a negative errno
 * with `err` set (malformed header, limit exceeded, or the callback's own
 * error). After an error the parser is unusable. Bytes after the end-of-
 * archive marker (two zero blocks) are accepted and ignored. */
int clip_tar_parser_feed(struct clip_tar_parser *parser, const void *buf, size_t len,
			 struct clip_err *err);

/* Declare the end of the stream. Returns 0 if the stream ended at a member
 * boundary (with or without the end-of-archive marker), -EBADMSG with `err`
 * set if it ended inside a header or inside member data ("truncated"). */
int clip_tar_parser_finish(struct clip_tar_parser *parser, struct clip_err *err);

/* Bytes fed so far. */
uint64_t clip_tar_parser_offset(const struct clip_tar_parser *parser);

/* Free the parser and what it buffered; NULL is a no-op. */
void clip_tar_parser_free(struct clip_tar_parser *parser);

#endif
