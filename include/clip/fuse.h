/* clip: the FUSE front end — an archive served as a read-only filesystem.
 *
 * libfuse3's low-level API over clip_archive (metadata, answered from the
 * mapping) and clip_content (file bytes, through the read tiers). Inode
 * numbers are the archive's plus one (FUSE's root is 1). The image never
 * changes, so entries and attributes are cached by the kernel for a long
 * time, files are opened with FOPEN_KEEP_CACHE, directories with
 * FOPEN_CACHE_DIR, and every write-type operation fails with EROFS. The mount
 * is "ro,default_permissions": the kernel checks modes and owners exactly as
 * the image records them.
 *
 * The root directory answers getxattr("user.clip.stats") with the read
 * counters as JSON (clip_content_stats_json), preceded by "server_pid", the
 * serving process, and on a supervised mount by "supervisor_pid", "restarts"
 * (servers that replaced another) and "takeover_pause_max_ms" (the longest
 * time without a server); the name is not listed by
 * listxattr, so the tree looks exactly like the image. `clip stats MNT`
 * reads it. getxattr("user.clip.config") answers the archive's image config
 * (clip_archive_config_json; `clip bundle --lower MNT` reads it), also
 * unlisted. A mount that records a startup profile answers
 * getxattr("user.clip.profile.N") with page N (CLIP_FUSE_PROFILE_PAGE bytes,
 * the last one shorter, past the end empty) of the profile recorded so far,
 * made anew for each page: `clip stats MNT --save-profile FILE` joins them
 * and checks the result's checksum, so pages of two different moments are
 * caught and read again. The caller writes FILE with its own rights.
 */
#ifndef CLIP_FUSE_H
#define CLIP_FUSE_H

#include <stdbool.h>
#include <sys/types.h>

#include "clip/archive.h"
#include "clip/content.h"
#include "clip/err.h"
#include "clip/supervisor.h"

#define CLIP_FUSE_STATS_XATTR	     "user.clip.stats"
#define CLIP_FUSE_CONFIG_XATTR	     "user.clip.config"
#define CLIP_FUSE_PROFILE_XATTR_PAGE "user.clip.profile." /* + page number */
#define CLIP_FUSE_PROFILE_PAGE	     61440u		  /* under the 64 KiB xattr limit */
/* The filesystem type a clip mount has in /proc/self/mountinfo. */
#define CLIP_FUSE_TYPE "fuse.clip"

struct clip_fuse_options {
	const char *mountpoint;
	const char *fsname; /* the mount's source in /proc/mounts (the archive); NULL: "clip" */
	const char
		*fuse_options; /* "-o" list passed on to libfuse (allow_other, ...); may be NULL */
	/* Where errors after start-up go (failed reads, prefetch): appended to this
	 * file; NULL: standard error in the foreground, syslog as a daemon. */
	const char *log_path;
	bool foreground;      /* stay in the foreground (-f) */
	bool prefetch;	      /* run clip_content_prefetch in the background */
	unsigned max_threads; /* session loop threads; 0: libfuse's default */
	/* No kernel read-ahead: the kernel asks only for the pages programs
	 * touch, so that a recorded startup profile holds what they read and
	 * not what the kernel guessed (slower; for recording). */
	bool exact_reads;
	/* JSON object members ("name":value,...) added to the stats after
	 * server_pid (how the archive was obtained); NULL: none. Borrowed. */
	const char *stats_extra_json;
	/* Called in the serving process (the daemon) once it served and the
	 * mount is gone, before clip_fuse_serve returns there; never in the
	 * caller that a daemon leaves. A failure is logged. NULL: nothing. */
	int (*unmounted)(void *opaque, struct clip_err *err);
	void *unmounted_opaque;
	/* A supervisor owns the mount and replaces a server that dies
	 * (docs/TAKEOVER.md, clip/supervisor.h). Later servers are started as
	 * `server_binary server_argv[0] --serve-fd=N server_argv[1...]` in
	 * the caller's working directory. */
	bool supervise;
	const char *server_binary; /* NULL: this process's executable */
	char *const *server_argv;  /* the `clip mount` arguments, argv[0] "mount" */
	/* Not 0: this process is a server of a supervised mount, started by
	 * its supervisor with its end of their socketpair at this descriptor:
	 * it serves the mount it is handed (mountpoint only names it in
	 * messages) and returns when told to stop or the mount is gone. */
	int serve_fd;
};

/* Mount `archive` at options->mountpoint and serve it until unmounted
 * (fusermount3 -u, `clip umount`) or SIGTERM/SIGINT/SIGHUP, then unmount.
 * Both are borrowed, and `content` must not have started threads yet: the
 * daemon is forked with it open.
 *
 * Without foreground it daemonises first: a child process starts a new
 * session, mounts, and reports to the calling process through a pipe, which
 * returns 0 once the mount is ready or the reason it failed in `err`. A child
 * that fails to start exits after reporting (it never returns); once serving,
 * it redirects its standard streams to /dev/null and returns from this
 * function, 0 or a negative errno, only when the mount is gone.
 * In the foreground the calling process serves and returns when the mount is
 * gone. With options->supervise the process that would serve supervises
 * instead (returning when the mount is gone), and its servers are other
 * processes. */
int clip_fuse_serve(struct clip_archive *archive, struct clip_content *content,
		    const struct clip_fuse_options *options, struct clip_err *err);

/* Find what is mounted at `mountpoint` (absolute, as /proc/self/mountinfo
 * writes it; the topmost mount when several are stacked): 0 with *dev its
 * device number when it is a clip mount, -ENOENT with `err` saying so when
 * nothing is mounted there, -EMEDIUMTYPE when another filesystem is (`err`
 * names its type). dev may be NULL. */
int clip_fuse_find_mount(const char *mountpoint, dev_t *dev, struct clip_err *err);

#endif
