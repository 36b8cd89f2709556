/* clip: the running library's version (clip/version.h). */
#include "clip/version.h"

const char *clip_version(void)
{
	return CLIP_VERSION;
}
