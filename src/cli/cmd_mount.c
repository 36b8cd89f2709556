/* clip mount, clip umount, clip stats: an archive as a lazy read-only FUSE
 * filesystem, and the two commands that act on such a mount. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cli.h"
#include "clip/content.h"
#include "clip/fuse.h"
#include "clip/optimize.h"
#include "clip/profile.h"

/* The cache is shared by every mount of the same user; without a bound it
 * would grow with every image ever mounted. */
#define DEFAULT_CACHE_MAX (10ull << 30)
#define DEFAULT_THREADS	  16

/* Beside the read options shared with cat (cli.h). */
#define OPT_CACHE_MAX	   2001
#define OPT_CHUNK_SIZE	   2002
#define OPT_NO_CACHE	   2003
#define OPT_PREFETCH	   2004
#define OPT_LOG		   2005
#define OPT_THREADS	   2006
#define OPT_REMOTE_TIMEOUT 2007
#define OPT_REMOTE_PREFIX  2008
#define OPT_HYDRATE	   2009
#define OPT_RECORD	   2010
#define OPT_RECORD_SECS	   2011
#define OPT_PROFILE	   2012
#define OPT_NO_PROFILE	   2014
#define OPT_MEMORY_CACHE   2013
#define OPT_SUPERVISE	   2015
#define OPT_SERVE_FD	   2016
#define OPT_PLATFORM	   2017
#define OPT_ARCHIVE_DIGEST 2018
#define OPT_NO_INDEX	   2019
#define OPT_PUSH_INDEX	   2020

static void mount_help(void)
{
	printf("usage: clip mount [options] ARCHIVE MOUNTPOINT\n"
	       "       clip mount [options] IMAGE MOUNTPOINT\n"
	       "\n"
	       "Serve the image indexed in ARCHIVE as a read-only filesystem at MOUNTPOINT.\n"
	       "Given an IMAGE reference ([docker://]REF in a registry) instead, its archive\n"
	       "comes from the local archive store (CACHE/archives), else from the registry\n"
	       "(clip push), checked against the image, else the image is indexed here.\n"
	       "File contents are read on demand from the image source recorded in the\n"
	       "archive (or --source) and kept in a disk cache. Without -f the command returns\n"
	       "once the mount is ready, leaving a daemon serving it; `clip umount MOUNTPOINT`,\n"
	       "`fusermount3 -u MOUNTPOINT` or SIGTERM to the daemon unmount it.\n"
	       "\n"
	       "options:\n"
	       "      --cache-dir DIR           disk cache of uncompressed chunks, shared by\n"
	       "                                mounts (default: $XDG_CACHE_HOME/clip, else\n"
	       "                                /var/cache/clip for root, ~/.cache/clip)\n"
	       "      --platform OS/ARCH[/VAR]  IMAGE: manifest to pick from an image index\n"
	       "                                (default: host)\n"
	       "      --archive-digest DIGEST   IMAGE: this archive artifact, not the best listed\n"
	       "      --no-index                IMAGE: fail when the registry has no usable\n"
	       "                                archive, rather than index the image here\n"
	       "      --push-index              IMAGE: push an archive indexed here\n"
	       "      --cache-max SIZE          bound of the disk cache, least recently used\n"
	       "                                chunks evicted (default 10G; 0: unbounded)\n"
	       "      --chunk-size SIZE         disk cache chunk size (default: 1M)\n"
	       "      --memory-cache SIZE       keep in memory the chunks a full disk cache\n"
	       "                                cannot (default 64M; 0: none)\n"
	       "      --no-cache                no disk cache: every read goes to the source\n"
	       "      --prefetch                fetch every layer into the disk cache in the\n"
	       "                                background, yielding to programs' reads\n"
	       "      --hydrate-threshold PCT   once programs read PCT %% of a layer's spans,\n"
	       "                                fetch the rest of it in the background\n"
	       "                                (default 50; off: never)\n"
	       "      --record-profile FILE     record what programs read into a startup\n"
	       "                                profile, written to FILE at unmount (the\n"
	       "                                kernel's read-ahead is off meanwhile, so that\n"
	       "                                it holds only what they read)\n"
	       "      --record-seconds N        record only the first N seconds after the\n"
	       "                                first read (default: all)\n"
	       "      --profile FILE            fetch the regions of a startup profile into\n"
	       "                                the disk cache at once, in the order they\n"
	       "                                were first read, yielding to programs' reads\n"
	       "                                (an archive from clip optimize has one)\n"
	       "      --no-profile              do not replay the archive's own profile\n"
	       "%s"
	       "      --remote-timeout MS       skip the remote cache after MS (default 50)\n"
	       "      --remote-prefix PREFIX    its keys are PREFIX<layer hex>:<chunk> (default\n"
	       "                                clip:)\n"
	       "      --log FILE                append errors after start-up (failed reads) to\n"
	       "                                FILE (default: syslog; standard error with -f)\n"
	       "      --threads N               requests served at once (default %d)\n"
	       "      --supervise               a supervisor keeps the mount and replaces a\n"
	       "                                server that dies without failing a request\n"
	       "                                (Linux 6.9+); `clip restart` starts a new one\n"
	       "  -f, --foreground              serve in the foreground until unmounted\n"
	       "  -o OPT[,OPT...]               FUSE mount options: allow_other, allow_root,\n"
	       "                                suid and dev (root: honour setuid bits and\n"
	       "                                device nodes, off by default), ...; a mount by\n"
	       "                                root is allow_other (every user may read what\n"
	       "                                the image's modes allow) unless noallow_other\n"
	       "  -h, --help                    this text\n",
	       CLI_CONTENT_HELP, DEFAULT_THREADS);
}

