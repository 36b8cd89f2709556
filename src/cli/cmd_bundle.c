/* clip bundle, clip unbundle: an OCI runtime bundle (for runc, or podman
 * --rootfs) whose rootfs is overlayfs over a clip mount.
 *
 * BUNDLE/
 *   lower/            the clip mount (unless --lower names one already mounted)
 *   upper/ work/      overlayfs's writable layer and its work directory
 *   rootfs/           the overlay: what the container sees and writes
 *   config.json       the runtime spec, from the image config (src/lib/bundle.c)
 *   clip-bundle.json  what clip bundle did, so that clip unbundle undoes exactly that
 */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <ftw.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cli.h"
#include "clip/bundle.h"
#include "clip/fuse.h"

#define STATE_FILE   "clip-bundle.json"
#define STATE_FORMAT 1

#define OPT_USER     3001
#define OPT_ENV	     3002
#define OPT_ROOTLESS 3003
#define OPT_LOWER    3004
#define OPT_HOSTNAME 3005
#define OPT_KEEP     3006

static void bundle_help(void)
{
	printf("usage: clip bundle [options] [mount options] ARCHIVE BUNDLE [-- ARGS...]\n"
	       "       clip bundle [options] --lower MOUNTPOINT BUNDLE [-- ARGS...]\n"
	       "\n"
	       "Make BUNDLE an OCI runtime bundle of the image indexed in ARCHIVE, ready for\n"
	       "`runc run -b BUNDLE ID` (or `podman run --rootfs BUNDLE/rootfs`):\n"
	       "BUNDLE/lower is a clip mount of ARCHIVE (started with the mount options, see\n"
	       "'clip mount --help'), BUNDLE/rootfs an overlayfs over it whose writes land in\n"
	       "BUNDLE/upper, and BUNDLE/config.json the runtime spec made from the image's\n"
	       "config as umoci makes it: the program is Entrypoint + Cmd (ARGS replace Cmd),\n"
	       "with the image's Env, WorkingDir and User (resolved through the image's own\n"
	       "/etc/passwd and /etc/group), its labels as annotations, and podman's default\n"
	       "capabilities, namespaces and mounts. `clip unbundle BUNDLE` undoes it all.\n"
	       "ARCHIVE may be an image reference ([docker://]REF): its archive is found as\n"
	       "`clip mount` finds it (local store, registry, else indexed here).\n"
	       "Needs root (overlayfs); BUNDLE must be new or empty.\n"
	       "\n"
	       "options:\n"
	       "      --lower MOUNTPOINT        use this clip mount as the lower layer instead\n"
	       "                                of mounting ARCHIVE (unbundle leaves it mounted)\n"
	       "      --user USER               run as USER (name, uid, name:group, uid:gid)\n"
	       "                                instead of the image's User\n"
	       "      --env KEY=VALUE           set a variable over the image's Env (repeatable)\n"
	       "      --hostname NAME           the container's hostname (default: clip)\n"
	       "      --rootless                a spec for a user namespace (as `runc spec\n"
	       "                                --rootless`): the container's root is the\n"
	       "                                calling user, no network namespace\n"
	       "  -h, --help                    this text\n");
}

static void unbundle_help(void)
{
	printf("usage: clip unbundle [--keep-upper] BUNDLE\n"
	       "\n"
	       "Undo `clip bundle`: unmount BUNDLE/rootfs and the clip mount that clip bundle\n"
	       "started (not one given with --lower), then remove what it created. Refuses\n"
	       "while a container still uses the rootfs (runc delete it first).\n"
	       "\n"
	       "options:\n"
	       "      --keep-upper              keep BUNDLE/upper, the container's writes\n"
	       "  -h, --help                    this text\n");
}

/* ---- small helpers ---------------------------------------------------------- */

/* A growing argv for the `clip mount` child. */
struct argv_list {
	char **v;
	size_t n, cap;
};

