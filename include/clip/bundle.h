/* clip bundle: the config.json of an OCI runtime bundle, made from an image's
 * config the way umoci does (args from Entrypoint + Cmd, Env, WorkingDir,
 * User resolved through the image's own /etc/passwd and /etc/group, labels as
 * annotations) with the defaults a container engine uses for the rest.
 *
 * Mounting the bundle's rootfs (a clip mount under overlayfs) is the CLI's
 * part (src/cli/cmd_bundle.c); this module only decides what the container
 * runs and as whom, so that it can be tested without mounts.
 */
#ifndef CLIP_BUNDLE_H
#define CLIP_BUNDLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clip/err.h"

/* Who a container's process runs as. */
struct clip_bundle_user {
	uint32_t uid, gid;
	uint32_t *additional_gids; /* supplementary groups, owned */
	size_t nadditional;
	char *home; /* the user's home from passwd, "/" without an entry; owned */
};

/* Resolve an image's User field `spec` ("", "name", "uid", "name:group",
 * "uid:gid", "name:gid", "uid:group") as runc's libcontainer resolves it,
 * through the contents of the image's /etc/passwd and /etc/group (`passwd`
 * and `group`, NUL-terminated; NULL when the image has no such file):
 * - "" is uid 0;
 * - a name must have a passwd entry (-ENOENT "no user NAME in the image's
 *   /etc/passwd"); a number need not (then gid 0 and home "/");
 * - with a group given, it sets the primary gid (a name must exist in
 *   /etc/group, a number need not) and there are no supplementary groups;
 * - without one, the gid is the passwd entry's and the supplementary groups
 *   are the groups listing the user's name as a member.
 * Ids above 2^31-1 are refused (-EINVAL). On success *out is filled (free it
 * with clip_bundle_user_free). */
int clip_bundle_user_resolve(const char *spec, const char *passwd, const char *group,
			     struct clip_bundle_user *out, struct clip_err *err);

/* Free what a resolved user owns; `u` itself is the caller's. */
void clip_bundle_user_free(struct clip_bundle_user *u);

struct clip_bundle_options {
	const char *user; /* replaces the image's User; NULL: the image's */
	const char *const
		*env; /* "KEY=VALUE" each, set over the image's; NULL-terminated, or NULL */
	const char *const
		*args; /* replace the image's Cmd; NULL-terminated, or NULL: the image's */
	/* A spec for a user namespace (like `runc spec --rootless`): no network
	 * namespace, /sys bound from the host, container root mapped to
	 * host_uid/host_gid. The container can then run only as its root. */
	bool rootless;
	uint32_t host_uid, host_gid;
	const char *hostname; /* NULL: "clip" */
};

/* The config.json text (OCI runtime spec 1.0.2, with "root": "rootfs") for
 * the image whose archive CONFIG section is `config_json` (see
 * docs/FORMAT.md) and whose root directory is open at `rootfs_fd` (its
 * etc/passwd and etc/group are read with every path resolved inside it).
 * Errors name the field: an image with neither Entrypoint nor Cmd and no
 * args (-EINVAL), a relative WorkingDir (-EINVAL, as Docker refuses it), a
 * user or group missing from the image (-ENOENT), a malformed --env entry
 * (-EINVAL). On success *out is a new string, the caller's to free. */
int clip_bundle_spec(const char *config_json, int rootfs_fd, const struct clip_bundle_options *o,
		     char **out, struct clip_err *err);

#endif
