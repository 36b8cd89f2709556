/* clip: lazy-loading container image filesystem — command dispatch. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "clip/version.h"

struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};

static const struct command commands[] = {
	{ "index", cmd_index, "index an OCI image into a .clip archive" },
	{ "info", cmd_info, "summarise an archive: image, layers, files, checkpoints" },
	{ "ls", cmd_ls, "list a directory of an archive (ls -l like)" },
	{ "stat", cmd_stat, "show the metadata of one path" },
	{ "cat", cmd_cat, "print a file's bytes, read lazily from its layer" },
	{ "push", cmd_push, "store an archive in the registry next to its image" },
	{ "pull", cmd_pull, "get an image's archive from the registry, or index it" },
	{ "mount", cmd_mount, "serve an archive as a lazy read-only FUSE filesystem" },
	{ "umount", cmd_umount, "unmount a clip mount" },
	{ "restart", cmd_restart, "replace the server of a supervised mount, failing no request" },
	{ "stats", cmd_stats, "print the read counters of a clip mount" },
	{ "profile", cmd_profile, "summarise a startup profile (mount --record-profile)" },
	{ "optimize", cmd_optimize, "add checkpoints where a startup profile reads, embed it" },
	{ "bundle", cmd_bundle, "make an OCI runtime bundle (runc) over a clip mount" },
	{ "unbundle", cmd_unbundle, "unmount and remove what clip bundle made" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: clip COMMAND [OPTIONS] ...\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\noptions:\n"
		   "  -h, --help                    this text\n"
		   "      --version                 print clip's version\n"
		   "\n'clip COMMAND --help' describes each command; man clip-COMMAND too.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("clip %s\n", CLIP_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "clip: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return CLI_EXIT_USAGE;
}
