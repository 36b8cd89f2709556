/* The supervisor of a mount: owns the /dev/fuse descriptor, starts the
 * servers that answer through it, and when one dies has the kernel resend
 * what it had taken (FUSE_NOTIFY_RESEND) before starting the next. It reads
 * no image and, while a server runs, no request: small enough to trust.
 * docs/TAKEOVER.md tells the design and the kernel facts it rests on. */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fuse.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "clip/fuse.h"
#include "util.h"

/* Linux 6.9, protocol 7.40; this machine's uapi header may be older. */
#ifndef FUSE_NOTIFY_RESEND
#define FUSE_NOTIFY_RESEND 7
#endif

/* A server that dies before it serves, or this soon after, failed to start;
 * after MAX_FAILED_STARTS of them in a row the supervisor gives up. */
#define FAILED_START_MS	  500
#define MAX_FAILED_STARTS 5
/* A stopping server that has not exited after this long is killed. */
#define STOP_WAIT_MS 10000
/* Big enough for any request of a read-only mount: the kernel refuses a
 * read smaller than a WRITE of max_write (1 MiB with libfuse) could need. */
#define EIO_BUFFER (2u << 20)

struct server {
	pid_t pid; /* 0: none */
	int sock;
	bool ready;
	struct timespec ready_at;
};

struct supervisor {
	const struct clip_supervisor_config *cfg;
	struct clip_supervisor_shared *shared;
	int shared_fd;
	char *binary;	   /* what later servers run */
	char *next_binary; /* a restart's binary, adopted once it serves */
	unsigned char init[CLIP_SUPERVISOR_INIT_MAX];
	size_t init_len;
	struct server cur, next;
	/* A server started ahead, its archive open, waiting for its hello:
	 * a death costs the replay of INIT, not a process start. */
	struct server spare;
	int failures, next_failures; /* failed starts in a row */
	bool pausing;		     /* no server since pause_from */
	struct timespec pause_from;
	bool start_cur_pending, start_next_pending;
	struct timespec start_cur_at, start_next_at;
	int sigfd, ctl_listen, ctl_client;
	bool ever_ready, stopping, eio, reported;
	struct timespec stop_at;
	bool resend_unsupported;
	bool no_resend; /* CLIP_TAKEOVER_NO_RESEND set: a test */
	char last_error[CLIP_ERR_MSG_MAX];
	unsigned char *eio_buf;
	sigset_t old_mask;
};

