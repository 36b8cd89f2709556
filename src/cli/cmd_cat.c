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
	       "  --offset N        start at byte N\n"
	       "  --length N        at most N bytes\n"
	       "  --no-checkpoints  inflate gzip layers from their start (the slow fallback)\n"
	       "  --source SRC      read blobs from SRC instead: an OCI layout (oci:DIR or a\n"
	       "                    directory) or a registry repository (host/repo), a mirror\n"
	       "  --cache-dir DIR   read through (and fill) a disk cache of uncompressed chunks\n"
	       "  --remote-cache URL  read through (and fill) a shared cache of chunks:\n"
	       "                    redis://[user:password@]host:port[/db] or unix:///path\n"
	       "  --stats           print spans inflated and bytes read to standard "
	       "error\n" CLI_REGISTRY_HELP);
}

int cmd_cat(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "offset", required_argument, NULL, 'O' },
		{ "length", required_argument, NULL, 'L' },
		{ "no-checkpoints", no_argument, NULL, 'n' },
		{ "source", required_argument, NULL, 's' },
		{ "stats", no_argument, NULL, 'S' },
		{ "cache-dir", required_argument, NULL, 'D' },
		{ "remote-cache", required_argument, NULL, 'R' },
		CLI_REGISTRY_OPTIONS,
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	uint64_t offset = 0, length = UINT64_MAX;
	struct clip_content_options co = { 0 };
	struct clip_registry_options ro = { 0 };
	co.registry = &ro;
	bool stats = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		int urc = 0;
		if (cli_registry_option("cat", c, optarg, &ro, &urc)) {
			if (urc)
				return urc;
			continue;
		}
		switch (c) {
		case 'O':
			if (!cli_parse_u64(optarg, &offset))
				return cli_usage_error("cat", "--offset %s: not a number", optarg);
			break;
		case 'L':
			if (!cli_parse_u64(optarg, &length))
				return cli_usage_error("cat", "--length %s: not a number", optarg);
			break;
		case 'n': co.no_checkpoints = true; break;
		case 's': co.source = optarg; break;
		case 'S': stats = true; break;
		case 'D': co.cache_dir = optarg; break;
		case 'R': co.remote_cache = optarg; break;
		case 'h': help(); return 0;
		default: return cli_usage_error("cat", "invalid option");
		}
	}
	if (argc - optind != 2)
		return cli_usage_error("cat", "expected ARCHIVE PATH");
	const char *path = argv[optind + 1];
	struct clip_archive *a = cli_open_archive(argv[optind]);
	if (a == NULL)
		return CLI_EXIT_FAILURE;
	struct clip_err err = { 0 };
	struct clip_content *content = NULL;
	unsigned char *buf = NULL;
	int rc = 0;
	uint32_t ino;
	if (clip_archive_resolve(a, path, &ino, &err) < 0) {
		rc = cli_error(&err);
		goto out;
	}
	struct clip_archive_inode in;
	cli_inode(a, ino, &in);
	if (!S_ISREG(in.mode)) {
		rc = cli_fail(CLI_EXIT_FAILURE, "%s: not a regular file", path);
		goto out;
	}
	if (clip_content_open(a, &co, &content, &err) < 0) {
		rc = cli_error(&err);
		goto out;
	}
	if (co.remote_cache && !clip_content_remote_usable(content))
		fprintf(stderr,
			"clip: warning: %s has no chunk hashes of this chunk size (format 1 or "
			"another --chunk-size): the remote cache is not used for it\n",
			argv[optind]);
	buf = malloc(CAT_CHUNK);
	if (buf == NULL) {
		rc = cli_fail(CLI_EXIT_FAILURE, "out of memory");
		goto out;
	}
	uint64_t end = offset + length < offset ? UINT64_MAX : offset + length;
	if (end > in.size)
		end = in.size;
	for (uint64_t pos = offset; pos < end;) {
		size_t want = end - pos < CAT_CHUNK ? (size_t)(end - pos) : CAT_CHUNK;
		ssize_t n = clip_content_read(content, ino, buf, want, pos, &err);
		if (n < 0) {
			clip_err_prefix(&err, "%s", path);
			rc = cli_error(&err);
			goto out;
		}
		if (n == 0)
			break;
		if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n) {
			rc = cli_fail(CLI_EXIT_FAILURE, "write error on standard output: %s",
				      strerror(errno));
			goto out;
		}
		pos += (uint64_t)n;
	}
	if (fflush(stdout) != 0)
		rc = cli_fail(CLI_EXIT_FAILURE, "write error on standard output: %s",
			      strerror(errno));
	if (stats && rc == 0) {
		struct clip_content_stats s;
		clip_content_stats(content, &s);
		fprintf(stderr,
			"spans: %" PRIu64 "  compressed bytes read: %" PRIu64
			"  bytes inflated: %" PRIu64 "  source requests: %" PRIu64
			"  source bytes: %" PRIu64 "\n",
			s.gz.spans, s.gz.compressed_bytes, s.gz.inflated_bytes, s.source_requests,
			s.source_bytes);
		char *json = clip_content_stats_json(content);
		if (json)
			fprintf(stderr, "%s\n", json);
		free(json);
	}
out:
	free(buf);
	clip_content_close(content);
	clip_archive_close(a);
	return rc;
}
