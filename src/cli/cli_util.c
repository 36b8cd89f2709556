#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

int cli_error(const struct clip_err *err)
{
	fprintf(stderr, "clip: %s\n", err->msg[0] ? err->msg : "unknown error");
	return CLI_EXIT_FAILURE;
}

int cli_fail(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("clip: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return code;
}

/* An invalid record ends the command (cli.h). */
static void invalid_record(const struct clip_archive *a, const char *what, uint32_t ino, int rc)
{
	fprintf(stderr, "clip: %s: %s%sinode %u is invalid (%s)\n", clip_archive_path(a), what,
		*what ? " " : "", ino, strerror(-rc));
	exit(CLI_EXIT_FAILURE);
}

void cli_inode(const struct clip_archive *a, uint32_t ino, struct clip_archive_inode *in)
{
	int rc = clip_archive_inode(a, ino, in);
	if (rc < 0)
		invalid_record(a, "", ino, rc);
}

void cli_dirent(const struct clip_archive *a, uint32_t dir, uint32_t index, const char **name,
		size_t *name_len, uint32_t *ino)
{
	int rc = clip_archive_dirent(a, dir, index, name, name_len, ino);
	if (rc < 0)
		invalid_record(a, "an entry of directory", dir, rc);
}

void cli_xattr(const struct clip_archive *a, uint32_t ino, uint32_t index, const char **name,
	       const unsigned char **value, size_t *len)
{
	int rc = clip_archive_xattr(a, ino, index, name, value, len);
	if (rc < 0)
		invalid_record(a, "an xattr of", ino, rc);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "clip %s: ", cmd);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, " (see 'clip %s --help')\n", cmd);
	va_end(ap);
	return CLI_EXIT_USAGE;
}

bool cli_parse_u64(const char *text, uint64_t *out)
{
	if (text == NULL || *text < '0' || *text > '9')
		return false;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(text, &end, 10);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

bool cli_parse_size(const char *text, uint64_t *out)
{
	if (text == NULL || ((*text < '0' || *text > '9') && *text != '.'))
		return false;
	errno = 0;
	char *end;
	long double v = strtold(text, &end);
	if (errno || end == text || v < 0)
		return false;
	long double mult = 1;
	switch (*end) {
	case 'k':
	case 'K':
		mult = 1024.0L;
		end++;
		break;
	case 'm':
	case 'M':
		mult = 1024.0L * 1024;
		end++;
		break;
	case 'g':
	case 'G':
		mult = 1024.0L * 1024 * 1024;
		end++;
		break;
	case 't':
	case 'T':
		mult = 1024.0L * 1024 * 1024 * 1024;
		end++;
		break;
	default: break;
	}
	if (*end == 'i' && mult > 1)
		end++;
	if ((*end == 'b' || *end == 'B'))
		end++;
	if (*end)
		return false;
	v *= mult;
	if (v > 18446744073709551615.0L)
		return false;
	*out = (uint64_t)v;
	return true;
}

void cli_mode_string(uint32_t mode, char out[11])
{
	char t = '?';
	switch (mode & S_IFMT) {
	case S_IFREG: t = '-'; break;
	case S_IFDIR: t = 'd'; break;
	case S_IFLNK: t = 'l'; break;
	case S_IFCHR: t = 'c'; break;
	case S_IFBLK: t = 'b'; break;
	case S_IFIFO: t = 'p'; break;
	case S_IFSOCK: t = 's'; break;
	}
	out[0] = t;
	const char *rwx = "rwxrwxrwx";
	for (int i = 0; i < 9; i++)
		out[1 + i] = (mode & (1u << (8 - i))) ? rwx[i] : '-';
	if (mode & S_ISUID)
		out[3] = (mode & S_IXUSR) ? 's' : 'S';
	if (mode & S_ISGID)
		out[6] = (mode & S_IXGRP) ? 's' : 'S';
	if (mode & S_ISVTX)
		out[9] = (mode & S_IXOTH) ? 't' : 'T';
	out[10] = '\0';
}

void cli_print_escaped(FILE *f, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '\\')
			fputs("\\\\", f);
		else if (ch == '\t')
			fputs("\\t", f);
		else if (ch == '\n')
			fputs("\\n", f);
		else if (ch < 0x20 || ch == 0x7f)
			fprintf(f, "\\x%02x", ch);
		else
			fputc(ch, f);
	}
}

static char type_char(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: return 'f';
	case S_IFDIR: return 'd';
	case S_IFLNK: return 'l';
	case S_IFCHR: return 'c';
	case S_IFBLK: return 'b';
	case S_IFIFO: return 'p';
	case S_IFSOCK: return 's';
	}
	return '?';
}

/* The manifest lists the xattr namespaces an unpacked tree can faithfully
 * show: user.*, trusted.* and security.capability. */
static bool manifest_xattr(const char *name)
{
	return strncmp(name, "user.", 5) == 0 || strncmp(name, "trusted.", 8) == 0 ||
	       strcmp(name, "security.capability") == 0;
}