static void slog(struct supervisor *s, int priority, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void slog(struct supervisor *s, int priority, const char *fmt, ...)
{
	char msg[CLIP_ERR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (s->cfg->log)
		s->cfg->log(s->cfg->opaque, priority, msg);
}

static struct timespec now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts;
}

static int64_t us_between(const struct timespec *a, const struct timespec *b)
{
	return (int64_t)(b->tv_sec - a->tv_sec) * 1000000 + (b->tv_nsec - a->tv_nsec) / 1000;
}

static struct timespec after_ms(int ms)
{
	struct timespec t = now();
	t.tv_nsec += (long)(ms % 1000) * 1000000;
	t.tv_sec += ms / 1000 + t.tv_nsec / 1000000000;
	t.tv_nsec %= 1000000000;
	return t;
}

/* 0, 50, 100, 200, 400 ms before the next try after `failures` failed. */
static int backoff_ms(int failures)
{
	return failures <= 0 ? 0 : 25 << (failures > 5 ? 5 : failures);
}

/* Have the kernel put every request a server took and did not answer back
 * on the queue. One write of a bare header; see docs/TAKEOVER.md. */
static void write_resend(struct supervisor *s)
{
	/* For tests/integration/takeover.bats only: shows that without the
	 * resend, requests are lost (the test of the resend can fail). */
	if (s->no_resend)
		return;
	struct fuse_out_header h = {
		.len = sizeof(h),
		.error = FUSE_NOTIFY_RESEND,
		.unique = 0,
	};
	if (write(s->cfg->fuse_fd, &h, sizeof(h)) == (ssize_t)sizeof(h))
		return;
	int e = errno;
	if (e == ENODEV)
		return; /* unmounted: nothing waits any more */
	if (!s->resend_unsupported)
		slog(s, LOG_ERR,
		     "mount %s: the kernel cannot resend requests (%s; needs Linux 6.9): requests "
		     "in flight when a server dies are lost and their callers wait until killed",
		     s->cfg->mountpoint, strerror(e));
	s->resend_unsupported = true;
}

/* ---- the protocol with servers -------------------------------------------- */

int clip_supervisor_send(int sock, uint32_t kind, const void *payload, size_t len)
{
	struct clip_supervisor_msg m = { .magic = CLIP_SUPERVISOR_MAGIC,
					 .kind = kind,
					 .len = (uint32_t)len };
	struct iovec iov[2] = { { &m, sizeof(m) }, { (void *)payload, len } };
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };
	return sendmsg(sock, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

static int send_hello(struct supervisor *s, int sock)
{
	struct clip_supervisor_msg m = { .magic = CLIP_SUPERVISOR_MAGIC,
					 .kind = CLIP_SUPERVISOR_MSG_HELLO,
					 .len = (uint32_t)s->init_len };
	struct iovec iov[2] = { { &m, sizeof(m) }, { s->init, s->init_len } };
	int fds[2] = { s->cfg->fuse_fd, s->shared_fd };
	union {
		char buf[CMSG_SPACE(sizeof(fds))];
		struct cmsghdr align;
	} control;
	memset(&control, 0, sizeof(control));
	struct msghdr mh = { .msg_iov = iov,
			     .msg_iovlen = s->init_len ? 2 : 1,
			     .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(fds));
	memcpy(CMSG_DATA(c), fds, sizeof(fds));
	return sendmsg(sock, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

int clip_supervisor_receive_hello(int sock, int *fuse_fd, int *shared_fd, unsigned char *init,
				  size_t *init_len, struct clip_err *err)
{
	struct clip_supervisor_msg m;
	struct iovec iov[2] = { { &m, sizeof(m) }, { init, CLIP_SUPERVISOR_INIT_MAX } };
	union {
		char buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} control;
	struct msghdr mh = { .msg_iov = iov,
			     .msg_iovlen = 2,
			     .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf) };
	ssize_t n;
	while ((n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
	}
	if (n < 0)
		return clip_err_errno(err, errno, "supervisor: receiving the descriptor");
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	if (c == NULL || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(2 * sizeof(int)))
		return clip_err_set(err, EPROTO, "supervisor: no descriptor received");
	int fds[2];
	memcpy(fds, CMSG_DATA(c), sizeof(fds));
	if ((size_t)n < sizeof(m) || m.magic != CLIP_SUPERVISOR_MAGIC ||
	    m.kind != CLIP_SUPERVISOR_MSG_HELLO || (size_t)n != sizeof(m) + m.len ||
	    (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		close(fds[0]);
		close(fds[1]);
		return clip_err_set(err, EPROTO, "supervisor: unexpected first message");
	}
	*fuse_fd = fds[0];
	*shared_fd = fds[1];
	*init_len = m.len;
	return 0;
}

/* ---- starting and losing servers ------------------------------------------ */

/* The exec'd server's argv: BINARY mount --serve-fd N <the mount's args>. */
static char **server_argv(struct supervisor *s, const char *binary)
{
	size_t n = 0;
	while (s->cfg->argv[n])
		n++;
	char **argv = calloc(n + 4, sizeof(*argv));
	if (argv == NULL)
		return NULL;
	static char serve_fd[] = "--serve-fd=3";
	argv[0] = (char *)binary;
	argv[1] = s->cfg->argv[0];
	argv[2] = serve_fd;
	for (size_t i = 1; i < n; i++)
		argv[i + 2] = s->cfg->argv[i];
	return argv;
}

/* Start a server into `srv`: forked (the first one, with the mount's
 * archive already open) or fork + exec of `binary`; with `hello`, hand it
 * the mount at once, else it waits (a spare, see activate). */
static int start_server(struct supervisor *s, struct server *srv, const char *binary, bool forked,
			bool hello)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	char **argv = forked ? NULL : server_argv(s, binary);
	if (!forked && argv == NULL) {
		close(sv[0]);
		close(sv[1]);
		return -ENOMEM;
	}
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(sv[0]);
		close(sv[1]);
		free(argv);
		return -e;
	}
	if (pid == 0) {
		/* A server starts with the signals the supervisor took for
		 * itself back to normal, and none of its descriptors. */
		sigprocmask(SIG_SETMASK, &s->old_mask, NULL);
		close(s->sigfd);
		if (s->ctl_listen >= 0)
			close(s->ctl_listen);
		if (s->ctl_client >= 0)
			close(s->ctl_client);
		close(sv[0]);
		if (forked)
			s->cfg->serve_forked(s->cfg->opaque, sv[1]);
		if (dup2(sv[1], CLIP_SUPERVISOR_SERVER_FD) < 0)
			_exit(126);
		if (sv[1] == CLIP_SUPERVISOR_SERVER_FD)
			fcntl(sv[1], F_SETFD, 0);
		if (s->cfg->cwd && chdir(s->cfg->cwd) < 0)
			_exit(126);
		execv(binary, argv);
		_exit(127);
	}
	free(argv);
	close(sv[1]);
	*srv = (struct server){ .pid = pid, .sock = sv[0] };
	if (hello) {
		int rc = send_hello(s, sv[0]);
		if (rc < 0)
			slog(s, LOG_ERR, "mount %s: server %ld: %s", s->cfg->mountpoint, (long)pid,
			     strerror(-rc)); /* it will fail, and be counted */
	}
	return 0;
}

/* Make the spare the server: it gets the mount now. */
static void activate_spare(struct supervisor *s)
{
	s->cur = s->spare;
	s->spare = (struct server){ .pid = 0, .sock = -1 };
	int rc = send_hello(s, s->cur.sock);
	if (rc < 0)
		slog(s, LOG_ERR, "mount %s: server %ld: %s", s->cfg->mountpoint, (long)s->cur.pid,
		     strerror(-rc)); /* it will fail, and be counted */
}

/* Drop the spare (a restart changed the binary, or the mount ends); its
 * death is reaped as a stranger's. */
static void drop_spare(struct supervisor *s)
{
	if (s->spare.pid)
		kill(s->spare.pid, SIGKILL);
	if (s->spare.sock >= 0)
		close(s->spare.sock);
	s->spare = (struct server){ .pid = 0, .sock = -1 };
}

static void report(struct supervisor *s, const char *failure)
{
	/* Once is all a waiting `clip mount` reads. */
	if (s->cfg->report && !s->reported)
		s->cfg->report(s->cfg->opaque, failure);
	s->reported = true;
}

static void reply_restart(struct supervisor *s, const char *failure, pid_t pid)
{
	if (s->ctl_client < 0)
		return;
	char msg[CLIP_ERR_MSG_MAX + 32];
	int n = failure ? snprintf(msg, sizeof(msg), "1%s", failure)
			: snprintf(msg, sizeof(msg), "0%ld", (long)pid);
	if (n > (int)sizeof(msg) - 1)
		n = (int)sizeof(msg) - 1;
	if (send(s->ctl_client, msg, (size_t)n, MSG_NOSIGNAL) < 0) {
		/* The asker left; the restart happened or not all the same. */
	}
	close(s->ctl_client);
	s->ctl_client = -1;
}

static void begin_stop(struct supervisor *s, bool unmount)
{
	if (s->stopping)
		return;
	s->stopping = true;
	s->stop_at = after_ms(STOP_WAIT_MS);
	s->start_cur_pending = s->start_next_pending = false;
	if (s->next.pid)
		kill(s->next.pid, SIGKILL);
	drop_spare(s);
	reply_restart(s, "the mount is being unmounted", 0);
	if (unmount)
		s->cfg->unmount(s->cfg->opaque);
}

/* No server will do: answer requests with EIO ourselves (or, on a mount that
 * never came up, fail the mount). */
static void give_up(struct supervisor *s)
{
	if (!s->ever_ready) {
		char msg[CLIP_ERR_MSG_MAX + 64];
		snprintf(msg, sizeof(msg), "the server failed to start: %s",
			 s->last_error[0] ? s->last_error : "it exited");
		report(s, msg);
		begin_stop(s, true);
		return;
	}
	slog(s, LOG_ERR,
	     "mount %s: %d servers in a row died at start; giving up: every request fails "
	     "with EIO until `clip restart` or unmount",
	     s->cfg->mountpoint, MAX_FAILED_STARTS);
	s->eio = true;
}

/* `srv` serves: the pause since the last server died ends. */
static void promote(struct supervisor *s, struct server *srv)
{
	struct timespec t = now();
	if (srv != &s->cur) {
		s->cur = *srv;
		*srv = (struct server){ .pid = 0, .sock = -1 };
	}
	if (s->pausing) {
		int64_t us = us_between(&s->pause_from, &t);
		if (us > (int64_t)atomic_load(&s->shared->max_pause_us))
			atomic_store(&s->shared->max_pause_us, (uint64_t)us);
		atomic_fetch_add(&s->shared->restarts, 1);
		slog(s, LOG_INFO, "mount %s: server %ld took over after %.1f ms",
		     s->cfg->mountpoint, (long)s->cur.pid, (double)us / 1000.0);
		s->pausing = false;
	}
	s->eio = false;
	s->start_cur_pending = false;
	/* The next death is taken over by a server started now. A spare that
	 * died is replaced only here, once a server serves: never in a loop. */
	if (!s->stopping && s->spare.pid == 0 &&
	    start_server(s, &s->spare, s->binary, false, false) < 0)
		s->spare = (struct server){ .pid = 0, .sock = -1 };
}

static void server_ready(struct supervisor *s, struct server *srv, const unsigned char *init,
			 size_t len)
{
	srv->ready = true;
	srv->ready_at = now();
	if (s->init_len == 0 && len > 0 && len <= sizeof(s->init)) {
		memcpy(s->init, init, len);
		s->init_len = len;
	}
	if (srv == &s->cur) {
		s->ever_ready = true;
		report(s, NULL);
		promote(s, srv);
		return;
	}
	/* A restart's server serves beside the old one: the old one goes,
	 * and what it had taken is resent when it is reaped. */
	s->next_failures = 0;
	if (s->next_binary) {
		free(s->binary);
		s->binary = clip_steal(s->next_binary);
		drop_spare(s); /* of the old binary */
	}
	if (s->cur.pid) {
		s->pausing = true;
		s->pause_from = now();
		kill(s->cur.pid, SIGKILL);
	} else {
		promote(s, srv);
		reply_restart(s, NULL, s->cur.pid);
	}
}

static void server_message(struct supervisor *s, struct server *srv)
{
	unsigned char buf[sizeof(struct clip_supervisor_msg) + CLIP_ERR_MSG_MAX];
	ssize_t n = recv(srv->sock, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	if (n <= 0) {
		/* Gone: SIGCHLD says how. Stop polling it. */
		if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			close(srv->sock);
			srv->sock = -1;
		}
		return;
	}
	struct clip_supervisor_msg m;
	if ((size_t)n < sizeof(m))
		return;
	memcpy(&m, buf, sizeof(m));
	if (m.magic != CLIP_SUPERVISOR_MAGIC || sizeof(m) + m.len != (size_t)n)
		return;
	if (m.kind == CLIP_SUPERVISOR_MSG_READY) {
		server_ready(s, srv, buf + sizeof(m), m.len);
	} else if (m.kind == CLIP_SUPERVISOR_MSG_ERROR) {
		buf[n] = '\0';
		snprintf(s->last_error, sizeof(s->last_error), "%s", (char *)buf + sizeof(m));
		slog(s, LOG_ERR, "mount %s: server %ld: %s", s->cfg->mountpoint, (long)srv->pid,
		     s->last_error);
	}
}

static bool failed_start(const struct server *srv)
{
	struct timespec t = now();
	return !srv->ready || us_between(&srv->ready_at, &t) < FAILED_START_MS * 1000;
}

static void describe_exit(char *out, size_t cap, int status)
{
	if (WIFSIGNALED(status))
		snprintf(out, cap, "killed by signal %d", WTERMSIG(status));
	else
		snprintf(out, cap, "exit status %d", WEXITSTATUS(status));
}

static void server_exited(struct supervisor *s, pid_t pid, int status)
{
	char how[64];
	describe_exit(how, sizeof(how), status);
	if (pid == s->next.pid) {
		bool failed = failed_start(&s->next);
		if (s->next.sock >= 0)
			close(s->next.sock);
		s->next = (struct server){ .pid = 0, .sock = -1 };
		if (s->stopping)
			return;
		if (failed && ++s->next_failures < MAX_FAILED_STARTS) {
			s->start_next_pending = true;
			s->start_next_at = after_ms(backoff_ms(s->next_failures));
			return;
		}
		char msg[CLIP_ERR_MSG_MAX + 128];
		snprintf(msg, sizeof(msg), "the new server failed to start %d times (last: %s%s%s)",
			 s->next_failures, how, s->last_error[0] ? ": " : "", s->last_error);
		free(s->next_binary);
		s->next_binary = NULL;
		s->next_failures = 0;
		reply_restart(s, msg, 0);
		return;
	}
	if (pid == s->spare.pid) {
		slog(s, LOG_WARNING, "mount %s: spare server %ld died (%s)", s->cfg->mountpoint,
		     (long)pid, how);
		if (s->spare.sock >= 0)
			close(s->spare.sock);
		s->spare = (struct server){ .pid = 0, .sock = -1 };
		return;
	}
	if (pid != s->cur.pid)
		return; /* a dropped spare */
	bool was_ready = s->cur.ready;
	bool failed = failed_start(&s->cur);
	if (s->cur.sock >= 0)
		close(s->cur.sock);
	s->cur = (struct server){ .pid = 0, .sock = -1 };
	/* Whatever the dead server had taken goes back on the queue, for the
	 * next one (or for the EIO answers). Once unmounting, the descriptor
	 * may be closed already, and nothing waits. */
	if (!s->stopping)
		write_resend(s);
	if (s->next.pid && s->next.ready) {
		promote(s, &s->next);
		reply_restart(s, NULL, s->cur.pid);
		return;
	}
	if (s->stopping)
		return;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && was_ready) {
		/* Told to stop (or it saw the unmount): the mount ends. */
		begin_stop(s, true);
		return;
	}
	slog(s, LOG_ERR, "mount %s: server %ld died (%s); starting another", s->cfg->mountpoint,
	     (long)pid, how);
	if (!s->pausing) {
		s->pausing = true;
		s->pause_from = now();
	}
	s->failures = failed ? s->failures + 1 : 0;
	if (s->failures >= MAX_FAILED_STARTS) {
		give_up(s);
		return;
	}
	s->start_cur_pending = true;
	s->start_cur_at = after_ms(backoff_ms(s->failures));
}

static void reap(struct supervisor *s)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		server_exited(s, pid, status);
}

/* ---- answering EIO ourselves ------------------------------------------------ */

/* The root's stats, answered by the supervisor while no server will do, so
 * that `clip stats` says so and `clip restart` finds the supervisor: true if
 * the request was that getxattr and is answered. */
static bool answer_stats(struct supervisor *s, const struct fuse_in_header *in, size_t n)
{
	struct fuse_getxattr_in arg;
	const char *name = (const char *)s->eio_buf + sizeof(*in) + sizeof(arg);
	if (in->opcode != FUSE_GETXATTR || in->nodeid != FUSE_ROOT_ID ||
	    n < sizeof(*in) + sizeof(arg) + sizeof(CLIP_FUSE_STATS_XATTR) ||
	    memcmp(name, CLIP_FUSE_STATS_XATTR, sizeof(CLIP_FUSE_STATS_XATTR)) != 0)
		return false;
	memcpy(&arg, s->eio_buf + sizeof(*in), sizeof(arg));
	char json[256];
	int len = snprintf(json, sizeof(json),
			   "{\"server_pid\":0,\"supervisor_pid\":%ld,\"restarts\":%llu,"
			   "\"takeover_pause_max_ms\":%.1f,\"gave_up\":true}",
			   (long)getpid(), (unsigned long long)atomic_load(&s->shared->restarts),
			   (double)atomic_load(&s->shared->max_pause_us) / 1000.0);
	struct fuse_out_header out = { .unique = in->unique };
	struct fuse_getxattr_out size_out = { .size = (uint32_t)len };
	struct iovec iov[2] = { { &out, sizeof(out) }, { NULL, 0 } };
	if (arg.size == 0) {
		iov[1] = (struct iovec){ &size_out, sizeof(size_out) };
	} else if (arg.size < (uint32_t)len) {
		out.error = -ERANGE;
	} else {
		iov[1] = (struct iovec){ json, (size_t)len };
	}
	out.len = (uint32_t)(sizeof(out) + iov[1].iov_len);
	if (writev(s->cfg->fuse_fd, iov, 2) < 0) {
		/* as below */
	}
	return true;
}

static void answer_eio(struct supervisor *s)
{
	if (s->eio_buf == NULL && (s->eio_buf = malloc(EIO_BUFFER)) == NULL)
		return;
	ssize_t n = read(s->cfg->fuse_fd, s->eio_buf, EIO_BUFFER);
	if (n < 0) {
		if (errno == ENODEV)
			begin_stop(s, false);
		return; /* EINTR, EAGAIN, ENOENT (interrupted): nothing to answer */
	}
	struct fuse_in_header in;
	if ((size_t)n < sizeof(in))
		return;
	memcpy(&in, s->eio_buf, sizeof(in));
	/* Forgets and interrupts take no answer. */
	if (in.opcode == FUSE_FORGET || in.opcode == FUSE_BATCH_FORGET ||
	    in.opcode == FUSE_INTERRUPT)
		return;
	if (answer_stats(s, &in, (size_t)n))
		return;
	struct fuse_out_header out = { .len = sizeof(out), .error = -EIO, .unique = in.unique };
	if (write(s->cfg->fuse_fd, &out, sizeof(out)) < 0) {
		/* The caller is gone (ENOENT) or the mount is (ENODEV, seen next). */
	}
}

/* ---- clip restart ------------------------------------------------------------ */

static int control_listen(struct clip_err *err)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return clip_err_errno(err, errno, "supervisor: socket");
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int len = snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1, CLIP_SUPERVISOR_SOCKET,
			   (long)getpid());
	socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)len);
	if (bind(fd, (struct sockaddr *)&addr, alen) < 0 || listen(fd, 4) < 0) {
		int e = errno;
		close(fd);
		return clip_err_errno(err, e, "supervisor: control socket");
	}
	return fd;
}

