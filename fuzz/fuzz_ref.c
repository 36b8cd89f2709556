/* libFuzzer harness for image-reference parsing (src/lib/ref.c).
 *
 * The input (up to its first NUL) is parsed as a reference. A reference that
 * parses must satisfy the contract of include/clip/ref.h, and its canonical
 * form must parse again to the same fields (formatting is a fixed point); a
 * reference that does not parse leaves *out untouched and says why. The
 * loopback test is run on the input as a host too (it must not crash).
 *
 * Build: fuzz/build. Seeds: fuzz/corpus/ref/, dictionary: fuzz/ref.dict.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip/image.h"
#include "clip/ref.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Whether `s` is a tag as ref.h defines it. */
static int tag_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 128 || s[0] == '.' || s[0] == '-')
		return 0;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	struct clip_err err = { 0 };
	struct clip_ref ref;
	memset(&ref, 0xa5, sizeof(ref)); /* must stay untouched on failure */
	int r = clip_ref_parse(text, &ref, &err);
	if (r < 0) {
		CHECK(r == -EINVAL);
		CHECK(err.code == r && err.msg[0] != '\0');
		unsigned char pattern[sizeof(ref)];
		memset(pattern, 0xa5, sizeof(pattern));
		CHECK(memcmp(&ref, pattern, sizeof(ref)) == 0);
	} else {
		CHECK(r == 0);
		CHECK(ref.domain != NULL && ref.domain[0] != '\0');
		CHECK(ref.api_host != NULL && ref.api_host[0] != '\0');
		CHECK(ref.repository != NULL && ref.repository[0] != '\0');
		CHECK(strlen(ref.domain) + 1 + strlen(ref.repository) <= 255);
		CHECK(strchr(ref.repository, ':') == NULL && strchr(ref.repository, '@') == NULL);
		CHECK(ref.repository[0] != '/' &&
		      ref.repository[strlen(ref.repository) - 1] != '/');
		CHECK(strstr(ref.repository, "//") == NULL);
		CHECK(ref.tag != NULL || ref.digest != NULL);
		CHECK(ref.tag == NULL || tag_ok(ref.tag));
		CHECK(ref.digest == NULL || strncmp(ref.digest, "sha256:", 7) != 0 ||
		      clip_digest_valid(ref.digest));
		CHECK(same(clip_ref_manifest_reference(&ref), ref.digest ? ref.digest : ref.tag));

		/* Formatting is a fixed point of parsing. */
		char *canon = clip_ref_format(&ref);
		CHECK(canon != NULL);
		struct clip_ref again = { 0 };
		struct clip_err err2 = { 0 };
		if (clip_ref_parse(canon, &again, &err2) != 0) {
			fprintf(stderr, "canonical \"%s\" of \"%s\" does not parse: %s\n", canon,
				text, err2.msg);
			abort();
		}
		CHECK(same(ref.domain, again.domain));
		CHECK(same(ref.api_host, again.api_host));
		CHECK(same(ref.repository, again.repository));
		CHECK(same(ref.tag, again.tag));
		CHECK(same(ref.digest, again.digest));
		char *canon2 = clip_ref_format(&again);
		CHECK(canon2 != NULL && strcmp(canon, canon2) == 0);
		(void)clip_ref_host_is_loopback(ref.domain);
		free(canon);
		free(canon2);
		clip_ref_clear(&again);
		clip_ref_clear(&ref);
		CHECK(ref.domain == NULL && ref.repository == NULL);
	}
	(void)clip_ref_host_is_loopback(text);
	free(text);
	return 0;
}