/* `path` made absolute against the working directory, which the daemon
 * leaves; NULL when out of memory. */
static char *absolute_path(const char *path)
{
	if (path[0] == '/')
		return strdup(path);
	char cwd[PATH_MAX];
	if (getcwd(cwd, sizeof(cwd)) == NULL)
		return NULL;
	char *out;
	if (asprintf(&out, "%s/%s", cwd, path) < 0)
		return NULL;
	return out;
}

/* --source made absolute when it names a local layout ("oci:DIR" or an
 * existing directory); registry references are kept as given. */
static char *absolute_source(const char *source)
{
	if (strncmp(source, "oci:", 4) == 0) {
		char *dir = absolute_path(source + 4);
		char *out = NULL;
		if (dir && asprintf(&out, "oci:%s", dir) < 0)
			out = NULL;
		free(dir);
		return out;
	}
	struct stat st;
	if (stat(source, &st) == 0 && S_ISDIR(st.st_mode))
		return absolute_path(source);
	return strdup(source);
}

struct mount_args {
	struct cli_content_args read; /* the options shared with cat */
	struct clip_rcache_options remote;
	struct clip_fuse_options fuse;
	const char *log_path;
	bool no_cache;
	const char *archive;
	int archive_arg;	       /* its index in argv (getopt puts the operands last) */
	bool source_given;	       /* --source was on the command line */
	struct cli_ref_options by_ref; /* ARCHIVE is an image reference */
	struct clip_platform platform;
	const char *record_path, *profile_path;
	bool no_profile;
	uint32_t record_seconds;
};

/* Shared with clip bundle, which passes these options on to the mount it
 * starts: an option added here works there too. */
const struct option cli_mount_options[] = {
	CLI_CONTENT_OPTIONS,
	{ "cache-max", required_argument, NULL, OPT_CACHE_MAX },
	{ "chunk-size", required_argument, NULL, OPT_CHUNK_SIZE },
	{ "no-cache", no_argument, NULL, OPT_NO_CACHE },
	{ "prefetch", no_argument, NULL, OPT_PREFETCH },
	{ "log", required_argument, NULL, OPT_LOG },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "remote-timeout", required_argument, NULL, OPT_REMOTE_TIMEOUT },
	{ "remote-prefix", required_argument, NULL, OPT_REMOTE_PREFIX },
	{ "hydrate-threshold", required_argument, NULL, OPT_HYDRATE },
	{ "record-profile", required_argument, NULL, OPT_RECORD },
	{ "record-seconds", required_argument, NULL, OPT_RECORD_SECS },
	{ "profile", required_argument, NULL, OPT_PROFILE },
	{ "no-profile", no_argument, NULL, OPT_NO_PROFILE },
	{ "memory-cache", required_argument, NULL, OPT_MEMORY_CACHE },
	{ "platform", required_argument, NULL, OPT_PLATFORM },
	{ "archive-digest", required_argument, NULL, OPT_ARCHIVE_DIGEST },
	{ "no-index", no_argument, NULL, OPT_NO_INDEX },
	{ "push-index", no_argument, NULL, OPT_PUSH_INDEX },
	{ "supervise", no_argument, NULL, OPT_SUPERVISE },
	/* Internal: how a supervisor starts a server (docs/TAKEOVER.md). */
	{ "serve-fd", required_argument, NULL, OPT_SERVE_FD },
	{ "foreground", no_argument, NULL, 'f' },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

