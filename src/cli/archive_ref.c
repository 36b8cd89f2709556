/* The archive of an image reference: the local store, the registry, or
 * indexed here (clip pull, clip mount REF, clip bundle REF).
 *
 * The local store is CACHE/archives/<hex of the image manifest>/: one file
 * per artifact fetched (<hex of the artifact manifest>.clip) and local.clip
 * for one indexed here. Files come in by rename, so a reader sees a whole
 * archive or none; two nodes' processes sharing a cache at worst both fetch. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "clip/artifact.h"
#include "clip/indexer.h"
#include "clip/ref.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

bool cli_is_image_ref(const char *arg)
{
	struct stat st;
	if (stat(arg, &st) == 0)
		return false;
	if (strncmp(arg, "docker://", 9) == 0)
		return true;
	size_t n = strlen(arg);
	return !(n > 5 && strcmp(arg + n - 5, ".clip") == 0) && arg[0] != '/' && arg[0] != '.';
}

void cli_ref_result_clear(struct cli_ref_result *res)
{
	free(res->path);
	free(res->source);
	memset(res, 0, sizeof(*res));
}

char *cli_ref_result_stats_json(const struct cli_ref_result *res)
{
	char *out = NULL;
	if (asprintf(&out,
		     "\"archive_origin\":\"%s\",\"archive_artifact\":\"%s\","
		     "\"archive_fetched_bytes\":%" PRIu64 ",\"archive_registry_requests\":%" PRIu64
		     ",\"archive_seconds\":%.6f",
		     res->origin, res->artifact, res->bytes, res->requests, res->seconds) < 0)
		return NULL;
	return out;
}

static int mkdir_p(const char *path)
{
	char buf[4096];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* The newest archive of the image's store directory, or NULL. Temporary
 * files of a fetch under way end in .tmp.XXXXXX and are passed over. */
static char *store_newest(const char *dir)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return NULL;
	char *best = NULL;
	struct timespec best_time = { 0 };
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);
		if (n < 6 || strcmp(e->d_name + n - 5, ".clip") != 0)
			continue;
		char *p = NULL;
		struct stat st;
		if (asprintf(&p, "%s/%s", dir, e->d_name) < 0)
			break;
		if (stat(p, &st) == 0 && S_ISREG(st.st_mode) &&
		    (best == NULL || st.st_mtim.tv_sec > best_time.tv_sec ||
		     (st.st_mtim.tv_sec == best_time.tv_sec &&
		      st.st_mtim.tv_nsec > best_time.tv_nsec))) {
			free(best);
			best = p;
			best_time = st.st_mtim;
		} else {
			free(p);
		}
	}
	closedir(d);
	return best;
}

/* Try the listed artifacts best first; 0 with res->path set, -ENOENT when
 * none would do (each refused one is reported), another error when the
 * registry failed. */
static int fetch_listed(struct clip_registry *reg, const char *dir, const char *ref,
			const struct cli_ref_options *o, bool *refused, struct cli_ref_result *res)
{
	struct clip_err err = { 0 };
	struct clip_artifact_list list = { 0 };
	struct clip_artifact_candidate only = { 0 };
	if (o->archive_digest != NULL) {
		/* Asked for by digest: fetched whether listed or not (it is
		 * checked the same way). */
		snprintf(only.digest, sizeof(only.digest), "%s", o->archive_digest);
		list.items = &only;
		list.n = 1;
	} else if (clip_artifact_list(reg, res->manifest, &list, &err) < 0) {
		if (!o->quiet)
			fprintf(stderr, "clip: %s: listing archives failed: %s\n", ref, err.msg);
		return -ENOENT;
	}
	int r = -ENOENT;
	size_t unreadable = 0;
	for (size_t i = 0; i < list.n && r == -ENOENT; i++) {
		const struct clip_artifact_candidate *c = &list.items[i];
		if (o->archive_digest == NULL &&
		    (c->format == 0 || c->format > CLIP_ARCHIVE_FORMAT)) {
			/* Ranked last: every one from here on. */
			unreadable = list.n - i;
			break;
		}
		char *path = NULL;
		if (asprintf(&path, "%s/%s.clip", dir, c->digest + 7) < 0) {
			r = -ENOMEM;
			break;
		}
		uint64_t bytes = 0;
		if (clip_artifact_fetch(reg, c->digest, res->manifest, path, &bytes, &err) == 0) {
			res->path = path;
			res->bytes = bytes;
			res->origin = "registry";
			snprintf(res->artifact, sizeof(res->artifact), "%s", c->digest);
			r = 0;
		} else {
			free(path);
			*refused = true;
			if (!o->quiet || o->archive_digest != NULL)
				fprintf(stderr, "clip: %s: archive refused: %s\n", ref, err.msg);
		}
	}
	if (unreadable)
		*refused = true;
	if (unreadable && !o->quiet && r != 0)
		fprintf(stderr,
			"clip: %s: %zu archive(s) in the registry are of a format this clip does "
			"not read\n",
			ref, unreadable);
	if (list.items != &only)
		clip_artifact_list_clear(&list);
	return r;
}

