/* SHA-256 through OpenSSL's low-level API; see sha256.h for why not EVP. */
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init & co.: see sha256.h */

#include "sha256.h"

/* SHA256_Init, _Update and _Final cannot fail for in-memory data (they only
 * return 0 for a NULL context), so the wrappers return nothing. */

void clip_sha256_init(struct clip_sha256 *h)
{
	SHA256_Init(&h->ctx);
}

void clip_sha256_update(struct clip_sha256 *h, const void *data, size_t len)
{
	if (len > 0)
		SHA256_Update(&h->ctx, data, len);
}

void clip_sha256_final(struct clip_sha256 *h, unsigned char out[CLIP_SHA256_LEN])
{
	SHA256_Final(out, &h->ctx);
}

void clip_sha256_once(const void *data, size_t len, unsigned char out[CLIP_SHA256_LEN])
{
	struct clip_sha256 h;
	clip_sha256_init(&h);
	clip_sha256_update(&h, data, len);
	clip_sha256_final(&h, out);
}