/* The command line into `a`: CLI_GO_ON, or the exit status to end with. */
static int parse_args(int argc, char **argv, struct mount_args *a)
{
	const struct option *opts = cli_mount_options;
	memset(a, 0, sizeof(*a));
	cli_content_args_init(&a->read);
	struct clip_content_options *co = &a->read.content;
	co->cache_max = DEFAULT_CACHE_MAX;
	co->remote_cache_options = &a->remote;
	a->fuse.max_threads = DEFAULT_THREADS;
	uint64_t n;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "fo:h", opts, NULL)) != -1) {
		int urc = 0;
		if (cli_content_option("mount", c, optarg, &a->read, &urc)) {
			if (urc)
				return urc;
			continue;
		}
		switch (c) {
		case OPT_CACHE_MAX:
			if (!cli_parse_size(optarg, &co->cache_max))
				return cli_usage_error("mount", "--cache-max %s: not a size",
						       optarg);
			break;
		case OPT_CHUNK_SIZE:
			if (!cli_parse_size(optarg, &n) || n < 4096 || n > (1u << 30))
				return cli_usage_error("mount",
						       "--chunk-size %s: expected a size from 4K "
						       "to 1G",
						       optarg);
			co->chunk_size = (uint32_t)n;
			break;
		case OPT_MEMORY_CACHE:
			if (!cli_parse_size(optarg, &n))
				return cli_usage_error("mount", "--memory-cache %s: not a size",
						       optarg);
			co->memory_cache_max = n ? n : CLIP_MEMORY_CACHE_OFF;
			break;
		case OPT_NO_CACHE: a->no_cache = true; break;
		case OPT_PREFETCH: a->fuse.prefetch = true; break;
		case OPT_LOG: a->log_path = optarg; break;
		case OPT_THREADS:
			if (!cli_parse_u64(optarg, &n) || n < 1 || n > 1024)
				return cli_usage_error("mount", "--threads %s: expected 1 to 1024",
						       optarg);
			a->fuse.max_threads = (unsigned)n;
			break;
		case OPT_REMOTE_TIMEOUT:
			if (!cli_parse_u64(optarg, &n) || n < 1 || n > 60000)
				return cli_usage_error(
					"mount", "--remote-timeout %s: expected 1 to 60000 ms",
					optarg);
			a->remote.timeout_ms = (long)n;
			break;
		case OPT_REMOTE_PREFIX: a->remote.key_prefix = optarg; break;
		case OPT_HYDRATE:
			if (strcmp(optarg, "off") == 0)
				co->hydrate_percent = 101;
			else if (!cli_parse_u64(optarg, &n) || n < 1 || n > 100)
				return cli_usage_error("mount",
						       "--hydrate-threshold %s: expected 1 to 100 "
						       "or off",
						       optarg);
			else
				co->hydrate_percent = (unsigned)n;
			break;
		case OPT_RECORD: a->record_path = optarg; break;
		case OPT_RECORD_SECS:
			if (!cli_parse_u64(optarg, &n) || n < 1 || n > 86400)
				return cli_usage_error("mount",
						       "--record-seconds %s: expected 1 to 86400",
						       optarg);
			a->record_seconds = (uint32_t)n;
			break;
		case OPT_PROFILE: a->profile_path = optarg; break;
		case OPT_PLATFORM: {
			struct clip_err perr = { 0 };
			if (clip_platform_parse(optarg, &a->platform, &perr) < 0)
				return cli_usage_error("mount", "%s", perr.msg);
			a->by_ref.platform = &a->platform;
			break;
		}
		case OPT_ARCHIVE_DIGEST:
			if (!clip_digest_valid(optarg))
				return cli_usage_error(
					"mount", "--archive-digest %s: expected sha256:<64 hex>",
					optarg);
			a->by_ref.archive_digest = optarg;
			break;
		case OPT_NO_INDEX: a->by_ref.no_index = true; break;
		case OPT_PUSH_INDEX: a->by_ref.push_index = true; break;
		case OPT_NO_PROFILE: a->no_profile = true; break;
		case OPT_SUPERVISE: a->fuse.supervise = true; break;
		case OPT_SERVE_FD:
			if (!cli_parse_u64(optarg, &n) || n < 3 || n > 1024)
				return cli_usage_error("mount", "--serve-fd %s: not a descriptor",
						       optarg);
			a->fuse.serve_fd = (int)n;
			break;
		case 'f': a->fuse.foreground = true; break;
		case 'o': a->fuse.fuse_options = optarg; break;
		case 'h': mount_help(); return 0;
		default: return cli_usage_error("mount", "invalid option");
		}
	}
	if (argc - optind != 2)
		return cli_usage_error("mount", "expected ARCHIVE MOUNTPOINT");
	if (a->no_cache && (co->cache_dir || a->fuse.prefetch || a->profile_path))
		return cli_usage_error("mount",
				       "--no-cache excludes --cache-dir, --prefetch and --profile");
	if (a->no_profile && a->profile_path)
		return cli_usage_error("mount", "--no-profile excludes --profile");
	if (a->record_seconds && !a->record_path)
		return cli_usage_error("mount", "--record-seconds needs --record-profile");
	if (a->by_ref.no_index && a->by_ref.push_index)
		return cli_usage_error("mount", "--no-index excludes --push-index");
	a->archive = argv[optind];
	a->archive_arg = optind;
	a->fuse.mountpoint = argv[optind + 1];
	/* A supervisor starts later servers with the same arguments. */
	a->fuse.server_argv = argv;
	return CLI_GO_ON;
}

