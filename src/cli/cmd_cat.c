/* clip cat: a file's bytes, read lazily from its layer. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "clip/content.h"

#define CAT_CHUNK (8u << 20) /* several spans per read: less refetched at their edges */

static void help(void)
{
	printf("usage: clip cat [options] ARCHIVE PATH\n\n"
	       "Write the bytes of regular file PATH to standard output. Only the compressed\n"
	       "spans holding them are read and inflated, from the image source recorded in\n"
	       "the archive.\n"
	       "\n"
	       "options:\n"
	       "      --offset N                start at byte N\n"
	       "      --length N                at most N bytes\n"
	       "      --cache-dir DIR           read through (and fill) a disk cache of\n"
	       "                                uncompressed chunks (default: none)\n"
	       "%s"
	       "      --stats                   print spans inflated and bytes read to standard\n"
	       "                                error\n"
	       "  -h, --help                    this text\n",
	       CLI_CONTENT_HELP);
}

struct cat_args {
	struct cli_content_args read; /* the options shared with mount */
	uint64_t offset, length;
	bool stats;
	const char *archive, *path;
};

/* The command line into `a`: CLI_GO_ON, or the exit status to end with. */
static int parse_args(int argc, char **argv, struct cat_args *a)
{
	static const struct option opts[] = {
		{ "offset", required_argument, NULL, 'O' },
		{ "length", required_argument, NULL, 'L' },
		{ "stats", no_argument, NULL, 'S' },
		CLI_CONTENT_OPTIONS,
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	cli_content_args_init(&a->read);
	/* One file, once: hydrating its layer would only delay the exit. */
	a->read.content.hydrate_percent = 101;
	a->offset = 0;
	a->length = UINT64_MAX;
	a->stats = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		int urc = 0;
		if (cli_content_option("cat", c, optarg, &a->read, &urc)) {
			if (urc)
				return urc;
			continue;
		}
		switch (c) {
		case 'O':
			if (!cli_parse_u64(optarg, &a->offset))
				return cli_usage_error("cat", "--offset %s: not a number", optarg);
			break;
		case 'L':
			if (!cli_parse_u64(optarg, &a->length))
				return cli_usage_error("cat", "--length %s: not a number", optarg);
			break;
		case 'S': a->stats = true; break;
		case 'h': help(); return 0;
		default: return cli_usage_error("cat", "invalid option");
		}
	}
	if (argc - optind != 2)
		return cli_usage_error("cat", "expected ARCHIVE PATH");
	a->archive = argv[optind];
	a->path = argv[optind + 1];
	return CLI_GO_ON;
}

/* Bytes [offset, offset + length) of regular file `ino` (of `size` bytes,
 * named `path` in messages) to standard output: 0 or the exit status after
 * printing why not. */
static int copy_out(struct clip_content *content, uint32_t ino, uint64_t size, const char *path,
		    uint64_t offset, uint64_t length)
{
	unsigned char *buf = malloc(CAT_CHUNK);
	if (buf == NULL)
		return cli_fail(CLI_EXIT_FAILURE, "out of memory");
	struct clip_err err = { 0 };
	int rc = 0;
	uint64_t end = offset + length < offset ? UINT64_MAX : offset + length;
	if (end > size)
		end = size;
	for (uint64_t pos = offset; pos < end;) {
		size_t want = end - pos < CAT_CHUNK ? (size_t)(end - pos) : CAT_CHUNK;
		ssize_t n = clip_content_read(content, ino, buf, want, pos, &err);
		if (n < 0) {
			clip_err_prefix(&err, "%s", path);
			rc = cli_error(&err);
			break;
		}
		if (n == 0)
			break;
		if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n) {
			rc = cli_fail(CLI_EXIT_FAILURE, "write error on standard output: %s",
				      strerror(errno));
			break;
		}
		pos += (uint64_t)n;
	}
	free(buf);
	if (rc == 0 && fflush(stdout) != 0)
		rc = cli_fail(CLI_EXIT_FAILURE, "write error on standard output: %s",
			      strerror(errno));
	return rc;
}

static void print_stats(const struct clip_content *content)
{
	struct clip_content_stats s;
	clip_content_stats(content, &s);
	fprintf(stderr,
		"spans: %" PRIu64 "  compressed bytes read: %" PRIu64 "  bytes inflated: %" PRIu64
		"  source requests: %" PRIu64 "  source bytes: %" PRIu64 "\n",
		s.gz.spans, s.gz.compressed_bytes, s.gz.inflated_bytes, s.source_requests,
		s.source_bytes);
	char *json = clip_content_stats_json(content);
	if (json)
		fprintf(stderr, "%s\n", json);
	free(json);
}

int cmd_cat(int argc, char **argv)
{
	struct cat_args a;
	int rc = parse_args(argc, argv, &a);
	if (rc != CLI_GO_ON)
		return rc;
	struct clip_archive *archive = cli_open_archive(a.archive);
	if (archive == NULL)
		return CLI_EXIT_FAILURE;
	struct clip_err err = { 0 };
	struct clip_content *content = NULL;
	uint32_t ino;
	struct clip_archive_inode in;
	if (clip_archive_resolve(archive, a.path, &ino, &err) < 0) {
		rc = cli_error(&err);
		goto out;
	}
	cli_inode(archive, ino, &in);
	if (!S_ISREG(in.mode)) {
		rc = cli_fail(CLI_EXIT_FAILURE, "%s: not a regular file", a.path);
		goto out;
	}
	content = cli_open_content(archive, a.archive, &a.read.content);
	if (content == NULL) {
		rc = CLI_EXIT_FAILURE;
		goto out;
	}
	rc = copy_out(content, ino, in.size, a.path, a.offset, a.length);
	if (a.stats && rc == 0)
		print_stats(content);
out:
	clip_content_close(content);
	clip_archive_close(archive);
	return rc;
}
