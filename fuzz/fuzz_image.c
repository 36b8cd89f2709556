/* libFuzzer harness for the image JSON parsers (src/lib/image.c).
 *
 * Build:
 *   clang -fsanitize=fuzzer,address,undefined -Iinclude -Isrc/lib fuzz/fuzz_image.c \
 *       src/lib/image.c src/lib/err.c -ljansson -lcrypto
 * Run:
 *   ./a.out fuzz/corpus/image
 *
 * Every input goes to all three parsers; the config is parsed against the
 * image the manifest parse produced (when it succeeded) so that the diff_id
 * bookkeeping is exercised as well.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clip/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const platforms[] = { "linux/amd64", "linux/arm64", "linux/arm/v7" };
	struct clip_err err = { 0 };
	struct clip_platform platform;
	char *digest = NULL, *media_type = NULL;

	/* The platform is chosen by the input so that matching is explored. */
	const char *want = platforms[size > 0 ? data[0] % 3 : 0];
	if (clip_platform_parse(want, &platform, &err) != 0)
		abort();
	if (clip_image_index_select(data, size, &platform, &digest, &media_type, &err) == 0) {
		if (!clip_digest_valid(digest) || media_type == NULL)
			abort();
		free(digest);
		free(media_type);
	} else if (digest != NULL || media_type != NULL || err.code >= 0) {
		abort();
	}

	struct clip_image img = { 0 };
	int r = clip_image_parse_manifest(data, size, &img, &err);
	if (r == 0) {
		for (size_t i = 0; i < img.nlayers; i++)
			if (!clip_digest_valid(img.layers[i].digest))
				abort();
	} else if (img.layers != NULL || img.manifest_digest != NULL) {
		abort();
	}
	r = clip_image_parse_config(data, size, &img, &err);
	if (r == 0) {
		for (size_t i = 0; i < img.nlayers; i++)
			if (!clip_digest_valid(img.layers[i].diff_id))
				abort();
	}
	clip_image_clear(&img);
	return 0;
}