static bool argv_add(struct argv_list *a, const char *s)
{
	if (a->n + 2 > a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 16;
		char **v = realloc(a->v, cap * sizeof(*v));
		if (v == NULL)
			return false;
		a->v = v;
		a->cap = cap;
	}
	a->v[a->n] = s ? strdup(s) : NULL;
	if (s && a->v[a->n] == NULL)
		return false;
	a->n++;
	a->v[a->n] = NULL;
	return true;
}

static void argv_free(struct argv_list *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
}

static char *path_join(const char *dir, const char *name)
{
	char *out;
	if (asprintf(&out, "%s/%s", dir, name) < 0)
		return NULL;
	return out;
}

/* Whether `path` is the root of a mount (its device differs from its
 * parent's, or it is a bind mount of the same filesystem: mountinfo says). */
static bool is_mountpoint(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (f == NULL)
		return false;
	char *line = NULL;
	size_t cap = 0;
	bool found = false;
	while (!found && getline(&line, &cap, f) > 0) {
		/* id parent major:minor root mountpoint ... (octal escapes for
		 * blanks; bundle paths have none, see check_path). */
		char mnt[PATH_MAX + 1];
		if (sscanf(line, "%*s %*s %*s %*s %4096s", mnt) == 1 && strcmp(mnt, path) == 0)
			found = true;
	}
	free(line);
	fclose(f);
	return found;
}

/* A process (other than in this mount namespace) whose mount namespace
 * holds the filesystem `dev`, the bundle's overlay: a container made from the
 * bundle. Unmounting here would not stop it (its namespace keeps its own
 * copy of the mount), and removing the upper dir would pull its files from
 * under it. Returns its pid, or 0 when there is none. Each namespace is read
 * once. */
static pid_t process_using(dev_t dev)
{
	char own[64] = "", ns[64], path[64];
	ssize_t n = readlink("/proc/self/ns/mnt", own, sizeof(own) - 1);
	own[n > 0 ? n : 0] = '\0';
	DIR *proc = opendir("/proc");
	if (proc == NULL)
		return 0;
	char(*seen)[64] = NULL;
	size_t nseen = 0;
	pid_t found = 0;
	struct dirent *e;
	while (!found && (e = readdir(proc)) != NULL) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);
		if (*end || pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/ns/mnt", pid);
		n = readlink(path, ns, sizeof(ns) - 1);
		if (n <= 0)
			continue;
		ns[n] = '\0';
		bool known = strcmp(ns, own) == 0;
		for (size_t i = 0; !known && i < nseen; i++)
			known = strcmp(seen[i], ns) == 0;
		if (known)
			continue;
		char(*grown)[64] = realloc(seen, (nseen + 1) * sizeof(*seen));
		if (grown == NULL)
			break;
		seen = grown;
		memcpy(seen[nseen++], ns, sizeof(ns));
		snprintf(path, sizeof(path), "/proc/%ld/mountinfo", pid);
		FILE *f = fopen(path, "re");
		if (f == NULL)
			continue;
		char *line = NULL;
		size_t cap = 0;
		unsigned major, minor;
		while (!found && getline(&line, &cap, f) > 0)
			if (sscanf(line, "%*s %*s %u:%u", &major, &minor) == 2 &&
			    makedev(major, minor) == dev)
				found = (pid_t)pid;
		free(line);
		fclose(f);
	}
	free(seen);
	closedir(proc);
	return found;
}

/* overlayfs takes its directories in a comma- and colon-separated option
 * string, and mountinfo escapes blanks: refuse paths that would need it. */
static int check_path(const char *path)
{
	if (strpbrk(path, ",:\\ \t\n") != NULL)
		return cli_fail(CLI_EXIT_FAILURE,
				"bundle %s: a path with ',', ':', '\\' or blanks cannot be an "
				"overlayfs layer",
				path);
	return 0;
}