static void control_request(struct supervisor *s)
{
	int fd = accept4(s->ctl_listen, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	struct timeval tv = { .tv_sec = 2 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	char req[PATH_MAX + 16];
	ssize_t n = -1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 &&
	    (cred.uid == 0 || cred.uid == geteuid()))
		n = recv(fd, req, sizeof(req) - 1, 0);
	const char *refusal = NULL;
	if (n < 8 || strncmp(req, "restart\n", 8) != 0)
		refusal = "not allowed, or not a request";
	else if (s->stopping)
		refusal = "the mount is being unmounted";
	else if (s->ctl_client >= 0 || s->next.pid || s->start_next_pending)
		refusal = "a restart is already under way";
	if (refusal) {
		char msg[128];
		int len = snprintf(msg, sizeof(msg), "1%s", refusal);
		if (send(fd, msg, (size_t)len, MSG_NOSIGNAL) < 0) {
			/* gone */
		}
		close(fd);
		return;
	}
	req[n] = '\0';
	s->ctl_client = fd;
	free(s->next_binary);
	s->next_binary = req[8] ? strdup(req + 8) : NULL;
	s->next_failures = 0;
	s->last_error[0] = '\0';
	int rc =
		start_server(s, &s->next, s->next_binary ? s->next_binary : s->binary, false, true);
	if (rc < 0)
		reply_restart(s, strerror(-rc), 0);
}

/* ---- the loop ------------------------------------------------------------------ */

static int ms_until(const struct timespec *t)
{
	struct timespec n = now();
	int64_t us = us_between(&n, t);
	return us <= 0 ? 0 : (int)((us + 999) / 1000);
}

static void handle_signals(struct supervisor *s)
{
	struct signalfd_siginfo si;
	while (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGCHLD)
			reap(s);
		else
			begin_stop(s, true);
	}
}

