/* clip: a local OCI image layout (the directory skopeo and umoci write).
 *
 * Reference syntax as skopeo/umoci: "oci:DIR[:TAG]". The TAG names an entry
 * of index.json by its org.opencontainers.image.ref.name annotation; without
 * one, the only entry is used, or else the one named "latest".
 *
 * Like skopeo (containers/image, oci/internal SplitPathAndImage on Unix), DIR
 * ends at the first ':' after "oci:", so DIR cannot contain a colon, and TAG
 * is everything after it (it may itself hold ':' and '/'). TAG must match the
 * OCI ref.name grammar skopeo checks: components of [A-Za-z0-9]+ joined by one
 * of - . _ : @ + or "--", components separated by '/'. An empty TAG
 * ("oci:DIR:") means none. skopeo's "@INDEX" form is not supported.
 *
 * Thread safety: an open layout is only a directory descriptor and its name;
 * resolve, open_blob and dir may be called from several threads at once
 * (each with its own struct clip_image), free after all of them.
 */
#ifndef CLIP_OCILAYOUT_H
#define CLIP_OCILAYOUT_H

#include "clip/err.h"
#include "clip/image.h"

struct clip_oci_layout;

/* Split "oci:DIR[:TAG]" into new strings *dir and *tag (*tag NULL when not
 * given). -EINVAL naming the reference when it does not start with "oci:",
 * DIR is empty or TAG is not a valid ref name; *dir and *tag are then left
 * untouched. */
int clip_oci_layout_parse_ref(const char *ref, char **dir, char **tag, struct clip_err *err);

/* Open the layout at `dir`: checks that oci-layout is a JSON object whose
 * imageLayoutVersion is 1.x (-ENOTSUP otherwise) and that index.json exists
 * (-ENOENT). *out is owned by the caller (clip_oci_layout_free); it keeps the
 * directory open, so the layout may be moved but not replaced under it. */
int clip_oci_layout_open(const char *dir, struct clip_oci_layout **out, struct clip_err *err);

/* Resolve `tag` (NULL: the default, see above) to an image for `platform`
 * (NULL: the host's): follow image indexes (at most 4 nested, else -ELOOP) to
 * the platform's manifest, read the manifest and config blobs (each at most
 * CLIP_IMAGE_MAX_JSON, -EFBIG) and check them against their descriptors' size
 * and digest (-EBADMSG "digest mismatch"), parse them, and fill *img, which
 * is overwritten without being freed and which the caller clears with
 * clip_image_clear. Several index.json entries with the same tag are told
 * apart by their platform when every one has one.
 * Errors name the layout directory, the tag and the blob: -ENOENT for an
 * unknown tag (listing the tags), a missing blob or no entry for the
 * platform; -EINVAL when there is no tag, several entries and none "latest";
 * parse errors as in clip/image.h. On failure *img is untouched. */
int clip_oci_layout_resolve(struct clip_oci_layout *layout, const char *tag,
			    const struct clip_platform *platform, struct clip_image *img,
			    struct clip_err *err);

/* Open blobs/<alg>/<hex> read-only; the caller owns *fd. -EINVAL for a
 * malformed digest, -ENOENT naming the blob when missing. */
int clip_oci_layout_open_blob(struct clip_oci_layout *layout, const char *digest, int *fd,
			      struct clip_err *err);

/* The directory the layout was opened at (borrowed). */
const char *clip_oci_layout_dir(const struct clip_oci_layout *layout);

/* Close the directory and free `layout`; blobs already opened stay open.
 * NULL is a no-op. */
void clip_oci_layout_free(struct clip_oci_layout *layout);

#endif