/* Every path the daemon uses later, made absolute: it leaves the working
 * directory. The arguments then point at these strings. */
struct mount_paths {
	char *archive, *cache_dir, *source, *log, *ca_file, *record;
	char *stats_extra;  /* how the archive of an image reference was found */
	char **server_argv; /* the arguments of later servers, when they differ */
};

static void mount_paths_free(struct mount_paths *p)
{
	free(p->archive);
	free(p->cache_dir);
	free(p->source);
	free(p->log);
	free(p->ca_file);
	free(p->record);
	free(p->stats_extra);
	free(p->server_argv);
}

/* ARCHIVE is an image reference: its archive into p->archive, and the
 * image into p->source unless --source named another. 0, or the exit
 * status after printing why not. */
static int archive_by_ref(struct mount_args *a, struct mount_paths *p)
{
	if (p->cache_dir == NULL)
		return cli_fail(CLI_EXIT_FAILURE,
				"mount %s: an image reference needs the disk cache (its archive "
				"store); drop --no-cache",
				a->archive);
	char *store = NULL;
	if (asprintf(&store, "%s/archives", p->cache_dir) < 0)
		return cli_fail(CLI_EXIT_FAILURE, "out of memory");
	a->by_ref.registry = &a->read.registry;
	a->by_ref.store_dir = store;
	struct cli_ref_result res;
	int rc = cli_archive_for_ref(a->archive, &a->by_ref, &res);
	a->by_ref.store_dir = NULL;
	free(store);
	if (rc != 0)
		return rc;
	p->archive = res.path;
	res.path = NULL;
	if (a->read.content.source == NULL) {
		p->source = res.source;
		res.source = NULL;
	}
	p->stats_extra = cli_ref_result_stats_json(&res);
	cli_ref_result_clear(&res);
	if (p->stats_extra == NULL)
		return cli_fail(CLI_EXIT_FAILURE, "out of memory");
	a->fuse.stats_extra_json = p->stats_extra;
	return 0;
}

/* After archive_by_ref: a supervisor's later servers (clip mount
 * --serve-fd) are given the archive found and the image's source, so that a
 * takeover never waits for the registry to resolve the reference again. */
static int server_args_by_ref(struct mount_args *a, struct mount_paths *p)
{
	char *const *argv = a->fuse.server_argv;
	size_t n = 0;
	while (argv[n] != NULL)
		n++;
	bool add_source = !a->source_given && p->source != NULL;
	char **out = calloc(n + 3, sizeof(*out));
	if (out == NULL)
		return cli_fail(CLI_EXIT_FAILURE, "out of memory");
	size_t j = 0;
	out[j++] = argv[0];
	if (add_source) {
		out[j++] = (char *)"--source";
		out[j++] = p->source;
	}
	for (size_t i = 1; i < n; i++)
		out[j++] = (int)i == a->archive_arg ? p->archive : argv[i];
	p->server_argv = out;
	a->fuse.server_argv = out;
	return 0;
}

/* Fill `p` from `a` and point `a` at it: 0, or the exit status after
 * printing why not. */