static int write_file_atomic(const char *path, const char *text)
{
	char tmp[PATH_MAX];
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	FILE *f = fopen(tmp, "we");
	if (f == NULL)
		return -errno;
	bool ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
	ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
	if (fclose(f) != 0 || !ok) {
		int e = errno ? errno : EIO;
		unlink(tmp);
		return -e;
	}
	if (rename(tmp, path) < 0) {
		int e = errno;
		unlink(tmp);
		return -e;
	}
	return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (remove(path) < 0 && errno != ENOENT) {
		fprintf(stderr, "clip: unbundle: remove %s: %s\n", path, strerror(errno));
		return -1;
	}
	(void)type;
	return 0;
}

/* rm -r of `path`, never leaving its filesystem (FTW_MOUNT): a mount left
 * below it is not descended into, and the removal of its mountpoint fails. */
static int remove_tree(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (nftw(path, remove_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) != 0)
		return -EIO;
	return 0;
}

/* Run `clip mount ARGV...` (this binary) and wait: it returns once the mount
 * is ready, leaving its daemon behind. Its errors reach standard error. */
static int run_mount(struct argv_list *args)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		return cli_fail(CLI_EXIT_FAILURE, "bundle: /proc/self/exe: %s", strerror(errno));
	self[n] = '\0';
	free(args->v[0]);
	args->v[0] = strdup(self);
	if (args->v[0] == NULL)
		return cli_fail(CLI_EXIT_FAILURE, "out of memory");
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return cli_fail(CLI_EXIT_FAILURE, "bundle: fork: %s", strerror(errno));
	if (pid == 0) {
		execv(self, args->v);
		fprintf(stderr, "clip: bundle: %s: %s\n", self, strerror(errno));
		_exit(127);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return cli_fail(CLI_EXIT_FAILURE, "bundle: waitpid: %s", strerror(errno));
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	return CLI_EXIT_FAILURE; /* clip mount has said why */
}

/* The image config of the clip mount at `mountpoint` (its root answers
 * CLIP_FUSE_CONFIG_XATTR) into *out, a new string: 0, or the exit status
 * after printing why not. */
static int mount_config(const char *mountpoint, char **out)
{
	*out = NULL;
	ssize_t n = getxattr(mountpoint, CLIP_FUSE_CONFIG_XATTR, NULL, 0);
	char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
	if (buf)
		n = getxattr(mountpoint, CLIP_FUSE_CONFIG_XATTR, buf, (size_t)n);
	if (n < 0 || buf == NULL) {
		int e = n < 0 ? errno : ENOMEM;
		free(buf);
		return cli_fail(CLI_EXIT_FAILURE, "bundle: the image config of %s: %s", mountpoint,
				strerror(e));
	}
	buf[n] = '\0';
	*out = buf;
	return 0;
}

/* Unmount the clip mount at `path` (root: directly; others: fusermount3). */
static int unmount_lower(const char *path)
{
	char *argv[] = { "umount", (char *)path, NULL };
	return cmd_umount(2, argv);
}

/* Start fetching the program the container runs: the kernel reads it ahead
 * through the mount while the caller goes on and the runtime sets the
 * container up (runc needs ~0.1-0.2 s), so that the program's first page
 * faults find it in the page cache, which the overlay shares. Best effort:
 * a program that is not found is runc's error to report. */
static void warm_program(const char *spec, int rootfs_fd)
{
	int fd;
	if (clip_bundle_program_open(spec, rootfs_fd, &fd, NULL, NULL) < 0)
		return;
	posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
	close(fd);
}

/* ---- clip bundle ------------------------------------------------------------ */

struct bundle_args {
	struct argv_list mount; /* "clip" "mount" [mount options] ARCHIVE LOWER */
	const char *archive, *bundle, *lower;
	struct clip_bundle_options spec;
	const char **env;
	size_t nenv;
};

