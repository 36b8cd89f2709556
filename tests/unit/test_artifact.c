/* Which archive a node picks among those listed for an image
 * (clip_artifact_list_rank): formats this build reads first, the highest,
 * then the newest, then by digest, so that every node picks the same. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clip/artifact.h"

static struct clip_artifact_candidate candidate(char id, unsigned format, const char *created)
{
	struct clip_artifact_candidate c = { .format = format, .size = 100 };
	snprintf(c.digest, sizeof(c.digest), "sha256:%064d", 0);
	c.digest[7] = id;
	c.created = created ? strdup(created) : NULL;
	return c;
}

static void ranked(struct clip_artifact_candidate *items, size_t n, unsigned max_format,
		   const char *want)
{
	struct clip_artifact_list l = { .items = calloc(n, sizeof(*items)), .n = n };
	assert_non_null(l.items);
	memcpy(l.items, items, n * sizeof(*items));
	clip_artifact_list_rank(&l, max_format);
	char got[16] = "";
	for (size_t i = 0; i < n; i++)
		got[i] = l.items[i].digest[7];
	assert_string_equal(got, want);
	clip_artifact_list_clear(&l);
}

static void test_highest_readable_format_first(void **state)
{
	(void)state;
	struct clip_artifact_candidate c[] = {
		candidate('a', 2, "2026-12-01T00:00:00Z"),
		candidate('b', 3, "2026-01-01T00:00:00Z"),
		candidate('c', 9, "2027-01-01T00:00:00Z"), /* from the future: last */
		candidate('d', 0, NULL),		   /* no format: last */
	};
	ranked(c, 4, 3, "bacd");
}

static void test_newest_then_digest(void **state)
{
	(void)state;
	struct clip_artifact_candidate c[] = {
		candidate('b', 3, "2026-01-01T00:00:00Z"),
		candidate('e', 3, "2026-06-01T00:00:00Z"),
		candidate('a', 3, "2026-06-01T00:00:00Z"),
		candidate('f', 3, NULL),
	};
	ranked(c, 4, 3, "aebf");
}

static void test_older_reader(void **state)
{
	(void)state;
	/* A build that reads up to format 2 prefers the format-2 archive. */
	struct clip_artifact_candidate c[] = {
		candidate('a', 3, "2026-06-01T00:00:00Z"),
		candidate('b', 2, "2026-01-01T00:00:00Z"),
	};
	ranked(c, 2, 2, "ba");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_highest_readable_format_first),
		cmocka_unit_test(test_newest_then_digest),
		cmocka_unit_test(test_older_reader),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
