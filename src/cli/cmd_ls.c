/* clip ls: directory listings, and the whole-tree manifest. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"

static void help(void)
{
	printf("usage: clip ls [-R] [--manifest] ARCHIVE [PATH]\n\n"
	       "List PATH (default /) of ARCHIVE like ls -l.\n"
	       "\n"
	       "options:\n"
	       "  -R, --recursive               list every directory below PATH too\n"
	       "      --manifest                one tab-separated line per path (path type mode\n"
	       "                                uid gid size mtime nlink rdev link xattrs), as\n"
	       "                                scripts/tree-manifest prints for an unpacked tree\n"
	       "  -h, --help                    this text\n");
}

static void print_long(const struct clip_archive *a, const char *name, size_t name_len,
		       uint32_t ino)
{
	struct clip_archive_inode in;
	cli_inode(a, ino, &in);
	char mode[11];
	cli_mode_string(in.mode, mode);
	char when[32];
	time_t t = (time_t)in.mtime_sec;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M", &tm);
	if (S_ISCHR(in.mode) || S_ISBLK(in.mode))
		printf("%s %3u %5u %5u %5u, %5u %s ", mode, in.nlink, in.uid, in.gid, in.rdev_major,
		       in.rdev_minor, when);
	else
		printf("%s %3u %5u %5u %12" PRIu64 " %s ", mode, in.nlink, in.uid, in.gid,
		       S_ISDIR(in.mode) ? 0 : in.size, when);
	cli_print_escaped(stdout, name, name_len);
	if (S_ISLNK(in.mode)) {
		fputs(" -> ", stdout);
		cli_print_escaped(stdout, in.symlink, in.size);
	}
	putchar('\n');
}

struct manifest_line {
	char *path; /* raw path, the sort key */
	char *line; /* formatted, escaped */
};

struct walker {
	const struct clip_archive *archive;
	bool manifest, recursive;
	char *path; /* current path buffer */
	size_t len, cap;
	struct manifest_line *lines; /* manifest mode: collected, sorted at the end */
	size_t nlines, lines_cap;
};

static int collect_line(struct walker *w, const char *path, uint32_t ino)
{
	if (w->nlines == w->lines_cap) {
		size_t cap = w->lines_cap ? w->lines_cap * 2 : 1024;
		struct manifest_line *l = realloc(w->lines, cap * sizeof(*l));
		if (l == NULL)
			return -1;
		w->lines = l;
		w->lines_cap = cap;
	}
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);
	if (f == NULL)
		return -1;
	cli_print_manifest_line(f, w->archive, path, ino);
	if (fclose(f) != 0) {
		free(buf);
		return -1;
	}
	char *copy = strdup(path);
	if (copy == NULL) {
		free(buf);
		return -1;
	}
	w->lines[w->nlines++] = (struct manifest_line){ copy, buf };
	return 0;
}

static int cmp_lines(const void *a, const void *b)
{
	return strcmp(((const struct manifest_line *)a)->path,
		      ((const struct manifest_line *)b)->path);
}

static int path_push(struct walker *w, const char *name, size_t len)
{
	size_t need = w->len + 1 + len + 1;
	if (need > w->cap) {
		size_t cap = w->cap * 2 > need ? w->cap * 2 : need;
		char *p = realloc(w->path, cap);
		if (p == NULL)
			return -1;
		w->path = p;
		w->cap = cap;
	}
	if (w->len == 0 || w->path[w->len - 1] != '/')
		w->path[w->len++] = '/';
	memcpy(w->path + w->len, name, len);
	w->len += len;
	w->path[w->len] = '\0';
	return 0;
}

/* Manifest order is the bytewise order of full paths, which no walk of
 * name-sorted directories gives ("/a" < "/a-c" < "/a/b"), so manifest lines
 * are collected and sorted at the end. Plain listings go directory by
 * directory like ls -R. */