static void run_timers(struct supervisor *s)
{
	struct timespec t = now();
	if (s->start_cur_pending && us_between(&s->start_cur_at, &t) >= 0 && !s->cur.pid) {
		s->start_cur_pending = false;
		int rc = 0;
		if (s->spare.pid)
			activate_spare(s);
		else
			rc = start_server(s, &s->cur, s->binary, false, true);
		if (rc < 0) {
			slog(s, LOG_ERR, "mount %s: cannot start a server: %s", s->cfg->mountpoint,
			     strerror(-rc));
			give_up(s);
		}
	}
	if (s->start_next_pending && us_between(&s->start_next_at, &t) >= 0 && !s->next.pid) {
		s->start_next_pending = false;
		int rc = start_server(s, &s->next, s->next_binary ? s->next_binary : s->binary,
				      false, true);
		if (rc < 0)
			reply_restart(s, strerror(-rc), 0);
	}
	if (s->stopping && us_between(&s->stop_at, &t) >= 0) {
		if (s->cur.pid)
			kill(s->cur.pid, SIGKILL);
		if (s->next.pid)
			kill(s->next.pid, SIGKILL);
		drop_spare(s);
	}
}

static int loop(struct supervisor *s)
{
	while (!(s->stopping && s->cur.pid == 0 && s->next.pid == 0)) {
		struct pollfd p[6];
		int np = 0;
		p[np++] = (struct pollfd){ .fd = s->sigfd, .events = POLLIN };
		/* Events 0 on /dev/fuse: poll still reports POLLERR once the
		 * connection is gone (unmounted), and nothing else unless we
		 * answer requests ourselves. */
		int fuse_i = np;
		p[np++] = (struct pollfd){ .fd = s->stopping ? -1 : s->cfg->fuse_fd,
					   .events = s->eio ? POLLIN : 0 };
		int cur_i = np;
		p[np++] = (struct pollfd){ .fd = s->cur.sock, .events = POLLIN };
		int next_i = np;
		p[np++] = (struct pollfd){ .fd = s->next.sock, .events = POLLIN };
		int ctl_i = np;
		p[np++] = (struct pollfd){ .fd = s->ctl_listen, .events = POLLIN };
		int timeout = -1;
		if (s->start_cur_pending)
			timeout = ms_until(&s->start_cur_at);
		if (s->start_next_pending) {
			int t = ms_until(&s->start_next_at);
			timeout = timeout < 0 || t < timeout ? t : timeout;
		}
		if (s->stopping) {
			int t = ms_until(&s->stop_at);
			timeout = timeout < 0 || t < timeout ? t : timeout;
		}
		int n = poll(p, (nfds_t)np, timeout);
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n > 0) {
			if (p[0].revents)
				handle_signals(s);
			if (p[cur_i].revents && s->cur.sock == p[cur_i].fd)
				server_message(s, &s->cur);
			if (p[next_i].revents && s->next.sock == p[next_i].fd)
				server_message(s, &s->next);
			if (p[fuse_i].revents & (POLLERR | POLLHUP | POLLNVAL))
				begin_stop(s, false);
			else if (p[fuse_i].revents & POLLIN)
				answer_eio(s);
			if (p[ctl_i].revents & POLLIN)
				control_request(s);
		}
		run_timers(s);
	}
	return 0;
}

