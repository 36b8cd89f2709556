/* clip: archives stored in the registry next to their image.
 *
 * An archive is pushed as an OCI artifact in the image's repository: an
 * image manifest with artifactType CLIP_ARTIFACT_TYPE, the empty config, one
 * layer of media type "application/vnd.clip.archive.v<format>" (the .clip
 * file), `subject` the indexed image's manifest, and annotations naming the
 * format, the tool version and when it was made. Registries with the OCI 1.1
 * referrers API list it under the image's digest; for the others the
 * referrers tag schema is kept up to date: tag "sha256-<hex>" holds an image
 * index of the artifacts whose subject is manifest sha256:<hex>.
 *
 * An archive found that way is trusted only after checking that its
 * artifact manifest (fetched by digest) is a clip artifact whose subject is
 * the image wanted, that its blob has the manifest's digest and size, that
 * it opens as an archive (checksum, sections) of a format this build reads
 * and that the archive itself names the same image manifest. A forged or
 * damaged one is refused with a message saying why.
 *
 * Thread safety: nothing is shared between calls.
 */
#ifndef CLIP_ARTIFACT_H
#define CLIP_ARTIFACT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clip/err.h"
#include "clip/image.h"
#include "clip/registry.h"

#define CLIP_ARTIFACT_TYPE	     "application/vnd.clip.archive"
#define CLIP_ARTIFACT_LAYER_PREFIX   "application/vnd.clip.archive.v"
#define CLIP_ARTIFACT_ANN_FORMAT     "dev.clip.archive.format"
#define CLIP_ARTIFACT_ANN_VERSION    "dev.clip.version"
#define CLIP_ARTIFACT_MAX_BYTES	     (1ull << 30) /* an archive larger is refused */
#define CLIP_ARTIFACT_FALLBACK_TRIES 8		  /* read-modify-writes of the fallback tag */

/* What clip_artifact_push did. */
struct clip_artifact_pushed {
	char digest[72];      /* the artifact manifest */
	char blob_digest[72]; /* the archive */
	char subject[72];     /* the image manifest it refers to */
	bool referrers_api;   /* the registry indexes subjects itself (OCI-Subject) */
	bool fallback_tag;    /* the "sha256-<hex>" index was updated */
};

/* Push the archive file `path` to the repository of `reg` as an artifact
 * referring to the image manifest the archive names, which must be in that
 * repository (-ENOENT otherwise: a referrer needs its subject). Uploads the
 * empty config and the archive (unless there), the artifact manifest by
 * digest, and, unless the registry answered OCI-Subject, adds it to the
 * fallback tag's index: read, add, write (conditional on the ETag read,
 * where the registry honours If-Match), then read again to check it is
 * there, and again from the start when a racing writer replaced it (at most
 * CLIP_ARTIFACT_FALLBACK_TRIES times, -EAGAIN then). Pushing the same
 * archive twice changes nothing. */
int clip_artifact_push(struct clip_registry *reg, const char *path,
		       struct clip_artifact_pushed *out, struct clip_err *err);

/* One archive listed for an image. */
struct clip_artifact_candidate {
	char digest[72]; /* its artifact manifest */
	uint64_t size;	 /* of that manifest */
	unsigned format; /* from its annotation; 0: not given or not a number */
	char *created;	 /* org.opencontainers.image.created, or NULL */
};

struct clip_artifact_list {
	struct clip_artifact_candidate *items; /* best first (clip_artifact_list_rank) */
	size_t n;
	bool referrers_api; /* listed by the referrers API, not the fallback tag */
};

/* The clip archives listed for image manifest `manifest_digest` in the
 * repository of `reg`: by the referrers API, else (the registry has none)
 * by the fallback tag. An image with none gives an empty list. Entries of
 * other artifact types are left out. On success *out is the caller's
 * (clip_artifact_list_clear), ranked. */
int clip_artifact_list(struct clip_registry *reg, const char *manifest_digest,
		       struct clip_artifact_list *out, struct clip_err *err);

/* Order `list` best first: formats this build reads (1..max_format) before
 * others, the highest of those first, then the newest (created), then by
 * digest, so that every node picks the same one. */
void clip_artifact_list_rank(struct clip_artifact_list *list, unsigned max_format);

void clip_artifact_list_clear(struct clip_artifact_list *list);

/* Download artifact `artifact_digest`, check it as the header says against
 * image manifest `manifest_digest`, and move it to `path` (atomically; a
 * temporary file beside it until then, removed on failure). *bytes (NULL: not
 * wanted) gets the archive's size. -EBADMSG for a forged or damaged artifact
 * or archive, -ENOTSUP for a format this build does not read, -EFBIG past
 * CLIP_ARTIFACT_MAX_BYTES; messages name the artifact and the reason. */
int clip_artifact_fetch(struct clip_registry *reg, const char *artifact_digest,
			const char *manifest_digest, const char *path, uint64_t *bytes,
			struct clip_err *err);

#endif
