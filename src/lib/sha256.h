/* SHA-256 for the library: OpenSSL's implementation without EVP.
 *
 * Every digest clip computes is SHA-256, and the cold read of one file by a
 * fresh process (clip cat, the first read of a mount) pays for every set-up
 * the process does. OpenSSL 3's EVP layer fetches the algorithm from a
 * provider, which initialises the provider machinery and reads openssl.cnf
 * once per process: more than the read itself costs. The SHA256_* functions
 * run the same assembly (SHA-NI where the CPU has it) without that set-up;
 * they are deprecated in OpenSSL 3 in favour of EVP but still part of its
 * API, and only sha256.c calls them.
 *
 * The context is a plain value: no allocation, copy it to fork a digest.
 */
#ifndef CLIP_SHA256_H
#define CLIP_SHA256_H

#include <stddef.h>

#include <openssl/sha.h>

#define CLIP_SHA256_LEN 32

struct clip_sha256 {
	SHA256_CTX ctx;
};

void clip_sha256_init(struct clip_sha256 *h);
void clip_sha256_update(struct clip_sha256 *h, const void *data, size_t len);
/* Writes the digest; `h` must be initialised again before reuse. */
void clip_sha256_final(struct clip_sha256 *h, unsigned char out[CLIP_SHA256_LEN]);
/* The digest of one buffer. */
void clip_sha256_once(const void *data, size_t len, unsigned char out[CLIP_SHA256_LEN]);

#endif