int clip_supervisor_run(const struct clip_supervisor_config *cfg, struct clip_err *err)
{
	struct supervisor s = {
		.cfg = cfg,
		.shared_fd = -1,
		.sigfd = -1,
		.ctl_listen = -1,
		.ctl_client = -1,
		.cur = { .sock = -1 },
		.next = { .sock = -1 },
		.spare = { .sock = -1 },
	};
	int rc = 0;
	s.binary = strdup(cfg->binary);
	if (s.binary == NULL)
		return clip_err_nomem(err);
	s.shared_fd = memfd_create("clip-supervisor", MFD_CLOEXEC);
	if (s.shared_fd < 0 || ftruncate(s.shared_fd, sizeof(*s.shared)) < 0) {
		rc = clip_err_errno(err, errno, "supervisor: memfd");
		goto out;
	}
	s.shared =
		mmap(NULL, sizeof(*s.shared), PROT_READ | PROT_WRITE, MAP_SHARED, s.shared_fd, 0);
	if (s.shared == MAP_FAILED) {
		s.shared = NULL;
		rc = clip_err_errno(err, errno, "supervisor: mmap");
		goto out;
	}
	s.no_resend = getenv("CLIP_TAKEOVER_NO_RESEND") != NULL;
	s.shared->version = CLIP_SUPERVISOR_SHARED_VERSION;
	atomic_store(&s.shared->supervisor_pid, (uint64_t)getpid());
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, &s.old_mask);
	s.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (s.sigfd < 0) {
		rc = clip_err_errno(err, errno, "supervisor: signalfd");
		goto out_mask;
	}
	s.ctl_listen = control_listen(err);
	if (s.ctl_listen < 0) {
		rc = s.ctl_listen;
		goto out_mask;
	}
	rc = start_server(&s, &s.cur, s.binary, cfg->serve_forked != NULL, true);
	if (rc < 0) {
		rc = clip_err_errno(err, -rc, "supervisor: starting the server");
		goto out_mask;
	}
	rc = loop(&s);
	if (rc < 0)
		clip_err_errno(err, -rc, "supervisor: poll");
	else if (!s.ever_ready)
		rc = clip_err_set(err, EIO, "the server failed to start: %s",
				  s.last_error[0] ? s.last_error : "it exited");
