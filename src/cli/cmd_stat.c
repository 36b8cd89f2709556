/* clip stat: one path's metadata. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"

static void help(void)
{
	printf("usage: clip stat [--manifest] ARCHIVE PATH\n\n"
	       "Show the metadata of PATH (symlinks are not followed): type, mode, owner,\n"
	       "size, mtime with nanoseconds, links, device numbers, xattrs, and for regular\n"
	       "files the layer and tar offset holding the data.\n"
	       "\n"
	       "options:\n"
	       "      --manifest                print the one manifest line (see 'clip ls "
	       "--help')\n"
	       "  -h, --help                    this text\n");
}

static const char *type_name(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: return "regular file";
	case S_IFDIR: return "directory";
	case S_IFLNK: return "symbolic link";
	case S_IFCHR: return "character device";
	case S_IFBLK: return "block device";
	case S_IFIFO: return "fifo";
	case S_IFSOCK: return "socket";
	}
	return "unknown";
}

int cmd_stat(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "manifest", no_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	bool manifest = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'm': manifest = true; break;
		case 'h': help(); return 0;
		default: return cli_usage_error("stat", "invalid option");
		}
	}
	if (argc - optind != 2)
		return cli_usage_error("stat", "expected ARCHIVE PATH");
	const char *path = argv[optind + 1];
	struct clip_archive *a = cli_open_archive(argv[optind]);
	if (a == NULL)
		return CLI_EXIT_FAILURE;
	struct clip_err err = { 0 };
	uint32_t ino;
	if (clip_archive_resolve(a, path, &ino, &err) < 0) {
		clip_archive_close(a);
		return cli_error(&err);
	}
	if (manifest) {
		cli_print_manifest_line(stdout, a, path, ino);
		clip_archive_close(a);
		return 0;
	}
	struct clip_archive_inode in;
	cli_inode(a, ino, &in);
	char mode[11];
	cli_mode_string(in.mode, mode);
	printf("  File: ");
	cli_print_escaped(stdout, path, strlen(path));
	if (S_ISLNK(in.mode)) {
		fputs(" -> ", stdout);
		cli_print_escaped(stdout, in.symlink, in.size);
	}
	printf("\n  Type: %s\n  Size: %" PRIu64 "\n", type_name(in.mode), in.size);
	printf(" Inode: %u  Links: %u", in.ino, in.nlink);
	if (S_ISCHR(in.mode) || S_ISBLK(in.mode))
		printf("  Device: %u,%u", in.rdev_major, in.rdev_minor);
	printf("\nAccess: (%04o/%s)  Uid: %u  Gid: %u\n", in.mode & 07777, mode, in.uid, in.gid);
	char when[64];
	time_t t = (time_t)in.mtime_sec;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
	printf("Modify: %s.%09u +0000 (%" PRId64 ".%09u)\n", when, in.mtime_nsec, in.mtime_sec,
	       in.mtime_nsec);
	if (S_ISREG(in.mode)) {
		struct clip_archive_layer l;
		clip_archive_layer(a, in.layer, &l);
		printf(" Layer: %u (%s)  Offset: %" PRIu64 "\n", in.layer, l.digest,
		       in.data_offset);
	}
	if (S_ISDIR(in.mode))
		printf("Entries: %u\n", in.nentries);
	for (uint32_t i = 0; i < in.nxattrs; i++) {
		const char *name;
		const unsigned char *value;
		size_t len;
		cli_xattr(a, ino, i, &name, &value, &len);
		printf(" Xattr: %s=0x", name);
		for (size_t k = 0; k < len; k++)
			printf("%02x", value[k]);
		putchar('\n');
	}
	clip_archive_close(a);
	return 0;
}
