/* clip index: image -> .clip archive. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "clip/image.h"
#include "clip/indexer.h"

static void help(void)
{
	printf("usage: clip index IMAGE -o OUT.clip [options]\n"
	       "\n"
	       "Read every layer of IMAGE once and write a metadata-only archive: the merged\n"
	       "file tree and, for gzip layers, checkpoints to read any byte lazily.\n"
	       "\n"
	       "IMAGE:  oci:DIR[:TAG]   a local OCI image layout (TAG: the only or 'latest' "
	       "entry)\n"
	       "\n"
	       "options:\n"
	       "  -o, --output FILE             archive to write (atomically)\n"
	       "      --platform OS/ARCH[/VAR]  manifest to pick from an image index (default: "
	       "host)\n"
	       "      --checkpoint-mib N        uncompressed MiB between checkpoints (0.25-64, "
	       "default 2)\n"
	       "      --large-file-threshold SIZE  checkpoint before files larger than SIZE\n"
	       "                                (default 512K; 'none' to disable)\n"
	       "  -j, --jobs N                  layers indexed at once (default: cores)\n"
	       "  -q, --quiet                   print nothing on success\n"
	       "  -h, --help                    this text\n");
}

int cmd_index(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "platform", required_argument, NULL, 'p' },
		{ "checkpoint-mib", required_argument, NULL, 'c' },
		{ "large-file-threshold", required_argument, NULL, 'l' },
		{ "jobs", required_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct clip_index_options o = { 0 };
	struct clip_platform platform;
	bool quiet = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "o:j:qh", opts, NULL)) != -1) {
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
		case 'q': quiet = true; break;
		case 'h': help(); return 0;
		default: return cli_usage_error("index", "invalid option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("index", "expected exactly one IMAGE");
	if (o.output == NULL)
		return cli_usage_error("index", "missing -o OUT.clip");
	o.image_ref = argv[optind];

	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct clip_err err = { 0 };
	struct clip_index_summary s = { 0 };
	if (clip_index_image(&o, &s, &err) < 0)
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
	return 0;
}