/* Whether option `c` (at `index` of the merged table, -1 for a short one)
 * is a mount option, and if so pass it on. */
static bool pass_mount_option(struct bundle_args *a, const struct option *table, size_t nmount,
			      int c, int index, const char *arg, bool *oom)
{
	char name[64];
	if (c == 'o') {
		*oom = !argv_add(&a->mount, "-o") || !argv_add(&a->mount, arg);
		return true;
	}
	if (index < 0 || (size_t)index >= nmount)
		return false;
	snprintf(name, sizeof(name), "--%s", table[index].name);
	*oom = !argv_add(&a->mount, name) || (table[index].has_arg && !argv_add(&a->mount, arg));
	return true;
}

static int parse_bundle_args(int argc, char **argv, struct bundle_args *a)
{
	static const struct option own[] = {
		{ "user", required_argument, NULL, OPT_USER },
		{ "env", required_argument, NULL, OPT_ENV },
		{ "rootless", no_argument, NULL, OPT_ROOTLESS },
		{ "lower", required_argument, NULL, OPT_LOWER },
		{ "hostname", required_argument, NULL, OPT_HOSTNAME },
		{ "help", no_argument, NULL, 'h' },
	};
	/* The mount options, less --foreground and --help, then ours. */
	size_t nmount = 0, n = 0;
	while (cli_mount_options[nmount].name)
		nmount++;
	struct option table[nmount + sizeof(own) / sizeof(own[0]) + 1];
	for (size_t i = 0; i < nmount; i++)
		if (strcmp(cli_mount_options[i].name, "foreground") != 0 &&
		    strcmp(cli_mount_options[i].name, "help") != 0)
			table[n++] = cli_mount_options[i];
	nmount = n;
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		table[n++] = own[i];
	table[n] = (struct option){ 0 };

	if (!argv_add(&a->mount, "clip") || !argv_add(&a->mount, "mount"))
		return cli_fail(CLI_EXIT_FAILURE, "out of memory");
	bool any_mount_option = false;
	int c, index;
	optind = 1;
	/* "+": options end at the first operand, so that ARGS after -- are
	 * the program's. */
	while (index = -1, (c = getopt_long(argc, argv, "+o:h", table, &index)) != -1) {
		bool oom = false;
		if (pass_mount_option(a, table, nmount, c, index, optarg, &oom)) {
			if (oom)
				return cli_fail(CLI_EXIT_FAILURE, "out of memory");
			any_mount_option = true;
			continue;
		}
		switch (c) {
		case OPT_USER: a->spec.user = optarg; break;
		case OPT_ENV: {
			const char **e = realloc(a->env, (a->nenv + 2) * sizeof(*e));
			if (e == NULL)
				return cli_fail(CLI_EXIT_FAILURE, "out of memory");
			a->env = e;
			a->env[a->nenv++] = optarg;
			a->env[a->nenv] = NULL;
			break;
		}
		case OPT_ROOTLESS: a->spec.rootless = true; break;
		case OPT_LOWER: a->lower = optarg; break;
		case OPT_HOSTNAME: a->spec.hostname = optarg; break;
		case 'h': bundle_help(); return 0;
		default: return cli_usage_error("bundle", "invalid option");
		}
	}
	int operands = a->lower ? 1 : 2;
	int rest = argc - optind;
	/* Operands, then an optional "--" and the program's arguments. */
	if (rest < operands || (rest > operands && strcmp(argv[optind + operands], "--") != 0))
		return cli_usage_error("bundle", a->lower ? "expected --lower MOUNTPOINT BUNDLE"
							  : "expected ARCHIVE BUNDLE");
	if (a->lower && any_mount_option)
		return cli_usage_error("bundle", "--lower excludes mount options: the mount "
						 "exists already");
	a->archive = a->lower ? NULL : argv[optind];
	a->bundle = argv[optind + operands - 1];
	if (rest > operands + 1)
		a->spec.args = (const char *const *)&argv[optind + operands + 1];
	a->spec.env = a->env;
	a->spec.host_uid = getuid();
	a->spec.host_gid = getgid();
	return CLI_GO_ON;
}

