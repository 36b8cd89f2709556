/* clip profile: look at a startup profile (clip/profile.h). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "clip/profile.h"

static void profile_help(void)
{
	printf("usage: clip profile show FILE\n"
	       "\n"
	       "Summarise a startup profile recorded by `clip mount --record-profile`: its\n"
	       "regions (reads of programs, merged when closer than 64 KiB) and bytes, in\n"
	       "all and per layer, and how long the recording ran. The profile's checksum\n"
	       "is checked first.\n"
	       "\n"
	       "options:\n"
	       "  -h, --help                    this text\n");
}

static void print_size(const char *what, uint64_t bytes)
{
	printf("%-10s %" PRIu64 " bytes (%.1f MiB)\n", what, bytes, (double)bytes / 1048576.0);
}

static int show(const char *path)
{
	struct clip_profile *p = NULL;
	struct clip_err err = { 0 };
	if (clip_profile_load(path, &p, &err) < 0)
		return cli_error(&err);
	uint64_t bytes, last_ms = 0;
	size_t regions;
	clip_profile_totals(p, UINT32_MAX, &bytes, &regions);
	for (size_t i = 0; i < p->nregions; i++)
		if (p->regions[i].first_ms > last_ms)
			last_ms = p->regions[i].first_ms;
	printf("profile    %s (version %d)\n", path, CLIP_PROFILE_VERSION);
	printf("regions    %zu\n", regions);
	print_size("bytes", bytes);
	printf("recorded   %.3f s from the first read to the last new region\n",
	       (double)last_ms / 1000.0);
	printf("layers     %u\n", p->nlayers);
	for (uint32_t i = 0; i < p->nlayers; i++) {
		clip_profile_totals(p, i, &bytes, &regions);
		printf("  %u %s: %zu regions, %" PRIu64 " bytes\n", i, p->layers[i], regions,
		       bytes);
	}
	clip_profile_free(p);
	return 0;
}

int cmd_profile(int argc, char **argv)
{
	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		profile_help();
		return 0;
	}
	if (argc != 3 || strcmp(argv[1], "show") != 0)
		return cli_usage_error("profile", "expected: show FILE");
	return show(argv[2]);
}
