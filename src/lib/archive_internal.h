/* Library-private access to an opened archive's raw sections, for the
 * writer's rewrite (clip_archive_rewrite) and tests. */
#ifndef CLIP_ARCHIVE_INTERNAL_H
#define CLIP_ARCHIVE_INTERNAL_H

#include <stdint.h>

#include "clip/archive.h"

struct clip_archive_raw {
	const unsigned char *data; /* borrowed from the mapping */
	uint64_t size;
	uint32_t count, record_size;
	uint32_t version; /* the archive's format version */
};

/* Section `id` (format.h) as stored: 0, or -ENOENT when absent. */
int clip_archive_section(const struct clip_archive *archive, uint32_t id,
			 struct clip_archive_raw *out);

#endif