static int make_paths_absolute(struct mount_args *a, struct mount_paths *p)
{
	struct clip_content_options *co = &a->read.content;
	struct clip_registry_options *ro = &a->read.registry;
	if (!a->no_cache) {
		p->cache_dir =
			co->cache_dir ? absolute_path(co->cache_dir) : cli_default_cache_dir();
		if (p->cache_dir == NULL && co->cache_dir)
			return cli_fail(CLI_EXIT_FAILURE, "--cache-dir %s: %s", co->cache_dir,
					strerror(errno));
		if (p->cache_dir == NULL)
			return cli_fail(CLI_EXIT_FAILURE,
					"mount: no cache directory (set HOME or XDG_CACHE_HOME, "
					"give --cache-dir, or --no-cache)");
	}
	if ((co->source && (p->source = absolute_source(co->source)) == NULL) ||
	    (a->log_path && (p->log = absolute_path(a->log_path)) == NULL))
		return cli_fail(CLI_EXIT_FAILURE, "mount: %s", strerror(errno));
	if (cli_is_image_ref(a->archive)) {
		a->source_given = co->source != NULL;
		int rc = archive_by_ref(a, p);
		if (rc == 0)
			rc = server_args_by_ref(a, p);
		if (rc != 0)
			return rc;
	} else if ((p->archive = realpath(a->archive, NULL)) == NULL) {
		return cli_fail(CLI_EXIT_FAILURE, "archive %s: %s", a->archive, strerror(errno));
	}
	if ((ro->ca_file && (p->ca_file = absolute_path(ro->ca_file)) == NULL) ||
	    (a->record_path && (p->record = absolute_path(a->record_path)) == NULL))
		return cli_fail(CLI_EXIT_FAILURE, "mount: %s", strerror(errno));
	if (p->record)
		a->record_path = p->record;
	if (p->ca_file)
		ro->ca_file = p->ca_file;
	co->source = p->source;
	co->cache_dir = p->cache_dir;
	a->log_path = p->log;
	return 0;
}

/* The daemon outlives its caller, so it must not keep the caller's
 * descriptors: a pipe the caller waits to see closed (a test harness, a
 * shell's command substitution) would never close, a file it holds keeps a
 * filesystem busy. Nothing of clip's own is open yet beyond stdio. */
static void close_inherited_fds(int keep)
{
	unsigned first = keep > 0 ? (unsigned)keep + 1 : 3;
	for (int fd = 3; fd < keep; fd++)
		close(fd);
	if (close_range(first, ~0U, 0) < 0)
		for (int fd = (int)first; fd < 4096; fd++)
			close(fd);
}

/* At unmount, in the daemon: the recorded profile into its file, and into
 * the remote cache for the other nodes when there is one. */
struct recording {
	struct clip_profile_recorder *recorder;
	const char *path;
	struct clip_content *share; /* NULL: no remote cache */
};

static int save_profile(void *opaque, struct clip_err *err)
{
	struct recording *r = opaque;
	struct clip_profile *p = NULL;
	int rc = clip_profile_recorder_profile(r->recorder, &p, err);
	if (rc == 0)
		rc = clip_profile_save(p, r->path, err);
	if (rc == 0 && r->share && p->nregions && clip_content_profile_share(r->share, p, err) < 0)
		rc = -1; /* the file is written; the error says what was not */
	clip_profile_free(p);
	return rc;
}

/* The profile to replay, loaded into *out: 0, or the exit status after
 * printing why not. */
static int load_profile(const char *path, struct clip_profile **out)
{
	struct clip_err err = { 0 };
	if (clip_profile_load(path, out, &err) < 0)
		return cli_error(&err);
	return 0;
}

int cmd_mount(int argc, char **argv)
{
	struct mount_args a;
	int rc = parse_args(argc, argv, &a);
	if (rc != CLI_GO_ON)
		return rc;
	struct mount_paths paths = { 0 };
	struct clip_archive *archive = NULL;
	struct clip_content *content = NULL;
	struct clip_profile *profile = NULL;
	struct recording recording = { 0 };
	struct clip_err err = { 0 };
	rc = make_paths_absolute(&a, &paths);
	if (rc != 0)
		goto out;
	if (!a.fuse.foreground || a.fuse.serve_fd > 0)
		close_inherited_fds(a.fuse.serve_fd);
	archive = cli_open_archive(paths.archive);
	if (archive == NULL) {
		rc = CLI_EXIT_FAILURE;
		goto out;
	}
	if (a.profile_path && (rc = load_profile(a.profile_path, &profile)) != 0)
		goto out;
	/* An optimized archive carries its profile: replayed unless told not
	 * to (or with nothing to keep what it fetches). */
	if (!a.profile_path && !a.no_profile && !a.no_cache &&
	    clip_optimize_embedded(archive, &profile, NULL, &err) < 0) {
		rc = cli_error(&err);
		goto out;
	}
	a.read.content.replay_profile = profile;
	bool replaying = profile != NULL; /* the profile is freed once the content took it */
	if (a.record_path) {
		if (clip_profile_recorder_new(archive, a.record_seconds, &recording.recorder,
					      &err) < 0) {
			rc = cli_error(&err);
			goto out;
		}
		recording.path = a.record_path;
		a.read.content.record_profile = recording.recorder;
		a.fuse.unmounted = save_profile;
		a.fuse.exact_reads = true;
		a.fuse.unmounted_opaque = &recording;
	}
	content = cli_open_content(archive, a.archive, &a.read.content);
	if (content == NULL) {
		rc = CLI_EXIT_FAILURE;
		goto out;
	}
	clip_profile_free(profile); /* the content took its regions */
	profile = NULL;
	if (a.read.content.remote_cache && clip_content_remote_usable(content)) {
		recording.share = content;
		/* A node with no profile of its own replays the one another node
		 * shared for this image; a damaged one is not used. */
		if (!a.profile_path && !a.no_profile && !a.no_cache && !replaying &&
		    !a.record_path) {
			int found = clip_content_profile_shared(content, &profile, &err);
			if (found < 0)
				fprintf(stderr, "clip: warning: %s: not replayed\n", err.msg);
			else if (found > 0 && clip_content_replay(content, profile, &err) < 0)
				fprintf(stderr, "clip: warning: the shared profile: %s\n", err.msg);
			clip_profile_free(profile);
			profile = NULL;
			err = (struct clip_err){ 0 };
		}
	}
	a.fuse.fsname = paths.archive;
	a.fuse.log_path = a.log_path;
	if (clip_fuse_serve(archive, content, &a.fuse, &err) < 0)
		rc = cli_error(&err);
out:
	clip_content_close(content);
	clip_profile_recorder_free(recording.recorder);
	clip_profile_free(profile);
	clip_archive_close(archive);
	mount_paths_free(&paths);
	return rc;
}