void cli_print_manifest_line(FILE *f, const struct clip_archive *a, const char *path, uint32_t ino)
{
	struct clip_archive_inode in;
	cli_inode(a, ino, &in);
	cli_print_escaped(f, path, strlen(path));
	uint64_t size = (S_ISREG(in.mode) || S_ISLNK(in.mode)) ? in.size : 0;
	int64_t sec = in.mtime_sec;
	fprintf(f, "\t%c\t%04o\t%u\t%u\t%" PRIu64 "\t%" PRId64 ".%09u\t%u\t", type_char(in.mode),
		in.mode & 07777, in.uid, in.gid, size, sec, in.mtime_nsec, in.nlink);
	if (S_ISCHR(in.mode) || S_ISBLK(in.mode))
		fprintf(f, "%u,%u\t", in.rdev_major, in.rdev_minor);
	else
		fputs("0,0\t", f);
	if (S_ISLNK(in.mode))
		cli_print_escaped(f, in.symlink, in.size);
	else
		fputc('-', f);
	fputc('\t', f);
	bool any = false;
	for (uint32_t i = 0; i < in.nxattrs; i++) {
		const char *name;
		const unsigned char *value;
		size_t len;
		cli_xattr(a, ino, i, &name, &value, &len);
		if (!manifest_xattr(name))
			continue;
		fprintf(f, "%s%s=", any ? "," : "", name);
		for (size_t k = 0; k < len; k++)
			fprintf(f, "%02x", value[k]);
		any = true;
	}
	if (!any)
		fputc('-', f);
	fputc('\n', f);
}

struct clip_content *cli_open_content(const struct clip_archive *archive, const char *name,
				      const struct clip_content_options *options)
{
	struct clip_err err = { 0 };
	struct clip_content *content = NULL;
	if (clip_content_open(archive, options, &content, &err) < 0) {
		cli_error(&err);
		return NULL;
	}
	if (options->remote_cache && !clip_content_remote_usable(content))
		fprintf(stderr,
			"clip: warning: %s has no chunk hashes of this chunk size (format 1 or "
			"another --chunk-size): the remote cache is not used for it\n",
			name);
	return content;
}

struct clip_archive *cli_open_archive(const char *path)
{
	struct clip_err err = { 0 };
	struct clip_archive *a = NULL;
	if (clip_archive_open(path, &a, &err) < 0) {
		cli_error(&err);
		return NULL;
	}
	return a;
}

bool cli_registry_option(const char *cmd, int c, const char *arg, struct clip_registry_options *o,
			 int *rc)
{
	uint64_t n;
	switch (c) {
	case CLI_OPT_CA_FILE:
		if (access(arg, R_OK) != 0)
			*rc = cli_usage_error(cmd, "--ca-file %s: %s", arg, strerror(errno));
		o->ca_file = arg;
		return true;
	case CLI_OPT_PLAIN_HTTP: o->plain_http = true; return true;
	case CLI_OPT_RETRIES:
		if (!cli_parse_u64(arg, &n) || n > 100)
			*rc = cli_usage_error(cmd, "--retries %s: expected 0 to 100", arg);
		o->retries = n == 0 ? -1 : (int)n;
		return true;
	default: return false;
	}
}

void cli_content_args_init(struct cli_content_args *args)
{
	memset(args, 0, sizeof(*args));
	args->content.registry = &args->registry;
}

bool cli_content_option(const char *cmd, int c, const char *arg, struct cli_content_args *args,
			int *rc)
{
	switch (c) {
	case CLI_OPT_SOURCE: args->content.source = arg; return true;
	case CLI_OPT_NO_CHECKPOINTS: args->content.no_checkpoints = true; return true;
	case CLI_OPT_CACHE_DIR: args->content.cache_dir = arg; return true;
	case CLI_OPT_REMOTE_CACHE:
		/* Empty: none, so that a service's environment file (systemd/) can
		 * leave CLIP_REMOTE_CACHE empty and keep one command line. */
		args->content.remote_cache = arg[0] ? arg : NULL;
		return true;
	default: return cli_registry_option(cmd, c, arg, &args->registry, rc);
	}
}

/* The default cache directory: $XDG_CACHE_HOME/clip, /var/cache/clip for
 * root, ~/.cache/clip. */
char *cli_default_cache_dir(void)
{
	const char *xdg = getenv("XDG_CACHE_HOME");
	const char *home = getenv("HOME");
	char *out = NULL;
	if (xdg && xdg[0] == '/') {
		if (asprintf(&out, "%s/clip", xdg) < 0)
			return NULL;
	} else if (geteuid() == 0) {
		out = strdup("/var/cache/clip");
	} else if (home && home[0] == '/') {
		if (asprintf(&out, "%s/.cache/clip", home) < 0)
			return NULL;
	}
	return out;
}
