/* clip: OCI / Docker v2 image JSON: image indexes, manifests and configs.
 *
 * Shared by every image source (a local OCI layout, clip/ocilayout.h, and a
 * registry, clip/registry.h): sources fetch the bytes, this module parses
 * and checks them. All parsing goes through jansson; every size is bounded
 * (CLIP_IMAGE_MAX_JSON).
 *
 * Thread safety: no shared state; the functions may be called from many
 * threads at once on distinct images.
 *
 * Error codes of the parsers: -EFBIG when the input is larger than
 * CLIP_IMAGE_MAX_JSON; -EBADMSG when it is malformed (invalid or too deeply
 * nested JSON, duplicate keys, a member missing or of the wrong type, a
 * malformed digest, counts that disagree); -ENOTSUP when it is well formed but
 * not handled (Docker schema 1, unknown media types, digest algorithms other
 * than sha256); -ENOMEM. Messages name the document and the member.
 *
 * Thread safety: the functions keep no state of their own and may run in any
 * number of threads at once; a struct clip_image is the caller's, used by one
 * thread at a time while it is being filled or cleared.
 */
#ifndef CLIP_IMAGE_H
#define CLIP_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "clip/err.h"

#define CLIP_IMAGE_MAX_JSON (4u << 20) /* largest manifest/index/config accepted */
/* Layers in one manifest at most (docker's own limit is 127), so that a hostile
 * manifest cannot make the indexer start millions of layer jobs. */
#define CLIP_IMAGE_MAX_LAYERS 1024

#define CLIP_MT_OCI_INDEX	"application/vnd.oci.image.index.v1+json"
#define CLIP_MT_OCI_MANIFEST	"application/vnd.oci.image.manifest.v1+json"
#define CLIP_MT_OCI_CONFIG	"application/vnd.oci.image.config.v1+json"
#define CLIP_MT_DOCKER_LIST	"application/vnd.docker.distribution.manifest.list.v2+json"
#define CLIP_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define CLIP_MT_DOCKER_CONFIG	"application/vnd.docker.container.image.v1+json"

enum clip_compression {
	CLIP_COMPRESSION_NONE = 0,
	CLIP_COMPRESSION_GZIP = 1,
	CLIP_COMPRESSION_ZSTD = 2,
};

/* "os/arch[/variant]", e.g. linux/amd64, linux/arm64/v8. */
struct clip_platform {
	char os[32];
	char architecture[32];
	char variant[32]; /* "" when none */
};

/* Parse "os/arch[/variant]". Returns 0 or -EINVAL naming the string. */
int clip_platform_parse(const char *text, struct clip_platform *out, struct clip_err *err);
/* The platform this binary runs on, in OCI's names (linux/amd64, ...), from
 * uname(2): x86_64 -> amd64, aarch64 -> arm64, armv7l -> arm/v7, i686 -> 386;
 * ppc64le, s390x, riscv64 as they are. */
void clip_platform_host(struct clip_platform *out);

struct clip_image_layer {
	char *digest;  /* "sha256:<64 hex>" of the blob */
	char *diff_id; /* "sha256:<64 hex>" of the uncompressed tar (from the config) */
	char *media_type;
	enum clip_compression compression;
	uint64_t size; /* blob size from the manifest */
};

struct clip_image_config {
	/* NULL-terminated string arrays, NULL when absent. */
	char **entrypoint;
	char **cmd;
	char **env;
	char *working_dir; /* NULL when absent */
	char *user;	   /* NULL when absent */
	char *os;
	char *architecture;
	char *variant;
	/* The other fields a runtime spec is made from, as a compact JSON
	 * object with sorted keys, NULL when the image has none of them:
	 * "Labels" (object of strings), "StopSignal" (string), "ExposedPorts"
	 * and "Volumes" (objects; only their keys matter), "created" and
	 * "author" (strings). Checked for these types when parsed. */
	char *runtime_json;
};

struct clip_image {
	char *manifest_digest; /* "sha256:..." */
	char *manifest_media_type;
	char *config_digest;
	uint64_t config_size; /* from the manifest's config descriptor */
	size_t nlayers;
	struct clip_image_layer *layers;
	struct clip_image_config config;
};

/* Whether `digest` is "sha256:" followed by exactly 64 lowercase hex digits. */
int clip_digest_valid(const char *digest);

/* Compute "sha256:<hex>" of `len` bytes into out (72 bytes incl. NUL). */
void clip_digest_of(const void *data, size_t len, char out[72]);

/* Check that `data` hashes to `digest`; -EBADMSG "digest mismatch" otherwise
 * (the caller prefixes what the data was), -EINVAL for a malformed digest. */
int clip_digest_verify(const void *data, size_t len, const char *digest, struct clip_err *err);

/* Whether a media type names an image index / manifest list. */
int clip_media_type_is_index(const char *media_type);

/* From an image index (or Docker manifest list) pick the manifest for
 * `platform` (exact os and architecture; variant must match when both sides
 * give one; arm64 with no variant matches v8). `platform` NULL means the
 * host's. An exact variant match wins over an entry that gives none; among
 * equals the first listed wins. Entries without a platform and unknown/unknown
 * ones (attestations) are skipped. On success *digest and *media_type are new
 * strings owned by the caller. -ENOENT listing the platforms that are
 * available when none matches ("no manifest for linux/s390x in image index;
 * available: linux/amd64, linux/arm64/v8"). */
int clip_image_index_select(const void *json, size_t len, const struct clip_platform *platform,
			    char **digest, char **media_type, struct clip_err *err);

/* Parse a manifest (OCI or Docker v2) into img->layers, img->config_digest
 * and img->config_size; img->manifest_digest becomes the sha256 of `json` and
 * img->manifest_media_type its mediaType (OCI's when absent, allowed when the
 * document has "config" and "layers"). What those fields held before is
 * freed; on failure img is left unchanged.
 * Layer media types: tar, tar+gzip, tar+zstd, OCI and Docker's; non-
 * distributable variants too; anything else is -ENOTSUP "layer N: unsupported
 * media type X" (N counts from 0). Schema 1 is -ENOTSUP. More than
 * CLIP_IMAGE_MAX_LAYERS layers is -E2BIG. */
int clip_image_parse_manifest(const void *json, size_t len, struct clip_image *img,
			      struct clip_err *err);

/* Parse an image config into img->config and fill every layer's diff_id from
 * rootfs.diff_ids (call after clip_image_parse_manifest); -EBADMSG "config: N
 * diff_ids for M layers" when their count differs from the layers'. "config"
 * may be absent or null; os, architecture and rootfs (type "layers") are
 * required. On failure img is left unchanged. */
int clip_image_parse_config(const void *json, size_t len, struct clip_image *img,
			    struct clip_err *err);

/* Release everything `img` owns and zero it. */
void clip_image_clear(struct clip_image *img);

#endif
