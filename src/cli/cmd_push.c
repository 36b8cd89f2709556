/* clip push: an archive into the registry, as an artifact next to its image. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "clip/artifact.h"
#include "clip/ref.h"

static void help(void)
{
	printf("usage: clip push ARCHIVE [--to REPO] [options]\n"
	       "\n"
	       "Store ARCHIVE in the registry as an OCI artifact that refers to the image it\n"
	       "indexes (its subject), so that other nodes mount the image by reference without\n"
	       "indexing it: registries with the OCI referrers API list it there; for the others\n"
	       "the referrers tag (sha256-<hex of the image manifest>) is updated.\n"
	       "\n"
	       "options:\n"
	       "      --to REPO                 the repository (host/name) to push to; default: "
	       "the\n"
	       "                                one the archive was indexed from. The image must\n"
	       "                                be in it.\n" CLI_REGISTRY_HELP
	       "  -q, --quiet                   print nothing on success\n"
	       "  -h, --help                    this text\n");
}

/* "domain/repository" of an archive indexed from a registry, or NULL. */
static char *archive_repository(const struct clip_archive *a)
{
	json_t *root =
		json_loads(clip_archive_source_json(a) ? clip_archive_source_json(a) : "", 0, NULL);
	const char *type = json_string_value(json_object_get(root, "type"));
	const char *domain = json_string_value(json_object_get(root, "registry"));
	const char *repo = json_string_value(json_object_get(root, "repository"));
	char *out = NULL;
	if (type && strcmp(type, "registry") == 0 && domain && repo &&
	    asprintf(&out, "%s/%s", domain, repo) < 0)
		out = NULL;
	json_decref(root);
	return out;
}

int cmd_push(int argc, char **argv)
{
	enum { OPT_TO = 1 };
	static const struct option opts[] = {
		{ "to", required_argument, NULL, OPT_TO },
		CLI_REGISTRY_OPTIONS,
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct clip_registry_options ro = { 0 };
	const char *to = NULL;
	bool quiet = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
		int rc = 0;
		if (cli_registry_option("push", c, optarg, &ro, &rc)) {
			if (rc)
				return rc;
			continue;
		}
		switch (c) {
		case OPT_TO: to = optarg; break;
		case 'q': quiet = true; break;
		case 'h': help(); return 0;
		default: return cli_usage_error("push", "invalid option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("push", "expected exactly one ARCHIVE");
	const char *path = argv[optind];
	struct clip_archive *a = cli_open_archive(path);
	if (a == NULL)
		return CLI_EXIT_FAILURE;
	char *repo = NULL;
	if (to != NULL) {
		const char *t = strncmp(to, "docker://", 9) == 0 ? to + 9 : to;
		repo = strdup(t);
	} else {
		repo = archive_repository(a);
	}
	clip_archive_close(a);
	if (repo == NULL)
		return cli_fail(CLI_EXIT_FAILURE,
				"archive %s was indexed from a local layout: give --to REPO", path);

	struct clip_err err = { 0 };
	struct clip_ref ref;
	if (clip_ref_parse(repo, &ref, &err) < 0) {
		free(repo);
		return cli_error(&err);
	}
	free(repo);
	int rc = 0;
	struct clip_registry *reg = NULL;
	struct clip_artifact_pushed pushed;
	if (clip_registry_open(&ref, &ro, &reg, &err) < 0 ||
	    clip_artifact_push(reg, path, &pushed, &err) < 0) {
		rc = cli_error(&err);
	} else if (!quiet) {
		printf("pushed %s to %s/%s as %s (archive %s), referring to image %s; listed %s\n",
		       path, ref.domain, ref.repository, pushed.digest, pushed.blob_digest,
		       pushed.subject,
		       pushed.referrers_api ? "by the registry's referrers API"
					    : "in the referrers tag sha256-<image hex>");
	}
	clip_registry_free(reg);
	clip_ref_clear(&ref);
	return rc;
}
