/* The on-disk layout of a .clip archive: every offset and size, in one place.
 * All integers are little-endian and fixed width; docs/FORMAT.md describes the
 * same layout in prose. Structures are never cast onto the mapping: fields
 * are read with clip_get_le*() at the offsets below, so alignment and host
 * byte order never matter. */
#ifndef CLIP_FORMAT_H
#define CLIP_FORMAT_H

#include <stdint.h>

#include "clip/archive.h"

#define CLIP_FORMAT_MAGIC     "CLIPARC\0"
#define CLIP_FORMAT_MAGIC_LEN 8
/* Readers accept 1..CLIP_FORMAT_VERSION. New optional sections do not bump
 * the version (old readers skip unknown sections without the REQUIRED flag);
 * a change old readers would misread does. */
#define CLIP_FORMAT_VERSION CLIP_ARCHIVE_FORMAT
/* Version 2 added per-chunk SHA-256 of each layer's uncompressed data
 * (CHUNKS, META_CHUNK_BYTES, LAYER_CHUNK_*). Version 1 archives have none of
 * them: the fields were reserved zeros and the section is absent.
 * Version 3 verifies compressed bytes per piece instead of per span: PIECES,
 * META_PIECE_BYTES and LAYER_PIECE_* (META and LAYERS records grew by 8
 * bytes), and CP_SHA256 became the digest of the stored window. */

/* Header: 64 bytes at offset 0. */
#define HDR_MAGIC	  0  /* 8 bytes */
#define HDR_VERSION	  8  /* u32 */
#define HDR_HEADER_SIZE	  12 /* u32, 64 */
#define HDR_FILE_SIZE	  16 /* u64 */
#define HDR_CHECKSUM	  24 /* u64 CRC-64/ECMA-182 (reflected) of the file with these 8 bytes zero */
#define HDR_SECTION_COUNT 32 /* u32 */
#define HDR_FLAGS	  36 /* u32, 0 */
#define HDR_SECTION_TABLE 40 /* u64 offset of the section table */
#define HDR_SIZE	  64

/* Section table entry: 32 bytes. */
#define SEC_ID		  0  /* u32 */
#define SEC_FLAGS	  4  /* u32, bit 0: a reader that does not know the id must refuse */
#define SEC_OFFSET	  8  /* u64 */
#define SEC_SIZE	  16 /* u64 bytes */
#define SEC_COUNT	  24 /* u32 records (1-byte "records" for blobs) */
#define SEC_RECORD_SIZE	  28 /* u32 */
#define SEC_ENTRY_SIZE	  32
#define SEC_FLAG_REQUIRED 1u

enum clip_section_id {
	SECTION_META = 1,
	SECTION_STRINGS = 2,
	SECTION_INODES = 3,
	SECTION_DIRENTS = 4,
	SECTION_XATTRS = 5,
	SECTION_LAYERS = 6,
	SECTION_CHECKPOINTS = 7,
	SECTION_WINDOWS = 8,
	SECTION_CONFIG = 9,
	SECTION_SOURCE = 10,
	SECTION_CHUNKS = 11,  /* version 2 */
	SECTION_PIECES = 12,  /* version 3 */
	SECTION_PROFILE = 13, /* optional: written by clip optimize */
};
/* The highest required id: a version 3 archive has every section from 1 to
 * it. Optional sections follow, up to SECTION_MAX. */
#define SECTION_COUNT 12
#define SECTION_MAX   13

/* META: one 32-byte record. */
#define META_SPAN_BYTES	   0  /* u64 checkpoint spacing used at index time */
#define META_LARGE_FILE	   8  /* u64 large-file threshold used */
#define META_REGULAR_BYTES 16 /* u64 sum of regular file sizes */
#define META_CHUNK_BYTES   24 /* u64 chunk size of the CHUNKS hashes (v1: 0, none) */
#define META_PIECE_BYTES   32 /* u64 piece size of the PIECES digests, 0: none (v3) */
#define META_SIZE_V2	   32 /* versions 1 and 2 */
#define META_SIZE	   40

