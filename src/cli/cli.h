/* clip CLI: one file per subcommand, shared helpers in cli_util.c. Only this
 * layer prints errors and chooses exit codes. */
#ifndef CLIP_CLI_H
#define CLIP_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <getopt.h>
#include <stdio.h>
#include <jansson.h>

#include "clip/archive.h"
#include "clip/content.h"
#include "clip/err.h"
#include "clip/registry.h"

/* Exit codes: 0 ok, 1 runtime failure, 2 usage error. */
#define CLI_EXIT_FAILURE 1
#define CLI_EXIT_USAGE	 2
/* What a command's option parser returns when the command goes on; any
 * other value is the exit status to end with (0 after --help). */
#define CLI_GO_ON (-1)

int cmd_index(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_stat(int argc, char **argv);
int cmd_cat(int argc, char **argv);
int cmd_mount(int argc, char **argv);
int cmd_umount(int argc, char **argv);
int cmd_restart(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_profile(int argc, char **argv);
int cmd_optimize(int argc, char **argv);
int cmd_bundle(int argc, char **argv);
int cmd_unbundle(int argc, char **argv);
int cmd_push(int argc, char **argv);
int cmd_pull(int argc, char **argv);

/* clip mount's getopt_long table (ends with a zero entry; its short options
 * are "fo:h"), for commands that pass mount options on (clip bundle). */
extern const struct option cli_mount_options[];

/* Print "clip: <message>" for a library error; returns CLI_EXIT_FAILURE. */
int cli_error(const struct clip_err *err);
/* Print "clip: <formatted>" and return `code`. */
int cli_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print "clip <cmd>: <formatted>", a hint to use --help, return CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parse a byte count with an optional K/M/G/T suffix (powers of 1024) and
 * an optional fraction ("0.25M"). False on garbage or overflow. */
bool cli_parse_size(const char *text, uint64_t *out);
/* Parse a plain non-negative integer. */
bool cli_parse_u64(const char *text, uint64_t *out);

/* "drwxr-xr-x" style, 10 characters + NUL. */
void cli_mode_string(uint32_t mode, char out[11]);

/* Print a path with the manifest escaping (see scripts/tree-manifest). */
void cli_print_escaped(FILE *f, const char *s, size_t len);

/* One manifest line (format in scripts/tree-manifest) for inode `ino`
 * reached as `path`. */
void cli_print_manifest_line(FILE *f, const struct clip_archive *archive, const char *path,
			     uint32_t ino);

/* Options shared by every command that talks to a registry: add
 * CLI_REGISTRY_OPTIONS to the getopt_long table, pass every option code to
 * cli_registry_option (true when it was one of them; on a bad value it
 * prints a usage error and sets *rc), and print CLI_REGISTRY_HELP in --help. */
#define CLI_OPT_CA_FILE	   1001
#define CLI_OPT_PLAIN_HTTP 1002
#define CLI_OPT_RETRIES	   1003
/* clang-format off */
#define CLI_REGISTRY_OPTIONS \
	{ "ca-file", required_argument, NULL, CLI_OPT_CA_FILE }, \
	{ "plain-http", no_argument, NULL, CLI_OPT_PLAIN_HTTP }, \
	{ "retries", required_argument, NULL, CLI_OPT_RETRIES }
/* clang-format on */
#define CLI_REGISTRY_HELP                                                                          \
	"      --ca-file PEM             trust this CA bundle for the registry's TLS\n"            \
	"      --plain-http              talk HTTP, not HTTPS, to the registry (loopback\n"        \
	"                                registries always use HTTP)\n"                            \
	"      --retries N               retries of a failed registry request (default 4)\n"
bool cli_registry_option(const char *cmd, int c, const char *arg,
			 struct clip_registry_options *options, int *rc);

/* The read options shared by the commands that read file contents (cat,
 * mount): where blobs come from, the registry options above, the disk and
 * remote caches. Add CLI_CONTENT_OPTIONS to the getopt_long table (it holds
 * CLI_REGISTRY_OPTIONS), pass every option code to cli_content_option (true
 * when it was one of them; on a bad value it prints a usage error and sets
 * *rc), and print CLI_CONTENT_HELP in --help. --cache-dir is parsed here but
 * described by each command, since the default differs: none for cat, the
 * user's cache for mount. */
#define CLI_OPT_SOURCE	       1004
#define CLI_OPT_NO_CHECKPOINTS 1005
#define CLI_OPT_CACHE_DIR      1006
#define CLI_OPT_REMOTE_CACHE   1007
/* clang-format off */
#define CLI_CONTENT_OPTIONS \
	{ "source", required_argument, NULL, CLI_OPT_SOURCE }, \
	{ "no-checkpoints", no_argument, NULL, CLI_OPT_NO_CHECKPOINTS }, \
	{ "cache-dir", required_argument, NULL, CLI_OPT_CACHE_DIR }, \
	{ "remote-cache", required_argument, NULL, CLI_OPT_REMOTE_CACHE }, \
	CLI_REGISTRY_OPTIONS
/* clang-format on */
#define CLI_CONTENT_HELP                                                                           \
	"      --no-checkpoints          gzip layers: fetch and inflate whole layers\n"            \
	"                                (the slow fallback)\n"                                    \
	"      --source SRC              read blobs from SRC instead: an OCI layout\n"             \
	"                                (oci:DIR or a directory) or a registry\n"                 \
	"                                repository (host/repo), a mirror\n"                       \
	"      --remote-cache URL        read through (and fill) a cache of chunks shared\n"       \
	"                                by every node (a Redis Cluster is detected):\n"           \
	"                                redis://[user:password@]host:port[/db] or\n"              \
	"                                unix:///path (empty: none)\n" CLI_REGISTRY_HELP

/* What the read options set. cli_content_args_init zeroes it and points
 * content.registry at registry, so that content is ready to pass to
 * clip_content_open once the options are parsed. It must not be copied. */
struct cli_content_args {
	struct clip_content_options content;
	struct clip_registry_options registry;
};
void cli_content_args_init(struct cli_content_args *args);
bool cli_content_option(const char *cmd, int c, const char *arg, struct cli_content_args *args,
			int *rc);

/* Write `root`, the stats JSON of the mount at `mountpoint`
 * (clip_content_stats_json), to `f` in the Prometheus text exposition format
 * (stats_prometheus.c): clip_<thing>_total counters and gauges, each sample
 * labelled with the mount point, per-tier ones with `tier`, per-layer ones
 * with `layer` (its digest), whole-layer fetches with `reason`. Fields the
 * mount does not report are left out. */
void cli_stats_prometheus(FILE *f, json_t *root, const char *mountpoint);

/* The user's cache directory for clip (a new string; NULL when there is
 * none: no HOME, or out of memory): $XDG_CACHE_HOME/clip, /var/cache/clip
 * for root, ~/.cache/clip. */
char *cli_default_cache_dir(void);

/* ---- archives by image reference (archive_ref.c) ----------------------- */

/* How cli_archive_for_ref finds the archive of an image. */
struct cli_ref_options {
	const struct clip_registry_options *registry;
	const struct clip_platform *platform; /* NULL: the host's */
	const char *store_dir;		      /* the local archive store: CACHE/archives */
	const char *archive_digest;	      /* this artifact only; NULL: the best listed */
	bool no_index;			      /* none found: fail instead of indexing */
	bool push_index;		      /* indexed here: push it for the other nodes */
	bool quiet;			      /* no progress or notes on stderr */
};

/* Where the archive came from and what it cost. */
struct cli_ref_result {
	char *path;	    /* the archive in the store (the caller frees it) */
	char *source;	    /* "domain/repository@sha256:..": the image, for --source */
	const char *origin; /* "store", "registry" or "indexed" */
	char manifest[72];  /* the image manifest */
	char artifact[72];  /* the artifact fetched; "" when none */
	uint64_t bytes;	    /* archive bytes downloaded */
	uint64_t requests;  /* registry requests made */
	double seconds;	    /* from the start to the archive on disk */
};

/* Whether the ARCHIVE argument `arg` is to be read as an image reference:
 * no file by that name, and not a path to a .clip file. */
bool cli_is_image_ref(const char *arg);

/* Find the archive of image `ref` ([docker://]REF, resolved to its manifest
 * for o->platform): in the local store; else an artifact in the registry
 * (clip/artifact.h), checked, into the store; else, unless o->no_index,
 * index it here into the store (and push it with o->push_index; a failed
 * push is only a warning). 0 with *res filled (cli_ref_result_clear), or the
 * exit status after printing why not. */
int cli_archive_for_ref(const char *ref, const struct cli_ref_options *o,
			struct cli_ref_result *res);

void cli_ref_result_clear(struct cli_ref_result *res);

/* The result's counters as JSON members ("archive_origin":...,) for the
 * stats of a mount; a new string, NULL when out of memory. */
char *cli_ref_result_stats_json(const struct cli_ref_result *res);

/* Open an archive or print the error; returns NULL on failure. */
struct clip_archive *cli_open_archive(const char *path);

/* Open the content reader of `archive` (named `name` in messages) or print
 * the error; returns NULL on failure. When a remote cache is given but the
 * archive cannot use it (clip_content_remote_usable), it warns and goes on
 * without it. */
struct clip_content *cli_open_content(const struct clip_archive *archive, const char *name,
				      const struct clip_content_options *options);

/* The archive accessors for commands that walk an opened archive. Records
 * are checked as they are read (archive.h), and an invalid one (an archive
 * that clip did not write) ends the command: "clip: archive inode N is
 * invalid" and exit status 1, as there is nothing a listing could go on
 * with. */
void cli_inode(const struct clip_archive *a, uint32_t ino, struct clip_archive_inode *in);
void cli_dirent(const struct clip_archive *a, uint32_t dir, uint32_t index, const char **name,
		size_t *name_len, uint32_t *ino);
void cli_xattr(const struct clip_archive *a, uint32_t ino, uint32_t index, const char **name,
	       const unsigned char **value, size_t *len);

#endif