static int walk(struct walker *w, uint32_t dir)
{
	struct clip_archive_inode in;
	cli_inode(w->archive, dir, &in);
	if (!w->manifest && w->recursive) {
		printf("%s:\n", w->len ? w->path : "/");
	}
	for (uint32_t i = 0; i < in.nentries; i++) {
		const char *name;
		size_t len;
		uint32_t child;
		cli_dirent(w->archive, dir, i, &name, &len, &child);
		if (!w->manifest) {
			print_long(w->archive, name, len, child);
			continue;
		}
		size_t saved = w->len;
		if (path_push(w, name, len) < 0)
			return -1;
		if (collect_line(w, w->path, child) < 0)
			return -1;
		struct clip_archive_inode cin;
		cli_inode(w->archive, child, &cin);
		if (S_ISDIR(cin.mode) && walk(w, child) < 0)
			return -1;
		w->len = saved;
		w->path[w->len] = '\0';
	}
	if (!w->manifest && w->recursive) {
		for (uint32_t i = 0; i < in.nentries; i++) {
			const char *name;
			size_t len;
			uint32_t child;
			cli_dirent(w->archive, dir, i, &name, &len, &child);
			struct clip_archive_inode cin;
			cli_inode(w->archive, child, &cin);
			if (!S_ISDIR(cin.mode))
				continue;
			putchar('\n');
			size_t saved = w->len;
			if (path_push(w, name, len) < 0 || walk(w, child) < 0)
				return -1;
			w->len = saved;
			w->path[w->len] = '\0';
		}
	}
	return 0;
}

int cmd_ls(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "recursive", no_argument, NULL, 'R' },
		{ "manifest", no_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct walker w = { 0 };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "Rh", opts, NULL)) != -1) {
		switch (c) {
		case 'R': w.recursive = true; break;
		case 'm': w.manifest = true; break;
		case 'h': help(); return 0;
		default: return cli_usage_error("ls", "invalid option");
		}
	}
	if (optind >= argc || argc - optind > 2)
		return cli_usage_error("ls", "expected ARCHIVE [PATH]");
	const char *path = optind + 1 < argc ? argv[optind + 1] : "/";
	struct clip_archive *a = cli_open_archive(argv[optind]);
	if (a == NULL)
		return CLI_EXIT_FAILURE;
	w.archive = a;
	struct clip_err err = { 0 };
	uint32_t ino;
	int rc = 0;
	if (clip_archive_resolve(a, path, &ino, &err) < 0) {
		rc = cli_error(&err);
		goto out;
	}
	struct clip_archive_inode in;
	cli_inode(a, ino, &in);
	if (!S_ISDIR(in.mode)) {
		if (w.manifest)
			cli_print_manifest_line(stdout, a, path, ino);
		else
			print_long(a, path, strlen(path), ino);
		goto out;
	}
	/* The walk path starts as PATH without a trailing slash ("" for /). */
	size_t plen = strlen(path);
	while (plen && path[plen - 1] == '/')
		plen--;
	w.cap = plen + 256;
	w.path = malloc(w.cap);
	if (w.path == NULL) {
		rc = cli_fail(CLI_EXIT_FAILURE, "out of memory");
		goto out;
	}
	if (plen && path[0] != '/')
		w.path[w.len++] = '/';
	memcpy(w.path + w.len, path, plen);
	w.len += plen;
	w.path[w.len] = '\0';
	if (w.manifest) {
		cli_print_manifest_line(stdout, a, w.len ? w.path : "/", ino);
		if (!w.recursive) {
			/* Only the directory's own entries. */
			for (uint32_t i = 0; i < in.nentries; i++) {
				const char *name;
				size_t len;
				uint32_t child;
				cli_dirent(a, ino, i, &name, &len, &child);
				size_t saved = w.len;
				if (path_push(&w, name, len) < 0) {
					rc = cli_fail(CLI_EXIT_FAILURE, "out of memory");
					goto out;
				}
				cli_print_manifest_line(stdout, a, w.path, child);
				w.len = saved;
				w.path[w.len] = '\0';
			}
			goto out;
		}
	}
	if (walk(&w, ino) < 0) {
		rc = cli_fail(CLI_EXIT_FAILURE, "out of memory");
		goto out;
	}
	if (w.nlines)
		qsort(w.lines, w.nlines, sizeof(*w.lines), cmp_lines);
	for (size_t i = 0; i < w.nlines; i++)
		fputs(w.lines[i].line, stdout);
out:
	for (size_t i = 0; i < w.nlines; i++) {
		free(w.lines[i].path);
		free(w.lines[i].line);
	}
	free(w.lines);
	free(w.path);
	clip_archive_close(a);
	if (fflush(stdout) != 0 && rc == 0)
		rc = cli_fail(CLI_EXIT_FAILURE, "write error on standard output");
	return rc;
}