/* INODES: 72-byte records; inode 0 is the root directory. */
#define INO_MODE	0  /* u32 st_mode */
#define INO_UID		4  /* u32 */
#define INO_GID		8  /* u32 */
#define INO_NLINK	12 /* u32 */
#define INO_SIZE	16 /* u64 */
#define INO_MTIME_SEC	24 /* i64 */
#define INO_MTIME_NSEC	32 /* u32 */
#define INO_RDEV_MAJOR	36 /* u32 */
#define INO_RDEV_MINOR	40 /* u32 */
#define INO_LAYER	44 /* u32 regular: layer index */
#define INO_DATA	48 /* u64 regular: tar offset; symlink: string offset; dir: first dirent */
#define INO_AUX		56 /* u32 dir: dirent count; symlink: target length */
#define INO_XATTR_FIRST 60 /* u32 */
#define INO_XATTR_COUNT 64 /* u32 */
#define INO_PARENT	68 /* u32 dir: parent directory inode (root: 0) */
#define INO_SIZEOF	72

/* DIRENTS: 12-byte records, each directory's run sorted bytewise by name. */
#define DIRENT_NAME_OFF 0 /* u32 string offset (NUL-terminated) */
#define DIRENT_NAME_LEN 4 /* u32 */
#define DIRENT_INO	8 /* u32 */
#define DIRENT_SIZEOF	12

/* XATTRS: 16-byte records, each inode's run sorted by name. */
#define XATTR_NAME_OFF	0  /* u32 string offset (NUL-terminated) */
#define XATTR_NAME_LEN	4  /* u32 */
#define XATTR_VALUE_OFF 8  /* u32 string offset */
#define XATTR_VALUE_LEN 12 /* u32 */
#define XATTR_SIZEOF	16

/* LAYERS: 56-byte records in image order (48 in versions 1 and 2). */
#define LAYER_DIGEST	  0  /* u32 string offset */
#define LAYER_DIFF_ID	  4  /* u32 string offset */
#define LAYER_MEDIA_TYPE  8  /* u32 string offset */
#define LAYER_COMPRESSION 12 /* u32 enum clip_compression */
#define LAYER_CSIZE	  16 /* u64 */
#define LAYER_USIZE	  24 /* u64 */
#define LAYER_CP_FIRST	  32 /* u32 */
#define LAYER_CP_COUNT	  36 /* u32 */
#define LAYER_CHUNK_FIRST 40 /* u32 first CHUNKS record (v1: 0) */
#define LAYER_CHUNK_COUNT 44 /* u32 ceil(usize / chunk bytes), or 0 (v1: 0) */
#define LAYER_PIECE_FIRST 48 /* u32 first PIECES record (v3) */
#define LAYER_PIECE_COUNT 52 /* u32 ceil(csize / piece bytes), or 0 (v3) */
#define LAYER_SIZEOF_V2	  48 /* versions 1 and 2 */
#define LAYER_SIZEOF	  56

/* CHECKPOINTS: 72-byte records, each layer's run sorted by uncompressed offset. */
#define CP_IN	       0  /* u64 compressed bytes consumed */
#define CP_OUT	       8  /* u64 uncompressed offset */
#define CP_BITS	       16 /* u8 unused bits of byte in-1 (0-7) */
#define CP_CODEC       17 /* u8 enum clip_gz_window_codec */
#define CP_RESERVED16  18 /* u16, 0 */
#define CP_WINDOW_LEN  20 /* u32 uncompressed window bytes */
#define CP_WINDOW_ZLEN 24 /* u32 stored window bytes */
#define CP_RESERVED32  28 /* u32, 0 */
#define CP_WINDOW_OFF  32 /* u64 offset in the WINDOWS section */
#define CP_SHA256      40 /* 32 bytes: v3: SHA-256 of the stored window; v1, v2: of the span */
#define CP_SIZEOF      72

/* CHUNKS: 32-byte records, the SHA-256 of each chunk of each layer's
 * uncompressed tar, layers in order. */
#define CHUNK_SIZEOF 32

/* PIECES: 32-byte records, the SHA-256 of each piece of each gzip layer's
 * compressed blob, layers in order (version 3). */
#define PIECE_SIZEOF 32

/* Record size of section `id` (1..SECTION_MAX) in the current version; the
 * reader adjusts META and LAYERS for versions 1 and 2. */
static inline uint32_t clip_section_record_size(uint32_t id)
{
	static const uint32_t sizes[SECTION_MAX] = {
		META_SIZE,
		1,
		INO_SIZEOF,
		DIRENT_SIZEOF,
		XATTR_SIZEOF,
		LAYER_SIZEOF,
		CP_SIZEOF,
		1,
		1,
		1,
		CHUNK_SIZEOF,
		PIECE_SIZEOF,
		1,
	};
	return id >= 1 && id <= SECTION_MAX ? sizes[id - 1] : 0;
}

#endif
