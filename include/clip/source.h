/* clip: where an image's blobs come from, for the indexer and the readers.
 *
 * A source is a local OCI layout or a registry repository. It is opened
 * from an image reference (`clip index IMAGE`), from the text of `--source`
 * (a mirror of the recorded one) or from the SOURCE record an archive keeps,
 * and gives each blob as a sequential stream (indexing, whole-layer
 * fetches), by byte ranges (checkpoint spans, plain tar ranges) or, for a
 * local blob, mapped in place.
 *
 * Thread safety: a source may be used by many threads at once (the registry
 * client and the layout are); one struct clip_source_blob is set up by one
 * thread (clip_source_blob_open) and then read from any.
 */
#ifndef CLIP_SOURCE_H
#define CLIP_SOURCE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "clip/err.h"
#include "clip/gzindex.h"
#include "clip/image.h"
#include "clip/ocilayout.h"
#include "clip/ref.h"
#include "clip/registry.h"
#include "clip/stream.h"

/* A source of the caller's own (an embedder's blob store, or the tests'
 * fault-injecting one): blobs are read by ranges through `pread`, which has
 * clip_source_blob_pread's contract. */
struct clip_source_ops {
	ssize_t (*pread)(void *opaque, const char *digest, void *buf, size_t len, uint64_t offset,
			 struct clip_err *err);
	void *opaque;
};

struct clip_source {
	struct clip_oci_layout *layout; /* exactly one of these three */
	struct clip_registry *registry;
	const struct clip_source_ops *ops; /* borrowed */
};

/* An image to index: "oci:DIR[:TAG]" for a local layout, anything else a
 * registry reference. Fills *source, and the parsed reference (registry) or
 * *tag (layout, NULL for the only image) for clip_source_resolve; the caller
 * clears them (clip_source_clear, clip_ref_clear, free). */
int clip_source_open_image(const char *image, const struct clip_registry_options *registry,
			   struct clip_source *source, struct clip_ref *ref, char **tag,
			   struct clip_err *err);

/* The text of --source: "oci:DIR" or an existing directory (a local layout),
 * else a registry reference whose domain and repository are used. */
int clip_source_open_text(const char *text, const struct clip_registry_options *registry,
			  struct clip_source *source, struct clip_err *err);

/* The SOURCE record of an archive (JSON: {"type": "oci-layout", "path"} or
 * {"type": "registry", "registry", "repository"}). */
int clip_source_open_record(const char *record_json, const struct clip_registry_options *registry,
			    struct clip_source *source, struct clip_err *err);

/* A source of the caller's own; `ops` must outlive it. */
void clip_source_open_ops(const struct clip_source_ops *ops, struct clip_source *source);

/* The image's manifest and config for `platform`: by the reference's tag or
 * digest (registry) or by `tag` (layout). */
int clip_source_resolve(struct clip_source *source, const struct clip_ref *ref, const char *tag,
			const struct clip_platform *platform, struct clip_image *out,
			struct clip_err *err);

/* Close what clip_source_open_* opened; a zeroed source is fine. */
void clip_source_clear(struct clip_source *source);

/* One blob of a source, `size` bytes as the manifest or archive says. */
struct clip_source_blob {
	struct clip_source *source; /* borrowed */
	const char *digest;	    /* borrowed: "sha256:<hex>" */
	uint64_t size;
	int fd; /* a local blob, -1 until clip_source_blob_open */
};

/* Set up reads of blob `digest`: for a local layout, open it and check its
 * size (-EBADMSG "blob is N bytes, the archive expects M"). Nothing is
 * contacted for a registry. */
int clip_source_blob_open(struct clip_source *source, const char *digest, uint64_t size,
			  struct clip_source_blob *blob, struct clip_err *err);

void clip_source_blob_close(struct clip_source_blob *blob);

/* Up to `len` bytes at `offset`, short only at the end of the blob. */
ssize_t clip_source_blob_pread(struct clip_source_blob *blob, void *buf, size_t len,
			       uint64_t offset, struct clip_err *err);

/* The whole blob as a stream from its start (the registry's resuming
 * stream, or the local file). A stream of a blob opened here must be closed
 * before the blob. */
int clip_source_blob_stream(struct clip_source_blob *blob, struct clip_stream *out,
			    struct clip_err *err);

/* The blob as the checkpoint reader takes it: pread, and map for a local
 * blob. */
struct clip_blob_source clip_source_blob_reader(struct clip_source_blob *blob);

#endif