/* What a bundle consists of, absolute paths; `created_*` say what this run
 * made, so that a failure removes exactly that. */
struct bundle_paths {
	char *dir, *lower, *upper, *work, *rootfs, *config, *state;
	bool created_dir, mounted_lower, mounted_rootfs;
};

static void bundle_paths_free(struct bundle_paths *p)
{
	free(p->dir);
	free(p->lower);
	free(p->upper);
	free(p->work);
	free(p->rootfs);
	free(p->config);
	free(p->state);
}

static int bundle_paths_make(const char *bundle, const char *lower, struct bundle_paths *p)
{
	if (mkdir(bundle, 0700) == 0)
		p->created_dir = true;
	else if (errno != EEXIST)
		return cli_fail(CLI_EXIT_FAILURE, "bundle %s: %s", bundle, strerror(errno));
	p->dir = realpath(bundle, NULL);
	if (p->dir == NULL)
		return cli_fail(CLI_EXIT_FAILURE, "bundle %s: %s", bundle, strerror(errno));
	p->lower = lower ? realpath(lower, NULL) : path_join(p->dir, "lower");
	if (p->lower == NULL)
		return cli_fail(CLI_EXIT_FAILURE, "--lower %s: %s", lower, strerror(errno));
	p->upper = path_join(p->dir, "upper");
	p->work = path_join(p->dir, "work");
	p->rootfs = path_join(p->dir, "rootfs");
	p->config = path_join(p->dir, "config.json");
	p->state = path_join(p->dir, STATE_FILE);
	if (!p->upper || !p->work || !p->rootfs || !p->config || !p->state)
		return cli_fail(CLI_EXIT_FAILURE, "out of memory");
	int rc;
	if ((rc = check_path(p->dir)) != 0 || (rc = check_path(p->lower)) != 0)
		return rc;
	/* A bundle directory that is not empty may be someone's data or a
	 * bundle in use: refuse rather than mount over or mix into it. */
	if (!p->created_dir) {
		DIR *d = opendir(p->dir);
		if (d == NULL)
			return cli_fail(CLI_EXIT_FAILURE, "bundle %s: %s", bundle, strerror(errno));
		struct dirent *e;
		bool empty = true;
		while (empty && (e = readdir(d)) != NULL)
			empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
		closedir(d);
		if (!empty)
			return cli_fail(CLI_EXIT_FAILURE, "bundle %s: not empty%s", bundle,
					access(p->state, F_OK) == 0
						? " (a bundle already: clip unbundle it first)"
						: "");
	}
	const char *dirs[] = { lower ? NULL : p->lower, p->upper, p->work, p->rootfs };
	for (size_t i = 0; i < 4; i++)
		if (dirs[i] && mkdir(dirs[i], i == 1 ? 0755 : 0700) < 0)
			return cli_fail(CLI_EXIT_FAILURE, "bundle: mkdir %s: %s", dirs[i],
					strerror(errno));
	return 0;
}

/* Undo what bundle_paths_make and the mounts did, after a failure. */
static void bundle_undo(struct bundle_paths *p, bool own_lower)
{
	if (p->mounted_rootfs)
		umount2(p->rootfs, MNT_DETACH);
	if (p->mounted_lower)
		unmount_lower(p->lower);
	if (p->dir == NULL)
		return;
	if (p->config)
		unlink(p->config);
	remove_tree(p->work);
	remove_tree(p->upper);
	if (p->rootfs)
		rmdir(p->rootfs);
	if (own_lower && p->lower)
		rmdir(p->lower);
	if (p->created_dir)
		rmdir(p->dir);
}

