/* Startup profiles and the content: replaying one, and sharing one through
 * the remote cache so that every node of a cluster starts warm.
 *
 * A shared profile lives at "<prefix>profile:<manifest hex>": the image's
 * manifest digest names it, since a profile fits every archive of the same
 * layers. Like every value in the remote cache it is stored only where none
 * is yet and never overwritten: the first node that records one shares it,
 * and a node never replays a profile that another is writing or has raced.
 * Profiles of several nodes are merged on purpose, by `clip optimize
 * --profile A --profile B`, whose archive then carries the merge.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "content_internal.h"
#include "util.h"

/* A shared profile larger than this is not read (one of 5,000 regions is
 * about 150 KiB). */
#define SHARED_PROFILE_MAX (64u << 20)
#define SHARED_READ_STEP   (1u << 20)

int clip_content_replay(struct clip_content *c, const struct clip_profile *profile,
			struct clip_err *err)
{
	if (c->nreplay || c->replay_started)
		return clip_err_set(err, EBUSY, "a profile is being replayed already");
	return content_load_replay(c, profile, err);
}

/* The key of this image's shared profile into key[cap]; -ENOTSUP when the
 * content has no remote cache or the archive no manifest digest. */
static int shared_key(const struct clip_content *c, char *key, size_t cap, struct clip_err *err)
{
	if (c->rcache == NULL)
		return clip_err_set(err, ENOTSUP, "no remote cache");
	json_t *src = json_loads(clip_archive_source_json(c->archive), 0, NULL);
	const char *m = src ? json_string_value(json_object_get(src, "manifest")) : NULL;
	int rc = 0;
	if (m == NULL || strncmp(m, "sha256:", 7) != 0 || strlen(m) != 71)
		rc = clip_err_set(err, ENOTSUP, "the archive records no manifest digest");
	else if ((size_t)snprintf(key, cap, "%sprofile:%s", c->rcache->key_prefix, m + 7) >= cap)
		rc = clip_err_set(err, ENAMETOOLONG, "remote cache key too long");
	json_decref(src);
	return rc;
}

int clip_content_profile_share(struct clip_content *c, const struct clip_profile *profile,
			       struct clip_err *err)
{
	char key[512];
	int rc = shared_key(c, key, sizeof(key), err);
	if (rc < 0)
		return rc;
	char *text = NULL;
	if ((rc = clip_profile_encode(profile, &text, err)) < 0)
		return rc;
	/* At unmount: worth a wait for room, and closing the cache waits for
	 * the store. */
	rc = c->rcache->ops->put(c->rcache->self, key, text, strlen(text), 1000, err);
	free(text);
	return rc < 0 ? clip_err_prefix(err, "sharing the profile") : 0;
}

int clip_content_profile_shared(struct clip_content *c, struct clip_profile **out,
				struct clip_err *err)
{
	*out = NULL;
	char key[512];
	struct clip_err e = { 0 };
	if (shared_key(c, key, sizeof(key), &e) < 0)
		return 0;
	size_t len = 0, cap = 0;
	char *text = NULL;
	int rc = 0;
	for (;;) {
		if (len + SHARED_READ_STEP > cap) {
			char *grown = realloc(text, cap + SHARED_READ_STEP + 1);
			if (grown == NULL) {
				rc = clip_err_nomem(err);
				break;
			}
			text = grown;
			cap += SHARED_READ_STEP;
		}
		ssize_t n = c->rcache->ops->get(c->rcache->self, key, text + len, SHARED_READ_STEP,
						len, &e);
		if (n == -ENOENT) {
			rc = 0;
			len = 0;
			break;
		}
		if (n < 0) {
			rc = clip_err_set(err, (int)-n, "reading the shared profile: %s",
					  e.msg[0] ? e.msg : strerror((int)-n));
			break;
		}
		len += (size_t)n;
		if ((size_t)n < SHARED_READ_STEP) {
			rc = 1;
			break;
		}
		if (len >= SHARED_PROFILE_MAX) {
			rc = clip_err_set(err, EFBIG, "the shared profile is over %u MiB",
					  SHARED_PROFILE_MAX >> 20);
			break;
		}
	}
	if (rc == 1 &&
	    (rc = clip_profile_decode(text, len, "shared in the remote cache", out, err)) == 0)
		rc = 1;
	free(text);
	return rc;
}

int clip_content_recorded_profile(struct clip_content *c, char **text, struct clip_err *err)
{
	if (c->recorder == NULL)
		return clip_err_set(err, ENOENT, "the mount is not recording a profile");
	struct clip_profile *p = NULL;
	int rc = clip_profile_recorder_profile(c->recorder, &p, err);
	if (rc == 0)
		rc = clip_profile_encode(p, text, err);
	clip_profile_free(p);
	return rc;
}
