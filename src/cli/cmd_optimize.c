/* clip optimize: an archive with checkpoints where a startup profile reads
 * and the profile embedded (clip/optimize.h). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "clip/optimize.h"
#include "clip/source.h"

#define MAX_PROFILES 64

static void help(void)
{
	printf("usage: clip optimize [options] ARCHIVE --profile FILE [--profile FILE ...] -o OUT\n"
	       "\n"
	       "Write OUT: ARCHIVE with extra gzip checkpoints at the deflate block boundaries\n"
	       "around what the startup profiles read (clip mount --record-profile), so a cold\n"
	       "start fetches little more than that, and with the profiles merged and embedded:\n"
	       "mounting OUT fetches their regions at once (mount --no-profile turns that off).\n"
	       "The boundaries are found by inflating only the spans involved, from the image\n"
	       "source recorded in the archive, each checked against the archive's digests.\n"
	       "The image and its digests stay the same.\n"
	       "\n"
	       "options:\n"
	       "  -o, --output OUT              the archive to write (atomically)\n"
	       "      --profile FILE            a profile; several are merged (a region any of\n"
	       "                                them read is kept, at its earliest first read)\n"
	       "      --max-size PERCENT        bound OUT to PERCENT of the image's compressed\n"
	       "                                size (default 2); checkpoints that save the most\n"
	       "                                bytes per byte of archive come first\n"
	       "      --min-gain SIZE           skip a checkpoint that saves a cold start less\n"
	       "                                than SIZE compressed bytes (default 64K)\n"
	       "      --threads N               spans inflated at once (default: every core)\n"
	       "      --source SRC              read blobs from SRC instead: an OCI layout or a\n"
	       "                                registry repository (a mirror)\n"
	       "  -q, --quiet                   no progress and no summary\n"
	       "%s"
	       "  -h, --help                    this text\n",
	       CLI_REGISTRY_HELP);
}

struct optimize_args {
	const char *archive, *output, *source;
	const char *profiles[MAX_PROFILES];
	size_t nprofiles;
	double max_percent;
	uint64_t min_gain, threads;
	bool quiet;
	struct clip_registry_options registry;
};

static int parse_args(int argc, char **argv, struct optimize_args *a)
{
	enum { OPT_PROFILE = 2001, OPT_MAX_SIZE, OPT_MIN_GAIN, OPT_THREADS, OPT_SOURCE };
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "profile", required_argument, NULL, OPT_PROFILE },
		{ "max-size", required_argument, NULL, OPT_MAX_SIZE },
		{ "min-gain", required_argument, NULL, OPT_MIN_GAIN },
		{ "threads", required_argument, NULL, OPT_THREADS },
		{ "source", required_argument, NULL, OPT_SOURCE },
		{ "quiet", no_argument, NULL, 'q' },
		CLI_REGISTRY_OPTIONS,
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	*a = (struct optimize_args){ .max_percent = 2.0 };
	int c, rc = CLI_GO_ON;
	optind = 1;
	while (rc == CLI_GO_ON && (c = getopt_long(argc, argv, "o:qh", opts, NULL)) != -1) {
		char *end;
		switch (c) {
		case 'o': a->output = optarg; break;
		case 'q': a->quiet = true; break;
		case OPT_SOURCE: a->source = optarg; break;
		case OPT_PROFILE:
			if (a->nprofiles == MAX_PROFILES)
				return cli_usage_error("optimize", "at most %d profiles",
						       MAX_PROFILES);
			a->profiles[a->nprofiles++] = optarg;
			break;
		case OPT_MAX_SIZE:
			a->max_percent = strtod(optarg, &end);
			if (end == optarg || (*end != '\0' && strcmp(end, "%") != 0) ||
			    !(a->max_percent > 0 && a->max_percent <= 100))
				return cli_usage_error(
					"optimize", "--max-size %s: expected a percentage", optarg);
			break;
		case OPT_MIN_GAIN:
			if (!cli_parse_size(optarg, &a->min_gain))
				return cli_usage_error("optimize", "--min-gain %s: expected a size",
						       optarg);
			break;
		case OPT_THREADS:
			if (!cli_parse_u64(optarg, &a->threads) || a->threads == 0 ||
			    a->threads > 256)
				return cli_usage_error("optimize",
						       "--threads %s: expected 1 to 256", optarg);
			break;
		case 'h': help(); return 0;
		default:
			if (!cli_registry_option("optimize", c, optarg, &a->registry, &rc))
				return cli_usage_error("optimize", "unknown option");
		}
	}
	if (rc != CLI_GO_ON)
		return rc;
	if (optind + 1 != argc)
		return cli_usage_error("optimize", "expected one ARCHIVE");
	a->archive = argv[optind];
	if (a->nprofiles == 0)
		return cli_usage_error("optimize", "needs --profile FILE");
	if (a->output == NULL)
		return cli_usage_error("optimize", "needs -o OUT");
	return CLI_GO_ON;
}

static void progress(void *opaque, size_t done, size_t total)
{
	(void)opaque;
	fprintf(stderr, "\rclip optimize: spans %zu/%zu", done, total);
	if (done == total)
		fputc('\n', stderr);
}

static double mib(uint64_t b)
{
	return (double)b / 1048576.0;
}

static void print_report(const struct optimize_args *a, const struct clip_profile *p,
			 const struct clip_optimize_report *r)
{
	uint64_t bytes;
	size_t regions;
	clip_profile_totals(p, UINT32_MAX, &bytes, &regions);
	printf("optimized    %s\n", a->output);
	printf("profile      %zu regions, %.1f MiB (%zu profile%s merged)\n", regions, mib(bytes),
	       a->nprofiles, a->nprofiles == 1 ? "" : "s");
	printf("hot runs     %zu (runs of hot chunks in gzip layers)\n", r->runs);
	printf("spans        %zu inflated, %.1f MiB fetched, to find block boundaries\n", r->spans,
	       mib(r->fetched));
	printf("checkpoints  +%zu of %zu found (%zu in all), windows +%.1f KiB\n", r->added,
	       r->found, r->checkpoints, (double)r->window_bytes / 1024.0);
	printf("archive      %" PRIu64 " -> %" PRIu64 " bytes (+%.1f%%; %.2f%% of the %.1f MiB "
	       "compressed image)\n",
	       r->size_before, r->size_after,
	       r->size_before ? 100.0 * ((double)r->size_after - (double)r->size_before) /
					(double)r->size_before
			      : 0.0,
	       r->image_bytes ? 100.0 * (double)r->size_after / (double)r->image_bytes : 0.0,
	       mib(r->image_bytes));
	printf("cold fetch   %.1f MiB -> %.1f MiB of compressed spans for the hot chunks "
	       "(each span once)\n",
	       mib(r->hot_before), mib(r->hot_after));
}

int cmd_optimize(int argc, char **argv)
{
	struct optimize_args a;
	int rc = parse_args(argc, argv, &a);
	if (rc != CLI_GO_ON)
		return rc;
	struct clip_archive *archive = cli_open_archive(a.archive);
	if (archive == NULL)
		return CLI_EXIT_FAILURE;
	struct clip_err err = { 0 };
	struct clip_profile *loaded[MAX_PROFILES] = { 0 };
	struct clip_profile *merged = NULL;
	struct clip_source source = { 0 };
	bool source_open = false;
	for (size_t i = 0; rc == CLI_GO_ON && i < a.nprofiles; i++)
		if (clip_profile_load(a.profiles[i], &loaded[i], &err) < 0)
			rc = cli_error(&err);
	if (rc == CLI_GO_ON && clip_profile_merge((const struct clip_profile *const *)loaded,
						  a.nprofiles, &merged, &err) < 0)
		rc = cli_error(&err);
	if (rc == CLI_GO_ON) {
		int r = a.source ? clip_source_open_text(a.source, &a.registry, &source, &err)
				 : clip_source_open_record(clip_archive_source_json(archive),
							   &a.registry, &source, &err);
		if (r < 0)
			rc = cli_error(&err);
		else
			source_open = true;
	}
	if (rc == CLI_GO_ON) {
		/* The bound on the archive, as growth over what it is now. */
		struct clip_archive_stats st;
		clip_archive_stats(archive, &st);
		uint64_t image = 0;
		for (uint32_t i = 0; i < st.layers; i++) {
			struct clip_archive_layer l;
			if (clip_archive_layer(archive, i, &l) == 0)
				image += l.compressed_size;
		}
		double bound = (double)image * a.max_percent / 100.0;
		uint64_t growth = bound > (double)st.file_size ? (uint64_t)bound - st.file_size : 1;
		struct clip_optimize_options o = {
			.profile = merged,
			.source = &source,
			.max_growth = growth,
			.min_gain = a.min_gain,
			.threads = (unsigned)a.threads,
			.progress = !a.quiet && isatty(STDERR_FILENO) ? progress : NULL,
		};
		struct clip_optimize_report r;
		if (clip_optimize(a.output, archive, &o, &r, &err) < 0)
			rc = cli_error(&err);
		else if (!a.quiet)
			print_report(&a, merged, &r);
	}
	if (source_open)
		clip_source_clear(&source);
	clip_profile_free(merged);
	for (size_t i = 0; i < a.nprofiles; i++)
		clip_profile_free(loaded[i]);
	clip_archive_close(archive);
	return rc == CLI_GO_ON ? 0 : rc;
}
