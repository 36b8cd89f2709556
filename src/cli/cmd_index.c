/* clip index: image -> .clip archive. */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "clip/artifact.h"
#include "clip/image.h"
#include "clip/indexer.h"
#include "clip/ref.h"

static void help(void)
{
	printf("usage: clip index IMAGE -o OUT.clip [options]\n"
	       "\n"
	       "Read every layer of IMAGE once and write a metadata-only archive: the merged\n"
	       "file tree and, for gzip layers, checkpoints to read any byte lazily.\n"
	       "\n"
	       "IMAGE:  oci:DIR[:TAG]   a local OCI image layout (TAG: the only or 'latest' "
	       "entry)\n"
	       "        [docker://]REF  an image in a registry, as docker takes it: ubuntu:22.04,\n"
	       "                        ghcr.io/org/app@sha256:..., host:5000/a/b:tag\n"
	       "\n"
	       "Registry credentials come from $REGISTRY_AUTH_FILE, podman's auth.json and\n"
	       "docker's config.json (auths, credHelpers, credsStore), as podman and docker\n"
	       "read them.\n"
	       "\n"
	       "options:\n"
	       "  -o, --output FILE             archive to write (atomically)\n"
	       "      --platform OS/ARCH[/VAR]  manifest to pick from an image index (default: "
	       "host)\n"
	       "      --checkpoint-mib N        uncompressed MiB between checkpoints (0.25-64, "
	       "default 2)\n"
	       "      --large-file-threshold SIZE  checkpoint before files larger than SIZE\n"
	       "                                (default 512K; 'none' to disable)\n"
	       "      --chunk-size SIZE         cache chunk size hashed into the archive "
	       "(64K-64M,\n"
	       "                                default 1M)\n"
	       "  -j, --jobs N                  layers indexed at once (default: "
	       "cores)\n"
	       "      --push                    then push the archive to the image's repository\n"
	       "                                (clip push), for other nodes to mount by "
	       "reference\n"
	       "" CLI_REGISTRY_HELP
	       "  -q, --quiet                   print nothing on success (no progress either)\n"
	       "  -h, --help                    this text\n");
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One status line on a terminal, redrawn at most ten times a second: each
 * layer's share read, and the total with its rate. */
#define PROGRESS_MAX_LAYERS 128 /* docker's limit is 127 */
#define PROGRESS_SHOWN	    16
struct progress {
	pthread_mutex_t lock;
	double start, last;
	uint64_t bytes[PROGRESS_MAX_LAYERS], total[PROGRESS_MAX_LAYERS];
};

static void progress_update(void *opaque, size_t layer, size_t nlayers, uint64_t bytes,
			    uint64_t total)
{
	struct progress *p = opaque;
	pthread_mutex_lock(&p->lock);
	if (layer < PROGRESS_MAX_LAYERS) {
		p->bytes[layer] = bytes;
		p->total[layer] = total;
	}
	double t = now();
	if (t - p->last >= 0.1) {
		p->last = t;
		uint64_t sum = 0;
		char line[512] = "";
		size_t n = 0;
		for (size_t i = 0; i < nlayers && i < PROGRESS_MAX_LAYERS; i++) {
			sum += p->bytes[i];
			if (i >= PROGRESS_SHOWN || n >= sizeof(line))
				continue;
			n += (size_t)snprintf(line + n, sizeof(line) - n, "[%zu] %3.0f%% ", i + 1,
					      p->total[i] ? 100.0 * (double)p->bytes[i] /
								    (double)p->total[i]
							  : 0.0);
		}
		double secs = t - p->start > 1e-3 ? t - p->start : 1e-3;
		fprintf(stderr, "\r\033[K%s %.1f MB read, %.1f MB/s", line, (double)sum / 1e6,
			(double)sum / 1e6 / secs);
	}
	pthread_mutex_unlock(&p->lock);
}

/* --push: the archive just written into the image's repository. */
static int push_archive(const char *image, const char *path, const struct clip_registry_options *ro,
			bool quiet)
{
	const char *text = strncmp(image, "docker://", 9) == 0 ? image + 9 : image;
	struct clip_err err = { 0 };
	struct clip_ref ref;
	if (clip_ref_parse(text, &ref, &err) < 0)
		return cli_error(&err);
	struct clip_registry *reg = NULL;
	struct clip_artifact_pushed pushed;
	int rc = 0;
	if (clip_registry_open(&ref, ro, &reg, &err) < 0 ||
	    clip_artifact_push(reg, path, &pushed, &err) < 0)
		rc = cli_error(&err);
	else if (!quiet)
		printf("pushed %s to %s/%s as %s\n", path, ref.domain, ref.repository,
		       pushed.digest);
	clip_registry_free(reg);
	clip_ref_clear(&ref);
	return rc;
}

int cmd_index(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "platform", required_argument, NULL, 'p' },
		{ "checkpoint-mib", required_argument, NULL, 'c' },
		{ "large-file-threshold", required_argument, NULL, 'l' },
		{ "jobs", required_argument, NULL, 'j' },
		{ "chunk-size", required_argument, NULL, 'C' },
		{ "push", no_argument, NULL, 'P' },
		CLI_REGISTRY_OPTIONS,
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct clip_index_options o = { 0 };
	struct clip_registry_options ro = { 0 };
	struct clip_platform platform;
	bool quiet = false, push = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "o:j:qh", opts, NULL)) != -1) {
		int rc = 0;
		if (cli_registry_option("index", c, optarg, &ro, &rc)) {
			if (rc)
				return rc;
			continue;
		}
		switch (c) {
		case 'o': o.output = optarg; break;
		case 'p': {
			struct clip_err err = { 0 };
			if (clip_platform_parse(optarg, &platform, &err) < 0)
				return cli_usage_error("index", "%s", err.msg);
			o.platform = &platform;
			break;
		}
		case 'c': {
			char *end;
			double mib = strtod(optarg, &end);
			if (*end || end == optarg || !(mib >= 0.25 && mib <= 64))
				return cli_usage_error("index",
						       "--checkpoint-mib %s: expected a number of "
						       "MiB from 0.25 to 64",
						       optarg);
			o.span_bytes = (uint64_t)(mib * 1024 * 1024);
			break;
		}
		case 'l':
			if (strcmp(optarg, "none") == 0)
				o.large_file_threshold = UINT64_MAX;
			else if (!cli_parse_size(optarg, &o.large_file_threshold) ||
				 o.large_file_threshold == 0)
				return cli_usage_error("index",
						       "--large-file-threshold %s: expected a size "
						       "like 512K or 'none'",
						       optarg);
			break;
		case 'j': {
			uint64_t j;
			if (!cli_parse_u64(optarg, &j) || j == 0 || j > 64)
				return cli_usage_error("index", "--jobs %s: expected 1 to 64",
						       optarg);
			o.jobs = (unsigned)j;
			break;
		}
		case 'C':
			if (!cli_parse_size(optarg, &o.chunk_bytes) ||
			    o.chunk_bytes < (64u << 10) || o.chunk_bytes > (64u << 20))
				return cli_usage_error("index",
						       "--chunk-size %s: expected a size from 64K "
						       "to 64M",
						       optarg);
			break;
		case 'P': push = true; break;
		case 'q': quiet = true; break;
		case 'h': help(); return 0;
		default: return cli_usage_error("index", "invalid option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("index", "expected exactly one IMAGE");
	if (o.output == NULL)
		return cli_usage_error("index", "missing -o OUT.clip");
	if (push && strncmp(argv[optind], "oci:", 4) == 0)
		return cli_usage_error("index", "--push needs an image in a registry, not %s",
				       argv[optind]);
	o.image_ref = argv[optind];
	o.registry = &ro;
	struct progress progress = { .start = now() };
	pthread_mutex_init(&progress.lock, NULL);
	if (!quiet && isatty(STDERR_FILENO)) {
		o.progress = progress_update;
		o.progress_opaque = &progress;
	}

	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct clip_err err = { 0 };
	struct clip_index_summary s = { 0 };
	int rc = clip_index_image(&o, &s, &err);
	if (o.progress)
		fputs("\r\033[K", stderr); /* clear the progress line */
	pthread_mutex_destroy(&progress.lock);
	if (rc < 0)
		return cli_error(&err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (!quiet) {
		double secs =
			(double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		printf("indexed %s: %zu layers, %zu entries, %zu checkpoints, %.1f MB compressed, "
		       "%.1f MB uncompressed in %.2f s -> %s\n",
		       o.image_ref, s.layers, s.entries, s.checkpoints,
		       (double)s.compressed_bytes / 1e6, (double)s.uncompressed_bytes / 1e6, secs,
		       o.output);
	}
	return push ? push_archive(o.image_ref, o.output, &ro, quiet) : 0;
}