out_mask:
	/* A server still running (an error above) is left to the kernel's
	 * unmount: it reads ENODEV and exits. */
	sigprocmask(SIG_SETMASK, &s.old_mask, NULL);
out:
	reply_restart(&s, "the supervisor stopped", 0);
	if (s.sigfd >= 0)
		close(s.sigfd);
	if (s.ctl_listen >= 0)
		close(s.ctl_listen);
	if (s.cur.sock >= 0)
		close(s.cur.sock);
	if (s.next.sock >= 0)
		close(s.next.sock);
	drop_spare(&s);
	if (s.shared)
		munmap(s.shared, sizeof(*s.shared));
	if (s.shared_fd >= 0)
		close(s.shared_fd);
	free(s.eio_buf);
	free(s.binary);
	free(s.next_binary);
	return rc;
}

/* ---- the client: clip restart ------------------------------------------------ */

int clip_supervisor_restart(pid_t supervisor, const char *binary, pid_t *new_server,
			    struct clip_err *err)
{
	cleanup_close int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return clip_err_errno(err, errno, "socket");
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int len = snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1, CLIP_SUPERVISOR_SOCKET,
			   (long)supervisor);
	socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)len);
	if (connect(fd, (struct sockaddr *)&addr, alen) < 0)
		return clip_err_errno(err, errno, "supervisor %ld", (long)supervisor);
	char req[PATH_MAX + 16];
	int n = snprintf(req, sizeof(req), "restart\n%s", binary ? binary : "");
	if (n >= (int)sizeof(req))
		return clip_err_set(err, ENAMETOOLONG, "%s: too long", binary);
	if (send(fd, req, (size_t)n, MSG_NOSIGNAL) < 0)
		return clip_err_errno(err, errno, "supervisor %ld", (long)supervisor);
	/* Five failed starts with their waits, each up to a server's start. */
	struct timeval tv = { .tv_sec = 60 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	char reply[CLIP_ERR_MSG_MAX + 32];
	ssize_t got = recv(fd, reply, sizeof(reply) - 1, 0);
	if (got < 0)
		return clip_err_errno(err, errno, "supervisor %ld: no answer", (long)supervisor);
	if (got == 0)
		return clip_err_set(err, EPIPE, "supervisor %ld: closed without an answer",
				    (long)supervisor);
	reply[got] = '\0';
	if (reply[0] != '0')
		return clip_err_set(err, EIO, "%s", reply + 1);
	if (new_server)
		*new_server = (pid_t)strtol(reply + 1, NULL, 10);
	return 0;
}
