/* The piece cache of remote compressed bytes (src/lib/content_pieces.c):
 * what it keeps comes back byte for byte under the right key only, and it
 * stays within its bound, dropping the least recently used first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "content_internal.h"

#define P 4096u

static void fill(unsigned char *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)(seed * 31 + i * 7);
}

static void test_get_put(void **state)
{
	(void)state;
	struct content_pieces *pc = content_pieces_new(P, 8 * P);
	assert_non_null(pc);
	unsigned char in[P], out[P];
	fill(in, P, 1);
	assert_int_equal(content_pieces_get(pc, 0, 5, out, P), 0);
	content_pieces_put(pc, 0, 5, in, P);
	memset(out, 0, P);
	assert_int_equal(content_pieces_get(pc, 0, 5, out, P), P);
	assert_memory_equal(in, out, P);
	/* Another layer or piece, or another length: not it. */
	assert_int_equal(content_pieces_get(pc, 1, 5, out, P), 0);
	assert_int_equal(content_pieces_get(pc, 0, 6, out, P), 0);
	assert_int_equal(content_pieces_get(pc, 0, 5, out, P - 1), 0);
	/* A short last piece is kept with its length; larger than a piece is
	 * refused. */
	content_pieces_put(pc, 0, 9, in, 100);
	assert_int_equal(content_pieces_get(pc, 0, 9, out, 100), 100);
	assert_memory_equal(in, out, 100);
	unsigned char big[P + 1] = { 0 };
	content_pieces_put(pc, 0, 10, big, P + 1);
	assert_int_equal(content_pieces_get(pc, 0, 10, out, P), 0);
	content_pieces_free(pc);
	assert_null(content_pieces_new(P, P - 1));
	assert_null(content_pieces_new(0, P));
}

static void test_bound_lru(void **state)
{
	(void)state;
	struct content_pieces *pc = content_pieces_new(P, 4 * P);
	unsigned char in[P], out[P];
	for (unsigned k = 0; k < 4; k++) {
		fill(in, P, k);
		content_pieces_put(pc, 2, k, in, P);
	}
	/* Piece 0 used again: piece 1 is now the oldest, and goes first. */
	assert_int_equal(content_pieces_get(pc, 2, 0, out, P), P);
	fill(in, P, 4);
	content_pieces_put(pc, 2, 4, in, P);
	assert_int_equal(content_pieces_get(pc, 2, 1, out, P), 0);
	for (unsigned k = 0; k <= 4; k++) {
		if (k == 1)
			continue;
		assert_int_equal(content_pieces_get(pc, 2, k, out, P), P);
		fill(in, P, k);
		assert_memory_equal(in, out, P);
	}
	/* Many more than fit: only the last four stay. */
	for (unsigned k = 100; k < 1100; k++) {
		fill(in, P, k);
		content_pieces_put(pc, 3, k, in, P);
	}
	unsigned kept = 0;
	for (unsigned k = 100; k < 1100; k++)
		kept += content_pieces_get(pc, 3, k, out, P) == P;
	assert_int_equal(kept, 4);
	for (unsigned k = 1096; k < 1100; k++)
		assert_int_equal(content_pieces_get(pc, 3, k, out, P), P);
	content_pieces_free(pc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_put),
		cmocka_unit_test(test_bound_lru),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
