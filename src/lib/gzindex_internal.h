/* Library-private parts of gzindex.c, for tests, benchmarks and the fuzz
 * harness (not installed). */
#ifndef CLIP_GZINDEX_INTERNAL_H
#define CLIP_GZINDEX_INTERNAL_H

#include "clip/gzindex.h"

/* The inflater that resumes a span at a checkpoint. clip_gz_index_read() uses
 * CLIP_GZ_INFLATER_DEFAULT (ISA-L, measured about twice as fast as zlib on
 * resumed spans, and 1.7 times on the builder's sparse-window trials, which
 * use it too); zlib stays as the reference the tests compare against. */
enum clip_gz_inflater {
	CLIP_GZ_INFLATER_ISAL = 0,
	CLIP_GZ_INFLATER_ZLIB = 1,
};
#define CLIP_GZ_INFLATER_DEFAULT CLIP_GZ_INFLATER_ISAL

/* Window codec and level the builder uses (zstd 3: within 4% of zlib -9's
 * size at a tenth of its time, and decodes 3x faster on the read path). */
#define CLIP_GZ_WINDOW_ZSTD_LEVEL 3

/* clip_gz_index_read() with an explicit inflater; same contract. */
ssize_t clip_gz_index_read_with(const struct clip_gz_index *index,
				const struct clip_blob_source *source, void *buf, size_t len,
				uint64_t offset, enum clip_gz_inflater inflater,
				struct clip_gz_read_stats *stats, struct clip_err *err);

#endif
