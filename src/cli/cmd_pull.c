/* clip pull: the archive of an image, from the registry (or indexed here). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "clip/artifact.h"

static void help(void)
{
	printf("usage: clip pull IMAGE -o OUT.clip [options]\n"
	       "\n"
	       "Get the archive of IMAGE ([docker://]REF in a registry): from the local archive\n"
	       "store, else an archive pushed next to the image (clip push), checked against the\n"
	       "image, else index the image here. The archive is kept in the store\n"
	       "(CACHE/archives) and copied to OUT.clip.\n"
	       "\n"
	       "options:\n"
	       "  -o, --output FILE             where to write the archive\n"
	       "      --platform OS/ARCH[/VAR]  manifest to pick from an image index (default: "
	       "host)\n"
	       "      --archive-digest DIGEST   this archive artifact (sha256:...), not the best\n"
	       "                                listed (the newest of the highest format)\n"
	       "      --no-index                fail when the registry has no usable archive\n"
	       "      --push-index              push an archive indexed here for the other nodes\n"
	       "      --cache-dir DIR           the cache whose archive store is used (default:\n"
	       "                                $XDG_CACHE_HOME/clip, /var/cache/clip for root)\n"
	       "" CLI_REGISTRY_HELP "  -q, --quiet                   print nothing on success\n"
	       "  -h, --help                    this text\n");
}

/* Copy `from` to `to` through a temporary file and a rename. */
static int copy_file(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb");
	if (in == NULL)
		return cli_fail(CLI_EXIT_FAILURE, "%s: %s", from, strerror(errno));
	char *tmp = NULL;
	if (asprintf(&tmp, "%s.tmp.XXXXXX", to) < 0) {
		fclose(in);
		return cli_fail(CLI_EXIT_FAILURE, "out of memory");
	}
	int fd = mkstemp(tmp);
	int rc = 0;
	if (fd < 0) {
		rc = cli_fail(CLI_EXIT_FAILURE, "%s: %s", to, strerror(errno));
	} else {
		char buf[1 << 16];
		size_t n;
		while (rc == 0 && (n = fread(buf, 1, sizeof(buf), in)) > 0)
			if (write(fd, buf, n) != (ssize_t)n)
				rc = cli_fail(CLI_EXIT_FAILURE, "%s: %s", to, strerror(errno));
		if (rc == 0 && ferror(in))
			rc = cli_fail(CLI_EXIT_FAILURE, "%s: read error", from);
		if (rc == 0 && (fchmod(fd, 0644) < 0 || fsync(fd) < 0))
			rc = cli_fail(CLI_EXIT_FAILURE, "%s: %s", to, strerror(errno));
		close(fd);
		if (rc == 0 && rename(tmp, to) < 0)
			rc = cli_fail(CLI_EXIT_FAILURE, "%s: %s", to, strerror(errno));
		if (rc != 0)
			unlink(tmp);
	}
	free(tmp);
	fclose(in);
	return rc;
}

int cmd_pull(int argc, char **argv)
{
	enum { OPT_PLATFORM = 1, OPT_DIGEST, OPT_NO_INDEX, OPT_PUSH_INDEX, OPT_CACHE };
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "platform", required_argument, NULL, OPT_PLATFORM },
		{ "archive-digest", required_argument, NULL, OPT_DIGEST },
		{ "no-index", no_argument, NULL, OPT_NO_INDEX },
		{ "push-index", no_argument, NULL, OPT_PUSH_INDEX },
		{ "cache-dir", required_argument, NULL, OPT_CACHE },
		CLI_REGISTRY_OPTIONS,
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct clip_registry_options ro = { 0 };
	struct clip_platform platform;
	struct cli_ref_options o = { .registry = &ro };
	const char *output = NULL, *cache = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "o:qh", opts, NULL)) != -1) {
		int rc = 0;
		if (cli_registry_option("pull", c, optarg, &ro, &rc)) {
			if (rc)
				return rc;
			continue;
		}
		switch (c) {
		case 'o': output = optarg; break;
		case OPT_PLATFORM: {
			struct clip_err err = { 0 };
			if (clip_platform_parse(optarg, &platform, &err) < 0)
				return cli_usage_error("pull", "%s", err.msg);
			o.platform = &platform;
			break;
		}
		case OPT_DIGEST:
			if (!clip_digest_valid(optarg))
				return cli_usage_error(
					"pull", "--archive-digest %s: expected sha256:<64 hex>",
					optarg);
			o.archive_digest = optarg;
			break;
		case OPT_NO_INDEX: o.no_index = true; break;
		case OPT_PUSH_INDEX: o.push_index = true; break;
		case OPT_CACHE: cache = optarg; break;
		case 'q': o.quiet = true; break;
		case 'h': help(); return 0;
		default: return cli_usage_error("pull", "invalid option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("pull", "expected exactly one IMAGE");
	if (output == NULL)
		return cli_usage_error("pull", "missing -o OUT.clip");
	if (o.no_index && o.push_index)
		return cli_usage_error("pull", "--no-index excludes --push-index");
	char *dir = cache ? strdup(cache) : cli_default_cache_dir();
	char *store = NULL;
	if (dir == NULL || asprintf(&store, "%s/archives", dir) < 0) {
		free(dir);
		return cli_fail(CLI_EXIT_FAILURE,
				"pull: no cache directory (set HOME or XDG_CACHE_HOME, or give "
				"--cache-dir)");
	}
	free(dir);
	o.store_dir = store;
	struct cli_ref_result res;
	int rc = cli_archive_for_ref(argv[optind], &o, &res);
	if (rc != 0) {
		free(store);
		return rc;
	}
	rc = copy_file(res.path, output);
	if (rc == 0 && !o.quiet)
		printf("%s: archive of image %s (%s%s%s, %.2f s) -> %s\n", argv[optind],
		       res.manifest,
		       strcmp(res.origin, "registry") == 0 ? "from the registry"
		       : strcmp(res.origin, "store") == 0  ? "from the local store"
							   : "indexed here",
		       res.artifact[0] ? ", artifact " : "", res.artifact, res.seconds, output);
	cli_ref_result_clear(&res);
	free(store);
	return rc;
}
