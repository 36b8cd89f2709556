/* clip info: what an archive holds. */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "clip/optimize.h"

static void help(void)
{
	printf("usage: clip info ARCHIVE\n\n"
	       "Summarise an archive: the image it came from, its layers, files, bytes,\n"
	       "checkpoints (and the largest span between two), its startup profile and\n"
	       "the checkpoints clip optimize added, and its own size.\n"
	       "\n"
	       "options:\n"
	       "  -h, --help                    this text\n");
}

static const char *compression_name(enum clip_compression c)
{
	switch (c) {
	case CLIP_COMPRESSION_GZIP: return "gzip";
	case CLIP_COMPRESSION_ZSTD: return "zstd";
	default: return "none";
	}
}

static void print_json_field(const char *label, json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);
	if (json_is_string(v))
		printf("%-14s %s\n", label, json_string_value(v));
}

int cmd_info(int argc, char **argv)
{
	if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		help();
		return 0;
	}
	if (argc != 2)
		return cli_usage_error("info", "expected exactly one ARCHIVE");
	struct clip_archive *a = cli_open_archive(argv[1]);
	if (a == NULL)
		return CLI_EXIT_FAILURE;
	struct clip_archive_stats st;
	clip_archive_stats(a, &st);
	json_t *src = json_loads(clip_archive_source_json(a), 0, NULL);
	if (src) {
		print_json_field("source:", src, "type");
		print_json_field("path:", src, "path");
		print_json_field("registry:", src, "registry");
		print_json_field("repository:", src, "repository");
		print_json_field("tag:", src, "tag");
		print_json_field("manifest:", src, "manifest");
		print_json_field("config:", src, "config");
		print_json_field("platform:", src, "platform");
		json_decref(src);
	}
	printf("%-14s %u\n", "format:", st.version);
	printf("%-14s %" PRIu64 " bytes\n", "archive size:", st.file_size);
	printf("%-14s %u\n", "files:", st.entries + 1);
	printf("%-14s %u\n", "inodes:", st.inodes);
	printf("%-14s %" PRIu64 "\n", "file bytes:", st.regular_bytes);
	printf("%-14s %u\n", "layers:", st.layers);
	struct clip_profile *profile = NULL;
	size_t added = 0;
	struct clip_err perr = { 0 };
	int embedded = clip_optimize_embedded(a, &profile, &added, &perr);
	if (embedded > 0)
		printf("%-14s %u (%zu of them added by clip optimize)\n",
		       "checkpoints:", st.checkpoints, added);
	else
		printf("%-14s %u\n", "checkpoints:", st.checkpoints);
	if (embedded > 0) {
		uint64_t bytes;
		size_t regions;
		clip_profile_totals(profile, UINT32_MAX, &bytes, &regions);
		printf("%-14s %zu regions, %" PRIu64 " bytes, replayed at mount (--no-profile: "
		       "not)\n",
		       "profile:", regions, bytes);
	} else if (embedded < 0) {
		printf("%-14s %s\n", "profile:", perr.msg);
	}
	clip_profile_free(profile);
	printf("%-14s %" PRIu64 " bytes\n", "windows:", st.window_bytes);
	printf("%-14s %" PRIu64 " bytes, before files > %" PRIu64 " bytes\n",
	       "span setting:", st.span_bytes, st.large_file_threshold);
	if (st.chunk_bytes)
		printf("%-14s %" PRIu64 " bytes, hashed with SHA-256\n", "chunks:", st.chunk_bytes);
	else
		printf("%-14s none recorded (format 1): caches hash chunks as they fill\n",
		       "chunks:");
	if (st.piece_bytes)
		printf("%-14s %u digests (SHA-256) of %" PRIu64
		       "-byte pieces of the compressed gzip layers\n",
		       "pieces:", st.pieces, st.piece_bytes);
	else if (st.version < 3)
		printf("%-14s none (format %u): spans are verified whole\n", "pieces:", st.version);
	uint64_t ctotal = 0;
	for (uint32_t i = 0; i < st.layers; i++) {
		struct clip_archive_layer l;
		clip_archive_layer(a, i, &l);
		ctotal += l.compressed_size;
		printf("layer %u: %s %s %" PRIu64 " -> %" PRIu64 " bytes, %u checkpoints", i,
		       l.digest, compression_name(l.compression), l.compressed_size,
		       l.uncompressed_size, l.ncheckpoints);
		struct clip_gz_index *gz = NULL;
		struct clip_err err = { 0 };
		if (l.ncheckpoints && clip_archive_layer_gzindex(a, i, &gz, &err) == 0) {
			/* Spans grow where deflate blocks are huge; say so rather than hide it. */
			uint64_t max_span = 0, max_cspan = 0;
			for (size_t k = 0; k < gz->count; k++) {
				uint64_t end =
					k + 1 < gz->count ? gz->points[k + 1].out : gz->usize;
				uint64_t span = end - gz->points[k].out;
				uint64_t cspan =
					clip_gz_span_end(gz, k) - clip_gz_span_start(gz, k);
				if (span > max_span)
					max_span = span;
				if (cspan > max_cspan)
					max_cspan = cspan;
			}
			printf(", largest span %" PRIu64 " bytes (%" PRIu64 " compressed)",
			       max_span, max_cspan);
			clip_gz_index_free(gz);
		}
		printf("\n");
	}
	if (ctotal)
		printf("%-14s %.3f%% of the compressed layers\n",
		       "index ratio:", 100.0 * (double)st.file_size / (double)ctotal);
	clip_archive_close(a);
	return 0;
}