/* ---- clip umount ---------------------------------------------------------- */

static void umount_help(void)
{
	printf("usage: clip umount MOUNTPOINT\n"
	       "\n"
	       "Unmount a clip mount and wait (up to 30 s) for its daemon to exit, so that a\n"
	       "profile it records is on disk when the command returns. Refuses anything\n"
	       "that is not a clip mount. Root unmounts directly, others through\n"
	       "fusermount3 -u.\n"
	       "\n"
	       "options:\n"
	       "  -h, --help                    this text\n");
}

static int run_fusermount(const char *mountpoint)
{
	pid_t pid = fork();
	if (pid < 0)
		return cli_fail(CLI_EXIT_FAILURE, "umount %s: fork: %s", mountpoint,
				strerror(errno));
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "--", mountpoint, (char *)NULL);
		fprintf(stderr, "clip: umount %s: fusermount3: %s\n", mountpoint, strerror(errno));
		_exit(127);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return cli_fail(CLI_EXIT_FAILURE, "umount %s: waitpid: %s", mountpoint,
					strerror(errno));
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	/* fusermount3 has said why on standard error. */
	return cli_fail(CLI_EXIT_FAILURE, "umount %s: fusermount3 failed", mountpoint);
}

/* The pid of the process serving the clip mount at `path`, from its stats,
 * and in *supervisor its supervisor's (0 without one); 0 when it cannot be
 * told (a dead mount). Silent. */
static pid_t server_pid(const char *path, pid_t *supervisor)
{
	*supervisor = 0;
	char buf[1 << 16];
	ssize_t n = getxattr(path, CLIP_FUSE_STATS_XATTR, buf, sizeof(buf) - 1);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	json_t *root = json_loads(buf, 0, NULL);
	json_int_t pid = json_integer_value(json_object_get(root, "server_pid"));
	json_int_t sup = json_integer_value(json_object_get(root, "supervisor_pid"));
	json_decref(root);
	*supervisor = sup > 0 ? (pid_t)sup : 0;
	return pid > 0 ? (pid_t)pid : 0;
}

/* Wait up to UMOUNT_WAIT_MS for process `pid` to be gone (a zombie counts:
 * its parent is init's to reap); false when it is still there. /proc is read
 * rather than kill(pid, 0), which a user unmounting root's mount may not
 * send. */
#define UMOUNT_WAIT_MS 30000
static bool wait_exit(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	for (int waited = 0; waited < UMOUNT_WAIT_MS; waited += 5) {
		FILE *f = fopen(path, "re");
		if (f == NULL)
			return true;
		char state = 0;
		int got = fscanf(f, "%*d (%*[^)]) %c", &state);
		fclose(f);
		if (got != 1 || state == 'Z' || state == 'X')
			return true;
		usleep(5000);
	}
	return false;
}

