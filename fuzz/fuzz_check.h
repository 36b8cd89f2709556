/* The harnesses' invariant check: name the file, line and condition, then
 * abort, which libFuzzer reports as a crash and keeps the input of. */
#ifndef CLIP_FUZZ_CHECK_H
#define CLIP_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,       \
				#cond);                                                            \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#endif