static int write_state(const struct bundle_paths *p, const char *archive, bool own_lower)
{
	json_t *s = json_pack("{s:i, s:s?, s:s, s:b}", "format", STATE_FORMAT, "archive", archive,
			      "lower", p->lower, "lower_mounted", own_lower);
	char *text = s ? json_dumps(s, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(s);
	int r = text ? write_file_atomic(p->state, text) : -ENOMEM;
	free(text);
	return r;
}

static int overlay_mount(const struct bundle_paths *p)
{
	char *opts = NULL;
	if (asprintf(&opts, "lowerdir=%s,upperdir=%s,workdir=%s", p->lower, p->upper, p->work) < 0)
		return cli_fail(CLI_EXIT_FAILURE, "out of memory");
	int r = mount("overlay", p->rootfs, "overlay", 0, opts);
	int e = errno;
	free(opts);
	if (r < 0) {
		return cli_fail(CLI_EXIT_FAILURE, "bundle %s: mount overlayfs: %s%s", p->rootfs,
				strerror(e),
				e == EPERM ? " (overlayfs needs root, or a user namespace that "
					     "owns the mount)"
					   : "");
	}
	return 0;
}

int cmd_bundle(int argc, char **argv)
{
	struct bundle_args a = { 0 };
	struct bundle_paths p = { 0 };
	struct clip_err err = { 0 };
	char *spec = NULL, *config = NULL;
	int rootfs_fd = -1;
	int rc = parse_bundle_args(argc, argv, &a);
	if (rc != CLI_GO_ON)
		goto out;
	bool own_lower = a.lower == NULL;
	if ((rc = bundle_paths_make(a.bundle, a.lower, &p)) != 0) {
		bundle_undo(&p, own_lower);
		goto out;
	}
	if (own_lower) {
		if (!argv_add(&a.mount, a.archive) || !argv_add(&a.mount, p.lower)) {
			rc = cli_fail(CLI_EXIT_FAILURE, "out of memory");
			goto fail;
		}
		if ((rc = run_mount(&a.mount)) != 0)
			goto fail;
		p.mounted_lower = true;
	} else if (clip_fuse_find_mount(p.lower, NULL, &err) < 0) {
		rc = cli_fail(CLI_EXIT_FAILURE, "--lower %s", err.msg);
		goto fail;
	}
	rootfs_fd = open(p.lower, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfs_fd < 0) {
		rc = cli_fail(CLI_EXIT_FAILURE, "bundle %s: %s", p.lower, strerror(errno));
		goto fail;
	}
	if ((rc = mount_config(p.lower, &config)) != 0)
		goto fail;
	if (clip_bundle_spec(config, rootfs_fd, &a.spec, &spec, &err) < 0) {
		rc = cli_error(&err);
		goto fail;
	}
	warm_program(spec, rootfs_fd);
	if ((rc = overlay_mount(&p)) != 0)
		goto fail;
	p.mounted_rootfs = true;
	int w = write_file_atomic(p.config, spec);
	if (w == 0)
		w = write_state(&p, a.archive, own_lower);
	if (w < 0) {
		rc = cli_fail(CLI_EXIT_FAILURE, "bundle %s: writing config.json: %s", p.dir,
			      strerror(-w));
		goto fail;
	}
	rc = 0;
	goto out;
fail:
	if (rootfs_fd >= 0) /* it would keep the lower mount busy */
		close(rootfs_fd);
	rootfs_fd = -1;
	bundle_undo(&p, own_lower);
	unlink(p.state ? p.state : "");
out:
	if (rootfs_fd >= 0)
		close(rootfs_fd);
	free(spec);
	free(config);
	free(a.env);
	argv_free(&a.mount);
	bundle_paths_free(&p);
	return rc;
}

/* ---- clip unbundle ---------------------------------------------------------- */

int cmd_unbundle(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "keep-upper", no_argument, NULL, OPT_KEEP },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	bool keep_upper = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_KEEP: keep_upper = true; break;
		case 'h': unbundle_help(); return 0;
		default: return cli_usage_error("unbundle", "invalid option");
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("unbundle", "expected BUNDLE");
	const char *given = argv[optind];
	struct bundle_paths p = { 0 };
	json_t *state = NULL;
	int rc = 0;
	p.dir = realpath(given, NULL);
	if (p.dir == NULL) {
		rc = cli_fail(CLI_EXIT_FAILURE, "unbundle %s: %s", given, strerror(errno));
		goto out;
	}
	p.upper = path_join(p.dir, "upper");
	p.work = path_join(p.dir, "work");
	p.rootfs = path_join(p.dir, "rootfs");
	p.config = path_join(p.dir, "config.json");
	p.state = path_join(p.dir, STATE_FILE);
	if (!p.upper || !p.work || !p.rootfs || !p.config || !p.state) {
		rc = cli_fail(CLI_EXIT_FAILURE, "out of memory");
		goto out;
	}
	json_error_t jerr;
	state = json_load_file(p.state, 0, &jerr);
	json_t *lower = json_object_get(state, "lower");
	if (state == NULL || !json_is_string(lower) ||
	    json_integer_value(json_object_get(state, "format")) != STATE_FORMAT) {
		rc = cli_fail(CLI_EXIT_FAILURE, "unbundle %s: %s", given,
			      access(p.state, F_OK) == 0
				      ? STATE_FILE " is damaged or of another version"
				      : "not a bundle made by clip bundle (no " STATE_FILE ")");
		goto out;
	}
	bool own_lower = json_is_true(json_object_get(state, "lower_mounted"));
	p.lower = strdup(json_string_value(lower));
	if (p.lower == NULL) {
		rc = cli_fail(CLI_EXIT_FAILURE, "out of memory");
		goto out;
	}
	struct stat st;
	pid_t user = 0;
	if (is_mountpoint(p.rootfs) && stat(p.rootfs, &st) == 0 &&
	    (user = process_using(st.st_dev)) != 0) {
		rc = cli_fail(CLI_EXIT_FAILURE,
			      "unbundle %s: process %d still uses %s (a container: runc delete "
			      "it first)",
			      given, (int)user, p.rootfs);
		goto out;
	}
	if (is_mountpoint(p.rootfs) && umount2(p.rootfs, UMOUNT_NOFOLLOW) < 0) {
		int e = errno;
		rc = cli_fail(CLI_EXIT_FAILURE, "unbundle %s: unmount %s: %s%s", given, p.rootfs,
			      strerror(e),
			      e == EBUSY ? " (a container still uses it: runc delete it first)"
					 : "");
		goto out;
	}
	if (own_lower && clip_fuse_find_mount(p.lower, NULL, NULL) == 0 &&
	    (rc = unmount_lower(p.lower)) != 0)
		goto out;
	/* Nothing is mounted here any more: removing cannot reach the image. */
	if (unlink(p.config) < 0 && errno != ENOENT)
		rc = cli_fail(CLI_EXIT_FAILURE, "unbundle: %s: %s", p.config, strerror(errno));
	if (remove_tree(p.work) < 0 || (!keep_upper && remove_tree(p.upper) < 0))
		rc = CLI_EXIT_FAILURE;
	if (rmdir(p.rootfs) < 0 && errno != ENOENT)
		rc = cli_fail(CLI_EXIT_FAILURE, "unbundle: %s: %s", p.rootfs, strerror(errno));
	if (own_lower && rmdir(p.lower) < 0 && errno != ENOENT)
		rc = cli_fail(CLI_EXIT_FAILURE, "unbundle: %s: %s", p.lower, strerror(errno));
	if (rc == 0) {
		unlink(p.state);
		rmdir(p.dir); /* only when empty: --keep-upper, or the user's files, stay */
	}
out:
	json_decref(state);
	bundle_paths_free(&p);
	return rc;
}