int cmd_umount(int argc, char **argv)
{
	if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		umount_help();
		return 0;
	}
	if (argc != 2)
		return cli_usage_error("umount", "expected MOUNTPOINT");
	/* A mount whose daemon died answers ENOTCONN to everything, realpath
	 * included: then the path is taken as given, made absolute. */
	char *path = realpath(argv[1], NULL);
	if (path == NULL)
		path = absolute_path(argv[1]);
	if (path == NULL)
		return cli_fail(CLI_EXIT_FAILURE, "out of memory");
	struct clip_err err = { 0 };
	int rc = 0;
	struct stat st;
	int found = clip_fuse_find_mount(path, NULL, &err);
	if (found == -ENOENT && stat(path, &st) < 0 && errno != ENOTCONN) {
		rc = cli_fail(CLI_EXIT_FAILURE, "umount %s: %s", path, strerror(errno));
	} else if (found < 0) {
		rc = cli_fail(CLI_EXIT_FAILURE, "umount %s", err.msg);
	} else {
		/* Wait for the server: it writes a recorded profile and shares it
		 * after the unmount, and a caller that goes on (removes the
		 * directory, reads the profile) must find that done. */
		pid_t supervisor;
		pid_t pid = server_pid(path, &supervisor);
		if (geteuid() == 0) {
			if (umount2(path, UMOUNT_NOFOLLOW) < 0)
				rc = cli_fail(CLI_EXIT_FAILURE, "umount %s: %s", path,
					      strerror(errno));
		} else {
			rc = run_fusermount(path);
		}
		if (rc == 0 && pid > 0 && !wait_exit(pid))
			fprintf(stderr,
				"clip: warning: umount %s: its server (pid %ld) is still running "
				"after %d s\n",
				path, (long)pid, UMOUNT_WAIT_MS / 1000);
		/* A supervisor (clip mount --supervise) exits once its server has. */
		else if (rc == 0 && supervisor > 0 && !wait_exit(supervisor))
			fprintf(stderr,
				"clip: warning: umount %s: its supervisor (pid %ld) is still "
				"running after %d s\n",
				path, (long)supervisor, UMOUNT_WAIT_MS / 1000);
	}
	free(path);
	return rc;
}

/* ---- clip stats ------------------------------------------------------------ */

static void stats_help(void)
{
	printf("usage: clip stats [--json | --prometheus] MOUNTPOINT\n"
	       "       clip stats MOUNTPOINT --save-profile FILE\n"
	       "\n"
	       "Print the read counters of a clip mount: requests and bytes per read tier\n"
	       "(disk cache, memory cache, remote cache, checkpoint spans, whole layers),\n"
	       "what was fetched from the source, and per layer what programs read.\n"
	       "\n"
	       "options:\n"
	       "      --json                    print them as the mount reports them (the\n"
	       "                                %s extended attribute of its root)\n"
	       "      --prometheus              print them in the Prometheus text format (for\n"
	       "                                node_exporter's textfile collector), labelled\n"
	       "                                with the mount point, tier, layer and reason\n"
	       "      --save-profile FILE       write what a mount recording a profile has\n"
	       "                                recorded so far to FILE (atomically), without\n"
	       "                                unmounting\n"
	       "  -h, --help                    this text\n",
	       CLIP_FUSE_STATS_XATTR);
}

/* The stats JSON of the mount at `path` (a new string), or NULL after
 * printing why. The value grows while the mount serves, so a buffer that
 * turns out too small is retried larger. */
static char *read_stats(const char *path)
{
	size_t cap = 4096;
	for (int attempt = 0; attempt < 8; attempt++, cap *= 4) {
		char *buf = malloc(cap + 1);
		if (buf == NULL) {
			cli_fail(CLI_EXIT_FAILURE, "out of memory");
			return NULL;
		}
		ssize_t n = getxattr(path, CLIP_FUSE_STATS_XATTR, buf, cap);
		if (n >= 0) {
			buf[n] = '\0';
			return buf;
		}
		int e = errno;
		free(buf);
		if (e == ERANGE)
			continue;
		if (e == ENODATA || e == ENOTSUP)
			cli_fail(CLI_EXIT_FAILURE, "stats %s: not the root of a clip mount", path);
		else
			cli_fail(CLI_EXIT_FAILURE, "stats %s: %s", path, strerror(e));
		return NULL;
	}
	cli_fail(CLI_EXIT_FAILURE, "stats %s: the counters keep growing past %zu bytes", path, cap);
	return NULL;
}

static void print_number(json_t *v)
{
	if (json_is_integer(v))
		printf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else if (json_is_real(v))
		printf("%.1f", json_real_value(v));
	else if (json_is_string(v))
		printf("%s", json_string_value(v));
	else
		printf("-");
}

/* Counters as "name: value" lines, the per-tier ones as a table. Fields are
 * printed as the mount reports them, so new counters show up without a
 * change here. */