static void index_progress(void *opaque, size_t layer, size_t nlayers, uint64_t bytes,
			   uint64_t total)
{
	(void)layer;
	(void)nlayers;
	(void)total;
	double *last = opaque;
	double t = now();
	if (t - *last >= 1.0) {
		*last = t;
		fprintf(stderr, "\r\033[Kclip: indexing, %.1f MB of layer %zu read",
			(double)bytes / 1e6, layer + 1);
	}
}

/* Index the image here into DIR/local.clip. */
static int index_here(const char *dir, const char *ref, const struct cli_ref_options *o,
		      bool refused, struct cli_ref_result *res)
{
	char *path = NULL;
	if (asprintf(&path, "%s/local.clip", dir) < 0)
		return cli_fail(CLI_EXIT_FAILURE, "out of memory");
	if (!o->quiet)
		fprintf(stderr, "clip: %s: no %sarchive in the registry; indexing the image here\n",
			ref, refused ? "usable " : "");
	double last = now();
	struct clip_index_options io = {
		.image_ref = res->source,
		.output = path,
		.platform = o->platform,
		.registry = o->registry,
	};
	if (!o->quiet && isatty(STDERR_FILENO)) {
		io.progress = index_progress;
		io.progress_opaque = &last;
	}
	struct clip_err err = { 0 };
	struct clip_index_summary s = { 0 };
	int r = clip_index_image(&io, &s, &err);
	if (io.progress)
		fputs("\r\033[K", stderr);
	if (r < 0) {
		free(path);
		return cli_error(&err);
	}
	res->path = path;
	res->origin = "indexed";
	return 0;
}

int cli_archive_for_ref(const char *text, const struct cli_ref_options *o,
			struct cli_ref_result *res)
{
	double t0 = now();
	memset(res, 0, sizeof(*res));
	const char *ref_text = strncmp(text, "docker://", 9) == 0 ? text + 9 : text;
	struct clip_err err = { 0 };
	struct clip_ref ref;
	if (clip_ref_parse(ref_text, &ref, &err) < 0)
		return cli_error(&err);
	struct clip_registry *reg = NULL;
	struct clip_image img = { 0 };
	int rc = 0;
	char *dir = NULL;
	if (clip_registry_open(&ref, o->registry, &reg, &err) < 0 ||
	    clip_registry_resolve(reg, clip_ref_manifest_reference(&ref), o->platform, &img, &err) <
		    0) {
		rc = cli_error(&err);
		goto out;
	}
	snprintf(res->manifest, sizeof(res->manifest), "%s", img.manifest_digest);
	if (asprintf(&res->source, "%s/%s@%s", ref.domain, ref.repository, res->manifest) < 0 ||
	    asprintf(&dir, "%s/%s", o->store_dir, res->manifest + 7) < 0) {
		rc = cli_fail(CLI_EXIT_FAILURE, "out of memory");
		goto out;
	}
	int r = mkdir_p(dir);
	if (r < 0) {
		rc = cli_fail(CLI_EXIT_FAILURE, "archive store %s: %s", dir, strerror(-r));
		goto out;
	}

	if (o->archive_digest != NULL) {
		char *p = NULL;
		if (asprintf(&p, "%s/%s.clip", dir, o->archive_digest + 7) >= 0 &&
		    access(p, R_OK) == 0) {
			res->path = p;
			snprintf(res->artifact, sizeof(res->artifact), "%s", o->archive_digest);
		} else {
			free(p);
		}
	} else {
		res->path = store_newest(dir);
	}
	if (res->path != NULL) {
		res->origin = "store";
		goto out;
	}

	bool refused = false;
	r = fetch_listed(reg, dir, text, o, &refused, res);
	if (r == 0)
		goto out;
	if (r != -ENOENT) {
		rc = cli_fail(CLI_EXIT_FAILURE, "%s: %s", text, strerror(-r));
		goto out;
	}
	if (o->archive_digest != NULL) {
		rc = cli_fail(CLI_EXIT_FAILURE, "%s: archive %s could not be used", text,
			      o->archive_digest);
		goto out;
	}
	if (o->no_index) {
		rc = cli_fail(CLI_EXIT_FAILURE,
			      "%s: no usable archive of image %s in the registry, and "
			      "--no-index forbids indexing it here",
			      text, res->manifest);
		goto out;
	}
	rc = index_here(dir, text, o, refused, res);
	if (rc == 0 && o->push_index) {
		struct clip_artifact_pushed pushed;
		if (clip_artifact_push(reg, res->path, &pushed, &err) < 0)
			fprintf(stderr, "clip: warning: %s: pushing the archive failed: %s\n", text,
				err.msg);
		else if (!o->quiet)
			fprintf(stderr, "clip: %s: pushed the archive as %s\n", text,
				pushed.digest);
	}
out:
	if (reg != NULL) {
		struct clip_registry_stats rs;
		clip_registry_stats(reg, &rs);
		res->requests = rs.requests;
	}
	res->seconds = now() - t0;
	if (rc != 0)
		cli_ref_result_clear(res);
	free(dir);
	clip_image_clear(&img);
	clip_registry_free(reg);
	clip_ref_clear(&ref);
	return rc;
}
