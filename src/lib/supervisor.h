/* Internal to libclip: what the supervisor (supervisor.c) and the FUSE front
 * end (fuse.c) share of a supervised mount. docs/TAKEOVER.md tells the design;
 * this header is the protocol between the two processes. */
#ifndef CLIP_SUPERVISOR_INTERNAL_H
#define CLIP_SUPERVISOR_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "clip/err.h"
#include "clip/supervisor.h"

/* Counters the supervisor keeps in a memfd that every server maps read-only,
 * so that `clip stats` of any server reports the mount's history. A server
 * of another clip version checks `version`. */
#define CLIP_SUPERVISOR_SHARED_VERSION 1u
struct clip_supervisor_shared {
	uint32_t version;
	uint32_t reserved;
	_Atomic uint64_t supervisor_pid;
	_Atomic uint64_t restarts;     /* servers started to replace another */
	_Atomic uint64_t max_pause_us; /* longest takeover pause so far */
};

/* The records on a server's socketpair (SOCK_SEQPACKET: one record a
 * message). The supervisor sends one hello, with SCM_RIGHTS carrying the
 * /dev/fuse descriptor then the memfd of the counters, followed by the
 * kernel's FUSE_INIT request (init_len bytes; 0 on a fresh mount). The
 * server answers one ready (payload: the INIT request it served, on a fresh
 * mount) or one error (payload: the reason, text). */
#define CLIP_SUPERVISOR_MAGIC	  0x636c6970u /* "clip" */
#define CLIP_SUPERVISOR_INIT_MAX  1024u
#define CLIP_SUPERVISOR_MSG_HELLO 1u
#define CLIP_SUPERVISOR_MSG_READY 2u
#define CLIP_SUPERVISOR_MSG_ERROR 3u
#define CLIP_SUPERVISOR_SERVER_FD 3 /* where an exec'd server finds its socket */
struct clip_supervisor_msg {
	uint32_t magic;
	uint32_t kind;
	uint32_t len; /* payload bytes after this header */
	uint32_t reserved;
};

/* What the supervisor needs from the mount it runs. Everything is borrowed
 * for the duration of clip_supervisor_run. */
struct clip_supervisor_config {
	int fuse_fd;		/* the mount's /dev/fuse descriptor */
	const char *mountpoint; /* for messages */
	const char *binary;	/* the clip binary started for each later server */
	char *const *argv;	/* `clip mount` arguments, argv[0] "mount" */
	const char *cwd;	/* where relative paths in argv resolve */
	/* Runs the first server in a forked child that owns `sock` (the
	 * server's end of its socketpair); must not return. */
	void (*serve_forked)(void *opaque, int sock);
	/* Unmount the mount (SIGTERM to the supervisor, a clean stop). */
	void (*unmount)(void *opaque);
	/* The outcome of the start-up for a waiting `clip mount`: failure NULL
	 * once the first server is ready. Called once at most. NULL: none. */
	void (*report)(void *opaque, const char *failure);
	void (*log)(void *opaque, int priority, const char *msg);
	void *opaque;
};

/* Run the supervisor until the mount is gone: start servers, replace those
 * that die (FUSE_NOTIFY_RESEND), answer `clip restart`, give up after a
 * crash loop. Returns 0 when the mount ended cleanly, a negative errno with
 * `err` set when it could not run or the mount never came up. Blocks
 * SIGCHLD, SIGTERM, SIGINT and SIGHUP for its own use. */
int clip_supervisor_run(const struct clip_supervisor_config *cfg, struct clip_err *err);

/* In a server: receive the hello on `sock`. On success *fuse_fd and
 * *shared_fd are the caller's, and *init_len bytes of the saved INIT request
 * are in `init` (capacity CLIP_SUPERVISOR_INIT_MAX). */
int clip_supervisor_receive_hello(int sock, int *fuse_fd, int *shared_fd, unsigned char *init,
				  size_t *init_len, struct clip_err *err);

/* In a server: send a ready (payload: the INIT request, may be empty) or an
 * error record. A failure is returned, never fatal here. */
int clip_supervisor_send(int sock, uint32_t kind, const void *payload, size_t len);

#endif