static void print_stats(json_t *root)
{
	const char *key;
	json_t *v;
	json_object_foreach (root, key, v) {
		if (json_is_object(v))
			continue;
		printf("%-24s ", key);
		print_number(v);
		printf("\n");
	}
	json_t *tiers = json_object_get(root, "tiers");
	if (!json_is_object(tiers) || json_object_size(tiers) == 0)
		return;
	/* Columns: the keys of the first tier. */
	const char *first_name;
	json_t *first;
	json_object_foreach (tiers, first_name, first) {
		break;
	}
	printf("\n%-8s", "tier");
	json_object_foreach (first, key, v) {
		printf(" %14s", key);
	}
	printf("\n");
	const char *tier_name;
	json_t *tier;
	json_object_foreach (tiers, tier_name, tier) {
		printf("%-8s", tier_name);
		json_object_foreach (first, key, v) {
			printf(" ");
			json_t *value = json_object_get(tier, key);
			char cell[64];
			if (json_is_integer(value))
				snprintf(cell, sizeof(cell), "%" JSON_INTEGER_FORMAT,
					 json_integer_value(value));
			else if (json_is_real(value))
				snprintf(cell, sizeof(cell), "%.1f", json_real_value(value));
			else
				snprintf(cell, sizeof(cell), "-");
			printf("%14s", cell);
		}
		printf("\n");
	}
	json_object_foreach (root, key, v) {
		if (!json_is_object(v) || strcmp(key, "tiers") == 0)
			continue;
		printf("\n%s:\n", key);
		const char *sub;
		json_t *sv;
		json_object_foreach (v, sub, sv) {
			printf("  %-22s ", sub);
			print_number(sv);
			printf("\n");
		}
	}
}

/* The profile a recording mount holds so far, its pages joined, into
 * `file`. Pages are made anew for each read, so a profile that changed
 * between two of them fails its checksum and is read again. */
static int save_profile_of(const char *path, const char *file)
{
	struct clip_err err = { 0 };
	for (int attempt = 0; attempt < 5; attempt++) {
		char *text = NULL;
		size_t len = 0;
		for (unsigned page = 0;; page++) {
			char name[64];
			snprintf(name, sizeof(name), "%s%u", CLIP_FUSE_PROFILE_XATTR_PAGE, page);
			char *grown = realloc(text, len + CLIP_FUSE_PROFILE_PAGE + 1);
			if (grown == NULL) {
				free(text);
				return cli_fail(CLI_EXIT_FAILURE, "out of memory");
			}
			text = grown;
			ssize_t n = getxattr(path, name, text + len, CLIP_FUSE_PROFILE_PAGE);
			if (n < 0) {
				int e = errno;
				free(text);
				if (e == ENODATA || e == ENOTSUP)
					return cli_fail(CLI_EXIT_FAILURE,
							"stats %s: not a clip mount recording a "
							"profile (mount --record-profile)",
							path);
				return cli_fail(CLI_EXIT_FAILURE, "stats %s: %s", path,
						strerror(e));
			}
			len += (size_t)n;
			if ((size_t)n < CLIP_FUSE_PROFILE_PAGE)
				break;
		}
		struct clip_profile *p = NULL;
		int rc = clip_profile_decode(text, len, path, &p, &err);
		free(text);
		if (rc == 0) {
			rc = clip_profile_save(p, file, &err);
			clip_profile_free(p);
			return rc < 0 ? cli_error(&err) : 0;
		}
		err = (struct clip_err){ 0 };
	}
	return cli_fail(CLI_EXIT_FAILURE, "stats %s: the profile kept changing while read", path);
}

int cmd_stats(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "save-profile", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "prometheus", no_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	bool json = false, prometheus = false;
	const char *save = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'j': json = true; break;
		case 'P': prometheus = true; break;
		case 's': save = optarg; break;
		case 'h': stats_help(); return 0;
		default: return cli_usage_error("stats", "invalid option");
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("stats", "expected MOUNTPOINT");
	const char *path = argv[optind];
	if (save && (json || prometheus))
		return cli_usage_error("stats", "--save-profile excludes --json and --prometheus");
	if (json && prometheus)
		return cli_usage_error("stats", "--json excludes --prometheus");
	if (save)
		return save_profile_of(path, save);
	char *text = read_stats(path);
	if (text == NULL)
		return CLI_EXIT_FAILURE;
	int rc = 0;
	if (json) {
		printf("%s\n", text);
	} else {
		json_error_t jerr;
		json_t *root = json_loads(text, 0, &jerr);
		if (!json_is_object(root))
			rc = cli_fail(CLI_EXIT_FAILURE, "stats %s: the counters are not JSON: %s",
				      path, jerr.text);
		else if (prometheus) {
			/* The label names the mount however it was reached. */
			char *real = realpath(path, NULL);
			cli_stats_prometheus(stdout, root, real ? real : path);
			free(real);
		} else
			print_stats(root);
		json_decref(root);
	}
	free(text);
	if (fflush(stdout) != 0)
		rc = cli_fail(CLI_EXIT_FAILURE, "write error on standard output: %s",
			      strerror(errno));
	return rc;
}
