/* The FUSE front end: libfuse's low-level operations over an archive (the
 * metadata) and a content reader (the file bytes). Nothing here knows about
 * layers, tiers or formats; a request becomes one archive accessor call or
 * one clip_content_read, and its answer one fuse_reply_*. */
#define FUSE_USE_VERSION 312

#include "clip/fuse.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "supervisor.h"
#include "util.h"

/* The image never changes while mounted: let the kernel keep names and
 * attributes for a day instead of asking again. */
#define CACHE_TIMEOUT 86400.0

/* Read-ahead of the mount's backing device, set after mounting (root only).
 * The kernel starts a FUSE mount at 128 KiB; FUSE reads go up to 1 MiB (256
 * pages, what libfuse negotiates), and each request costs a round trip
 * through the daemon, so sequential reads of big files want the largest. */
#define READ_AHEAD_KB 1024

#define FS_BLOCK_SIZE 4096u

struct fs {
	struct clip_archive *archive;
	struct clip_content *content;
	struct clip_archive_stats stats;
	unsigned max_read; /* -o max_read=N, which init must repeat to libfuse */
	int log_fd;	   /* --log file, -1 if none */
	bool foreground;
	int report_fd;		 /* daemon: the pipe to the waiting parent until ready */
	bool served;		 /* the mount came up (mount_ready) */
	bool prefetch;		 /* start clip_content_prefetch once ready */
	bool exact_reads;	 /* no kernel read-ahead */
	const char *stats_extra; /* options->stats_extra_json: ",..." or "" */
	bool prefetching;
	pthread_t prefetch_thread;
	atomic_bool stop_prefetch;
	/* A server of a supervised mount (docs/TAKEOVER.md): */
	int supervisor_sock;			     /* -1: not supervised */
	const struct clip_supervisor_shared *shared; /* the supervisor's counters */
	/* A fresh mount: the kernel's INIT request, kept by the read hook
	 * and sent to the supervisor once its reply reached the kernel. */
	atomic_bool init_seen, init_reported;
	uint64_t init_unique;
	unsigned char init[CLIP_SUPERVISOR_INIT_MAX];
	size_t init_len;
	/* A takeover: the replayed INIT's reply is kept from the kernel. */
	bool swallow_reply;
	int swallowed_error;
};

/* ---- messages ------------------------------------------------------------ */

/* Where messages go once the mount serves (there is one mount per process,
 * so one logger). libfuse's own messages are routed here as well; until the
 * mount is ready they are kept instead, to become the error reported to the
 * user. */
static struct {
	pthread_mutex_t lock;
	int fd;	      /* a log file or standard error; -1: syslog */
	bool to_file; /* fd is a log file: lines get a timestamp */
	bool capture; /* starting up: keep the message for the start-up error */
	char captured[512];
	char partial[512]; /* libfuse writes some lines in pieces */
} logger = { .lock = PTHREAD_MUTEX_INITIALIZER, .fd = STDERR_FILENO };

static void log_line(int priority, const char *msg)
{
	if (logger.capture) {
		if (priority <= LOG_ERR)
			snprintf(logger.captured, sizeof(logger.captured), "%s", msg);
		return;
	}
	if (logger.fd < 0) {
		syslog(priority, "%s", msg);
		return;
	}
	char line[CLIP_ERR_MSG_MAX + 128];
	int n;
	if (logger.to_file) {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = snprintf(line, sizeof(line),
			     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ clip[%d]: %s\n",
			     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			     tm.tm_sec, ts.tv_nsec / 1000000, (int)getpid(), msg);
	} else {
		n = snprintf(line, sizeof(line), "clip: %s\n", msg);
	}
	if (n > (int)sizeof(line) - 1) {
		n = (int)sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	/* One write per line, so that lines of concurrent requests never mix
	 * (a log file is opened with O_APPEND). */
	if (write(logger.fd, line, (size_t)n) < 0) {
		/* Nowhere left to report it. */
	}
}

static void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_msg(int priority, const char *fmt, ...)
{
	char msg[CLIP_ERR_MSG_MAX + 64];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&logger.lock);
	log_line(priority, msg);
	pthread_mutex_unlock(&logger.lock);
}

/* libfuse's messages end in a newline, and some come in several calls
 * ("unknown option(s): `", the option, "'\n"): pieces are joined until the
 * newline. fuse_log_level has syslog's numbering. */
static void log_from_libfuse(enum fuse_log_level level, const char *fmt, va_list ap)
{
	pthread_mutex_lock(&logger.lock);
	size_t used = strlen(logger.partial);
	if (used < sizeof(logger.partial) - 1)
		vsnprintf(logger.partial + used, sizeof(logger.partial) - used, fmt, ap);
	used = strlen(logger.partial);
	if (used > 0 && (logger.partial[used - 1] == '\n' || used == sizeof(logger.partial) - 1)) {
		while (used > 0 && logger.partial[used - 1] == '\n')
			logger.partial[--used] = '\0';
		log_line((int)level, logger.partial);
		logger.partial[0] = '\0';
	}
	pthread_mutex_unlock(&logger.lock);
}

/* ---- attributes ---------------------------------------------------------- */

static uint32_t archive_ino(fuse_ino_t ino)
{
	/* FUSE numbers the root 1 and never sends 0; the archive's root is 0.
	 * Anything past the archive's inodes fails the accessor's range check. */
	return ino == 0 || ino - 1 > UINT32_MAX ? UINT32_MAX : (uint32_t)(ino - 1);
}

/* The errno to reply for an archive accessor's failure: an invalid record
 * (an archive that is not clip's) reads as an I/O error, as a damaged disk
 * would. */
static int archive_errno(int rc)
{
	return rc == -EBADMSG ? EIO : -rc;
}

/* Inode `ino`: 0, or the errno to reply (ENOENT, EIO). */
static int get_inode(const struct fs *fs, fuse_ino_t ino, struct clip_archive_inode *in)
{
	int rc = clip_archive_inode(fs->archive, archive_ino(ino), in);
	return rc < 0 ? archive_errno(rc) : 0;
}

static void fill_stat(const struct clip_archive_inode *in, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = (ino_t)in->ino + 1;
	st->st_mode = in->mode;
	st->st_nlink = in->nlink;
	st->st_uid = in->uid;
	st->st_gid = in->gid;
	st->st_rdev = makedev(in->rdev_major, in->rdev_minor);
	if (S_ISLNK(in->mode))
		st->st_size = (off_t)strlen(in->symlink);
	else
		st->st_size = (off_t)in->size;
	st->st_blksize = FS_BLOCK_SIZE;
	if (S_ISREG(in->mode))
		st->st_blocks = (blkcnt_t)((in->size + 511) / 512);
	/* The image records one time per file: access and change times are
	 * the modification time too, so that they never change either. */
	st->st_mtim.tv_sec = (time_t)in->mtime_sec;
	st->st_mtim.tv_nsec = (long)in->mtime_nsec;
	st->st_atim = st->st_mtim;
	st->st_ctim = st->st_mtim;
}

static void fill_entry(const struct clip_archive_inode *in, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = (fuse_ino_t)in->ino + 1;
	e->generation = 1;
	e->attr_timeout = CACHE_TIMEOUT;
	e->entry_timeout = CACHE_TIMEOUT;
	fill_stat(in, &e->attr);
}

/* Library errors become what a program reading a file can act on: verification
 * failures and every kind of source failure (timeouts, refused connections,
 * HTTP errors) are EIO, as a failing disk would be. */
static int reply_errno(int code)
{
	switch (-code) {
	case ENOMEM:
	case EISDIR:
	case EINVAL: return -code;
	default: return EIO;
	}
}

/* ---- lookups and attributes --------------------------------------------- */

static void mount_ready(struct fs *fs);

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct fs *fs = userdata;
	/* Reads of different pages of a file may be in flight at once: the
	 * content reader is thread-safe and coalesces overlapping fetches. */
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
	/* Listings carry attributes, so that `ls -l` and `find` need no
	 * lookup per entry. Always, not the kernel's adaptive mode: it falls
	 * back to plain READDIR after the first batch and then sends a LOOKUP
	 * per name, while attributes cost us nothing to add. */
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
	/* Symlink targets never change: the kernel may keep them. */
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	/* File handles (name_to_handle_at, NFS export, overlayfs index) are
	 * the inode number and generation, which never change: any handle
	 * stays valid for the life of the mount. */
	if (conn->capable & FUSE_CAP_EXPORT_SUPPORT)
		conn->want |= FUSE_CAP_EXPORT_SUPPORT;
	/* Lookups in one directory need not be serialised: nothing changes. */
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* The page cache of a file stays valid for the life of the mount; its
	 * mtime never changes, so there is nothing to invalidate on. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	/* Splicing is left off: replies come from memory buffers, for which
	 * libfuse's writev is one copy and a splice would add system calls. */
	conn->want &= ~(FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_SPLICE_READ);
	/* The same read-ahead as the backing device's (READ_AHEAD_KB). */
	conn->max_readahead = fs->exact_reads ? 0 : READ_AHEAD_KB * 1024u;
	/* mtimes have nanoseconds. */
	conn->time_gran = 1;
	if (fs->max_read)
		conn->max_read = fs->max_read;
	mount_ready(fs);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fuse_req_userdata(req);
	uint32_t ino;
	int rc;
	/* The kernel resolves "." and ".." itself, except when it turns a
	 * file handle back into a dentry (NFS export, overlayfs index): then
	 * it looks up "." in the handle's inode, of any type, and ".." in a
	 * directory. */
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
		struct clip_archive_inode in;
		rc = -get_inode(fs, parent, &in);
		if (rc == 0 && name[1] && !S_ISDIR(in.mode))
			rc = -ENOTDIR;
		ino = name[1] ? in.parent : in.ino;
	} else {
		rc = clip_archive_lookup(fs->archive, archive_ino(parent), name, strlen(name),
					 &ino);
	}
	if (rc < 0) {
		fuse_reply_err(req, archive_errno(rc));
		return;
	}
	struct clip_archive_inode in;
	if (clip_archive_inode(fs->archive, ino, &in) < 0) {
		fuse_reply_err(req, EIO);
		return;
	}
	struct fuse_entry_param e;
	fill_entry(&in, &e);
	fuse_reply_entry(req, &e);
}

/* Inodes are the archive's, which outlives the session: there is nothing to
 * release when the kernel forgets one. */
static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct clip_archive_inode in;
	int gerr = get_inode(fs, ino, &in);
	if (gerr) {
		fuse_reply_err(req, gerr);
		return;
	}
	struct stat st;
	fill_stat(&in, &st);
	fuse_reply_attr(req, &st, CACHE_TIMEOUT);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fuse_req_userdata(req);
	struct clip_archive_inode in;
	int gerr = get_inode(fs, ino, &in);
	if (gerr) {
		fuse_reply_err(req, gerr);
		return;
	}
	if (!S_ISLNK(in.mode)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	fuse_reply_readlink(req, in.symlink);
}

static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	struct fs *fs = fuse_req_userdata(req);
	struct clip_archive_inode in;
	int gerr = get_inode(fs, ino, &in);
	if (gerr)
		fuse_reply_err(req, gerr);
	else
		fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fuse_req_userdata(req);
	struct statvfs sv;
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = FS_BLOCK_SIZE;
	sv.f_frsize = FS_BLOCK_SIZE;
	sv.f_blocks = (fsblkcnt_t)((fs->stats.regular_bytes + FS_BLOCK_SIZE - 1) / FS_BLOCK_SIZE);
	sv.f_files = fs->stats.inodes;
	sv.f_namemax = 255;
	sv.f_flag = ST_RDONLY;
	fuse_reply_statfs(req, &sv);
}

/* ---- directories ---------------------------------------------------------- */

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct clip_archive_inode in;
	int gerr = get_inode(fs, ino, &in);
	if (gerr) {
		fuse_reply_err(req, gerr);
		return;
	}
	if (!S_ISDIR(in.mode)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	/* Listings never change: the kernel may cache them and keep them
	 * across opens. */
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

/* Directory offsets: 0 is ".", 1 is "..", 2 + i is entry i of the archive's
 * sorted list. Each entry carries the offset of the next one, so a listing
 * resumes exactly where the kernel's buffer filled up. */
static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct fs *fs = fuse_req_userdata(req);
	struct clip_archive_inode dir;
	int gerr = get_inode(fs, ino, &dir);
	if (gerr) {
		fuse_reply_err(req, gerr);
		return;
	}
	if (!S_ISDIR(dir.mode)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	cleanup_free char *buf = malloc(size ? size : 1);
	if (buf == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t used = 0;
	uint64_t total = (uint64_t)dir.nentries + 2;
	for (uint64_t i = off < 0 ? 0 : (uint64_t)off; i < total; i++) {
		const char *name;
		size_t name_len;
		uint32_t child;
		if (i == 0) {
			name = ".";
			child = dir.ino;
		} else if (i == 1) {
			name = "..";
			child = dir.parent;
		} else if (clip_archive_dirent(fs->archive, dir.ino, (uint32_t)(i - 2), &name,
					       &name_len, &child) < 0) {
			fuse_reply_err(req, EIO); /* invalid: the count says it is there */
			return;
		}
		struct clip_archive_inode in;
		if (clip_archive_inode(fs->archive, child, &in) < 0) {
			fuse_reply_err(req, EIO);
			return;
		}
		size_t need;
		if (plus) {
			struct fuse_entry_param e;
			fill_entry(&in, &e);
			need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e,
						      (off_t)(i + 1));
		} else {
			struct stat st;
			memset(&st, 0, sizeof(st));
			st.st_ino = (ino_t)in.ino + 1;
			st.st_mode = in.mode;
			need = fuse_add_direntry(req, buf + used, size - used, name, &st,
						 (off_t)(i + 1));
		}
		if (need > size - used)
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

/* ---- files ---------------------------------------------------------------- */

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct clip_archive_inode in;
	int gerr = get_inode(fs, ino, &in);
	if (gerr) {
		fuse_reply_err(req, gerr);
		return;
	}
	if (S_ISDIR(in.mode)) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	/* Pages read once stay valid for the life of the mount, and closing a
	 * file has nothing to flush. */
	fi->keep_cache = 1;
	fi->noflush = 1;
	fuse_reply_open(req, fi);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	cleanup_free void *buf = malloc(size ? size : 1);
	if (buf == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	struct clip_err err = { 0 };
	ssize_t n =
		clip_content_read(fs->content, archive_ino(ino), buf, size, (uint64_t)off, &err);
	if (n < 0) {
		log_msg(LOG_ERR, "read of inode %llu, %zu bytes at %lld: %s",
			(unsigned long long)ino, size, (long long)off, err.msg);
		fuse_reply_err(req, reply_errno((int)n));
		return;
	}
	fuse_reply_buf(req, buf, (size_t)n);
}

/* ---- extended attributes -------------------------------------------------- */

/* The size protocol of getxattr/listxattr: size 0 asks for the length only,
 * a buffer too small is ERANGE. */
static void reply_xattr(fuse_req_t req, const void *value, size_t len, size_t size)
{
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (len > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, value, len);
}

/* Page `page` (decimal text) of the profile being recorded. */
static void reply_profile_page(fuse_req_t req, struct fs *fs, const char *page, size_t size)
{
	char *end;
	errno = 0;
	unsigned long long k = strtoull(page, &end, 10);
	if (*page < '0' || *page > '9' || *end != '\0' || errno ||
	    k > UINT64_MAX / CLIP_FUSE_PROFILE_PAGE) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	cleanup_free char *text = NULL;
	struct clip_err err = { 0 };
	int rc = clip_content_recorded_profile(fs->content, &text, &err);
	if (rc < 0) {
		fuse_reply_err(req, rc == -ENOENT ? ENODATA : -rc);
		return;
	}
	size_t len = strlen(text), from = (size_t)(k * CLIP_FUSE_PROFILE_PAGE);
	size_t n = from >= len ? 0 : len - from;
	if (n > CLIP_FUSE_PROFILE_PAGE)
		n = CLIP_FUSE_PROFILE_PAGE;
	reply_xattr(req, text + (from < len ? from : len), n, size);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct fs *fs = fuse_req_userdata(req);
	struct clip_archive_inode in;
	int gerr = get_inode(fs, ino, &in);
	if (gerr) {
		fuse_reply_err(req, gerr);
		return;
	}
	if (ino == FUSE_ROOT_ID && strcmp(name, CLIP_FUSE_STATS_XATTR) == 0) {
		/* The serving process's pid first: `clip umount` waits for it
		 * to exit, so that what it writes at unmount is there when
		 * umount returns. */
		cleanup_free char *counters = clip_content_stats_json(fs->content);
		cleanup_free char *json = NULL;
		char supervised[160] = "";
		if (fs->shared)
			snprintf(supervised, sizeof(supervised),
				 ",\"supervisor_pid\":%llu,\"restarts\":%llu,"
				 "\"takeover_pause_max_ms\":%.1f",
				 (unsigned long long)atomic_load(&fs->shared->supervisor_pid),
				 (unsigned long long)atomic_load(&fs->shared->restarts),
				 (double)atomic_load(&fs->shared->max_pause_us) / 1000.0);
		if (counters == NULL || counters[0] != '{' ||
		    asprintf(&json, "{\"server_pid\":%ld%s%s%s%s%s", (long)getpid(), supervised,
			     fs->stats_extra[0] ? "," : "", fs->stats_extra,
			     counters[1] == '}' ? "" : ",", counters + 1) < 0)
			fuse_reply_err(req, ENOMEM);
		else
			reply_xattr(req, json, strlen(json), size);
		return;
	}
	if (ino == FUSE_ROOT_ID && strcmp(name, CLIP_FUSE_CONFIG_XATTR) == 0) {
		const char *config = clip_archive_config_json(fs->archive);
		if (config == NULL)
			fuse_reply_err(req, ENODATA);
		else
			reply_xattr(req, config, strlen(config), size);
		return;
	}
	size_t plen = strlen(CLIP_FUSE_PROFILE_XATTR_PAGE);
	if (ino == FUSE_ROOT_ID && strncmp(name, CLIP_FUSE_PROFILE_XATTR_PAGE, plen) == 0) {
		reply_profile_page(req, fs, name + plen, size);
		return;
	}
	for (uint32_t i = 0; i < in.nxattrs; i++) {
		const char *xname;
		const unsigned char *value;
		size_t len;
		if (clip_archive_xattr(fs->archive, in.ino, i, &xname, &value, &len) < 0)
			break;
		if (strcmp(xname, name) == 0) {
			reply_xattr(req, value, len, size);
			return;
		}
	}
	fuse_reply_err(req, ENODATA);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct fs *fs = fuse_req_userdata(req);
	struct clip_archive_inode in;
	int gerr = get_inode(fs, ino, &in);
	if (gerr) {
		fuse_reply_err(req, gerr);
		return;
	}
	size_t total = 0;
	for (uint32_t i = 0; i < in.nxattrs; i++) {
		const char *xname;
		const unsigned char *value;
		size_t len;
		if (clip_archive_xattr(fs->archive, in.ino, i, &xname, &value, &len) == 0)
			total += strlen(xname) + 1;
	}
	if (size == 0 || total > size) {
		reply_xattr(req, NULL, total, size);
		return;
	}
	cleanup_free char *list = malloc(total ? total : 1);
	if (list == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t used = 0;
	for (uint32_t i = 0; i < in.nxattrs; i++) {
		const char *xname;
		const unsigned char *value;
		size_t len;
		if (clip_archive_xattr(fs->archive, in.ino, i, &xname, &value, &len) == 0) {
			size_t n = strlen(xname) + 1;
			memcpy(list + used, xname, n);
			used += n;
		}
	}
	fuse_reply_buf(req, list, used);
}

/* ---- everything that would change the image: EROFS ----------------------- */

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	fuse_reply_err(req, EROFS);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	fuse_reply_err(req, EROFS);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	fuse_reply_err(req, EROFS);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	fuse_reply_err(req, EROFS);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	fuse_reply_err(req, EROFS);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			 struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			       struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
			       struct fuse_file_info *fi_out, size_t len, int flags)
{
	fuse_reply_err(req, EROFS);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.access = op_access,
	.statfs = op_statfs,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.open = op_open,
	.release = op_release,
	.read = op_read,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.setattr = op_setattr,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_unlink,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.write = op_write,
	.create = op_create,
	.setxattr = op_setxattr,
	.removexattr = op_removexattr,
	.fallocate = op_fallocate,
	.copy_file_range = op_copy_file_range,
};

/* ---- finding mounts ------------------------------------------------------- */

/* Undo mountinfo's octal escapes (\040 for a space, \011, \012, \134) in
 * place. */
static void unescape_mountinfo(char *s)
{
	char *d = s;
	while (*s) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*d++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 4;
		} else {
			*d++ = *s++;
		}
	}
	*d = '\0';
}

int clip_fuse_find_mount(const char *mountpoint, dev_t *dev, struct clip_err *err)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (f == NULL)
		return clip_err_errno(err, errno, "/proc/self/mountinfo");
	cleanup_free char *line = NULL;
	size_t cap = 0;
	bool found = false;
	unsigned major = 0, minor = 0;
	char fstype[64] = "";
	/* Later lines are mounts made later: the last match is the topmost. */
	while (getline(&line, &cap, f) > 0) {
		/* id parent major:minor root mountpoint options [optional...] - type source */
		char *save = NULL;
		char *fields[5];
		int n = 0;
		for (char *tok = strtok_r(line, " \n", &save); tok && n < 5;
		     tok = strtok_r(NULL, " \n", &save))
			fields[n++] = tok;
		if (n < 5)
			continue;
		unescape_mountinfo(fields[4]);
		if (strcmp(fields[4], mountpoint) != 0)
			continue;
		char *type = NULL;
		for (char *tok = strtok_r(NULL, " \n", &save); tok;
		     tok = strtok_r(NULL, " \n", &save))
			if (strcmp(tok, "-") == 0) {
				type = strtok_r(NULL, " \n", &save);
				break;
			}
		if (type == NULL || sscanf(fields[2], "%u:%u", &major, &minor) != 2)
			continue;
		found = true;
		snprintf(fstype, sizeof(fstype), "%s", type);
	}
	fclose(f);
	if (!found)
		return clip_err_set(err, ENOENT, "%s: not mounted", mountpoint);
	if (strcmp(fstype, CLIP_FUSE_TYPE) != 0)
		return clip_err_set(err, EMEDIUMTYPE, "%s: not a clip mount (a %s mount)",
				    mountpoint, fstype);
	if (dev)
		*dev = makedev(major, minor);
	return 0;
}

/* ---- serving ---------------------------------------------------------------- */

/* Set the read-ahead of the mount's backing device (READ_AHEAD_KB, or 0 for
 * exact reads). Only root may; anyone else keeps the kernel's default. */
static void set_read_ahead(const char *mountpoint, int kb)
{
	dev_t dev;
	if (geteuid() != 0 || clip_fuse_find_mount(mountpoint, &dev, NULL) < 0)
		return;
	char path[64];
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", major(dev), minor(dev));
	cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	char value[16];
	int n = snprintf(value, sizeof(value), "%d\n", kb);
	if (write(fd, value, (size_t)n) < 0) {
		/* The default read-ahead works too, only with more requests. */
	}
}

/* Append `s` to the -o list in `out`, escaping the characters libfuse's
 * option parser treats specially. */
static void append_escaped(char *out, size_t cap, const char *s)
{
	size_t len = strlen(out);
	for (; *s && len + 2 < cap; s++) {
		if (*s == ',' || *s == '\\')
			out[len++] = '\\';
		out[len++] = *s;
	}
	out[len] = '\0';
}

/* The value of the last max_read=N in a -o list, 0 if none. */
static unsigned find_max_read(const char *list)
{
	unsigned value = 0;
	for (const char *p = list; p && *p;) {
		size_t len = strcspn(p, ",");
		if (len > 9 && strncmp(p, "max_read=", 9) == 0)
			value = (unsigned)strtoul(p + 9, NULL, 10);
		p += len + (p[len] == ',');
	}
	return value;
}

static double seconds_since(const struct timespec *start)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static void *prefetch_main(void *arg)
{
	struct fs *fs = arg;
	struct clip_err err = { 0 };
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	int rc = clip_content_prefetch(fs->content, &fs->stop_prefetch, &err);
	/* Stopped first: the unmount cancels the reads under way, whose
	 * errors ("cancelled") are no failure of the prefetch. */
	if (atomic_load(&fs->stop_prefetch))
		log_msg(LOG_INFO, "prefetch: stopped by the unmount after %.1f s",
			seconds_since(&start));
	else if (rc < 0)
		log_msg(LOG_WARNING, "prefetch: %s", err.msg);
	else
		log_msg(LOG_INFO, "prefetch: every layer is in the disk cache (%.1f s)",
			seconds_since(&start));
	return NULL;
}

/* Start the prefetch thread when asked for, once. */
static void prefetch_start(struct fs *fs)
{
	if (!fs->prefetch || fs->prefetching)
		return;
	if (pthread_create(&fs->prefetch_thread, NULL, prefetch_main, fs) == 0)
		fs->prefetching = true;
	else
		log_msg(LOG_WARNING, "prefetch: cannot start its thread");
}

/* Stop a running prefetch and wait for its thread. */
static void prefetch_stop(struct fs *fs)
{
	if (!fs->prefetching)
		return;
	atomic_store(&fs->stop_prefetch, true);
	/* Served no more: a prefetch streaming a whole layer (one without
	 * checkpoints) from a stalled registry must not hold the exit. */
	clip_content_cancel(fs->content);
	pthread_join(fs->prefetch_thread, NULL);
	fs->prefetching = false;
}

/* The parent side of daemonising: wait for the child's report. The child
 * writes one byte, '0' once the mount is ready or '1' followed by the
 * reason. */
static int wait_for_daemon(int fd, pid_t child, const char *mountpoint, struct clip_err *err)
{
	char msg[CLIP_ERR_MSG_MAX];
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, msg + len, sizeof(msg) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == sizeof(msg) - 1)
			break;
	}
	close(fd);
	msg[len] = '\0';
	if (len > 0 && msg[0] == '0')
		return 0;
	int status = 0;
	while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
	}
	if (len > 1 && msg[0] == '1')
		return clip_err_set(err, EIO, "mount %s: %s", mountpoint, msg + 1);
	if (WIFSIGNALED(status))
		return clip_err_set(err, EIO,
				    "mount %s: the mount daemon was killed by signal %d before "
				    "the mount was ready",
				    mountpoint, WTERMSIG(status));
	return clip_err_set(err, EIO,
			    "mount %s: the mount daemon exited (status %d) before the mount was "
			    "ready",
			    mountpoint, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

/* The child side: tell the parent how start-up went. Ignoring a failed write
 * is right: the parent then sees the pipe close without a report and says
 * the daemon exited early. */
static void report_to_parent(int fd, const char *failure)
{
	char msg[CLIP_ERR_MSG_MAX + 1];
	int n = snprintf(msg, sizeof(msg), "%c%s", failure ? '1' : '0', failure ? failure : "");
	if (n > (int)sizeof(msg) - 1)
		n = (int)sizeof(msg) - 1;
	if (write(fd, msg, (size_t)n) < 0) {
		/* see above */
	}
	close(fd);
}

static int redirect_stdio(int log_fd)
{
	cleanup_close int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0)
		return -errno;
	if (dup2(null, STDIN_FILENO) < 0 || dup2(null, STDOUT_FILENO) < 0 ||
	    dup2(log_fd >= 0 ? log_fd : null, STDERR_FILENO) < 0)
		return -errno;
	return 0;
}

/* Messages go to the log from now on (the mount works). */
static void logger_start(const struct fs *fs)
{
	pthread_mutex_lock(&logger.lock);
	if (fs->log_fd >= 0) {
		logger.fd = fs->log_fd;
		logger.to_file = true;
	} else if (!fs->foreground) {
		openlog("clip", LOG_PID, LOG_DAEMON);
		logger.fd = -1;
	}
	logger.capture = false;
	pthread_mutex_unlock(&logger.lock);
}

/* Called from init, the first request the kernel sends on a new mount (or
 * the one replayed by a taking-over server): the connection works and
 * requests are being served. Messages now go to the log, and a waiting
 * parent is told that the mount is ready. */
static void mount_ready(struct fs *fs)
{
	logger_start(fs);
	if (fs->report_fd >= 0) {
		report_to_parent(fs->report_fd, NULL);
		fs->report_fd = -1;
	}
	/* Background work starts with serving, never before: reads of
	 * programs come first. */
	fs->served = true;
	clip_content_start(fs->content);
	prefetch_start(fs);
}

/* `given` made absolute into *out (the caller's), because the daemon leaves
 * its working directory and unmounting later needs the same path. Only a
 * directory that is not a clip mount yet will do. */
static int resolve_mountpoint(const char *given, char **out, struct clip_err *err)
{
	cleanup_free char *path = realpath(given, NULL);
	if (path == NULL)
		return clip_err_errno(err, errno, "mountpoint %s", given);
	struct stat st;
	if (stat(path, &st) < 0)
		return clip_err_errno(err, errno, "mountpoint %s", given);
	if (!S_ISDIR(st.st_mode))
		return clip_err_set(err, ENOTDIR, "mountpoint %s: not a directory", given);
	/* Mounting twice on one directory hides the first mount and leaves
	 * its daemon running for nothing: almost certainly a mistake. */
	if (clip_fuse_find_mount(path, NULL, NULL) == 0)
		return clip_err_set(err, EBUSY, "mountpoint %s: already a clip mount", given);
	*out = clip_steal(path);
	return 0;
}

/* The -o list for libfuse into `out`. The user's options come first, so that
 * ours win: a clip mount is always read-only, checked by the kernel, and
 * recognisable by its type. A mount made by root is also allow_other: every
 * user then sees exactly what the image's modes allow them (the kernel
 * checks them, default_permissions), as in a container whose image says
 * USER 1000; "noallow_other", which libfuse does not know, opts out and is
 * dropped here. setuid bits and device nodes stay inert (nosuid, nodev:
 * libfuse's default) unless "suid" or "dev" is given. */
static int mount_options(const struct clip_fuse_options *options, char *out, size_t cap,
			 struct clip_err *err)
{
	const char *given = options->fuse_options ? options->fuse_options : "";
	if (strlen(given) > cap / 2)
		return clip_err_set(err, E2BIG, "-o %s: too long", given);
	out[0] = '\0';
	bool opt_out = false, allow = false;
	for (const char *p = given; *p;) {
		size_t len = strcspn(p, ",");
		if (len == strlen("noallow_other") && strncmp(p, "noallow_other", len) == 0)
			opt_out = true;
		else if (len > 0)
			snprintf(out + strlen(out), cap - strlen(out), "%.*s,", (int)len, p);
		if ((len == 11 && strncmp(p, "allow_other", 11) == 0) ||
		    (len == 10 && strncmp(p, "allow_root", 10) == 0))
			allow = true;
		p += len;
		if (*p == ',')
			p++;
	}
	if (geteuid() == 0 && !opt_out && !allow)
		snprintf(out + strlen(out), cap - strlen(out), "allow_other,");
	size_t used = strlen(out);
	snprintf(out + used, cap - used, "ro,default_permissions,subtype=clip,fsname=");
	append_escaped(out, cap, options->fsname ? options->fsname : "clip");
	return 0;
}

/* Daemonise: fork a child that mounts and serves while this process waits
 * for its report (wait_for_daemon). Returns in both processes: in the parent
 * with *in_parent set and the outcome of the start-up, in the child with 0,
 * fs->report_fd set and a session of its own. */
static int fork_daemon(struct fs *fs, const char *mountpoint, bool *in_parent, struct clip_err *err)
{
	*in_parent = false;
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return clip_err_errno(err, errno, "pipe");
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(pipefd[0]);
		close(pipefd[1]);
		return clip_err_errno(err, e, "fork");
	}
	if (pid > 0) {
		*in_parent = true;
		close(pipefd[1]);
		return wait_for_daemon(pipefd[0], pid, mountpoint, err);
	}
	close(pipefd[0]);
	fs->report_fd = pipefd[1];
	/* Out of the caller's session: closing its terminal must not end the
	 * mount. */
	setsid();
	return 0;
}

/* What a mount holds of libfuse, released by session_stop. */
struct session {
	struct fuse_args args;
	struct fuse_session *se;
	bool handlers; /* signal handlers installed */
	bool mounted;
};

/* Create the FUSE session for `fs` and mount it at `mountpoint` with the -o
 * list `mount_options`. session_stop undoes whatever was done, also after a
 * failure. */
static int session_start(struct session *s, struct fs *fs, const char *mount_options,
			 const char *mountpoint, bool handlers, struct clip_err *err)
{
	/* Until the mount is ready, libfuse's messages become the error;
	 * fusermount3 (used when not root) prints its own on standard error,
	 * which is still the caller's while it runs. */
	logger.capture = true;
	logger.captured[0] = '\0';
	fuse_set_log_func(log_from_libfuse);

	if (fuse_opt_add_arg(&s->args, "clip") < 0 || fuse_opt_add_arg(&s->args, "-o") < 0 ||
	    fuse_opt_add_arg(&s->args, mount_options) < 0)
		return clip_err_nomem(err);
	s->se = fuse_session_new(&s->args, &ops, sizeof(ops), fs);
	if (s->se == NULL)
		return clip_err_set(err, EINVAL, "%s",
				    logger.captured[0] ? logger.captured
						       : "cannot start a FUSE session");
	if (handlers && fuse_set_signal_handlers(s->se) < 0)
		return clip_err_set(err, EIO, "cannot install signal handlers");
	s->handlers = handlers;
	if (fuse_session_mount(s->se, mountpoint) != 0)
		return clip_err_set(err, EIO, "%s",
				    logger.captured[0] ? logger.captured
						       : "the kernel refused the mount");
	s->mounted = true;
	set_read_ahead(mountpoint, fs->exact_reads ? 0 : READ_AHEAD_KB);
	return 0;
}

static void session_stop(struct session *s)
{
	if (s->mounted)
		fuse_session_unmount(s->se);
	if (s->handlers)
		fuse_remove_signal_handlers(s->se);
	if (s->se)
		fuse_session_destroy(s->se);
	fuse_opt_free_args(&s->args);
	fuse_set_log_func(NULL);
}

/* The daemon's last step of start-up: out of the caller's working directory,
 * its standard streams on /dev/null (standard error on the log file, if
 * any). */
static int leave_caller(int log_fd, struct clip_err *err)
{
	int rc = chdir("/") < 0 ? -errno : redirect_stdio(log_fd);
	if (rc < 0)
		return clip_err_errno(err, rc,
				      "daemon: cannot leave the caller's directory and terminal");
	return 0;
}

/* Serve requests until the mount is gone or a signal stops the loop: 0 for
 * a clean stop. */
static int serve_requests(struct fuse_session *se, const struct clip_fuse_options *options,
			  const char *mountpoint, bool clone_fd, struct clip_err *err)
{
	struct fuse_loop_config *loop_config = fuse_loop_cfg_create();
	if (loop_config == NULL)
		return clip_err_nomem(err);
	/* A /dev/fuse descriptor per thread: requests are handed out without
	 * the threads contending on one. Not under a supervisor: the requests
	 * a clone holds are failed when it closes, where those on the shared
	 * descriptor can be resent (docs/TAKEOVER.md). */
	fuse_loop_cfg_set_clone_fd(loop_config, clone_fd ? 1 : 0);
	if (options->max_threads)
		fuse_loop_cfg_set_max_threads(loop_config, options->max_threads);
	int loop_rc = fuse_session_loop_mt(se, loop_config);
	fuse_loop_cfg_destroy(loop_config);
	pthread_mutex_lock(&logger.lock);
	bool started = !logger.capture;
	pthread_mutex_unlock(&logger.lock);
	int rc = 0;
	/* A positive value is the signal that ended the loop: a clean stop. */
	if (loop_rc < 0)
		rc = clip_err_set(err, -loop_rc, "serving failed: %s",
				  !started && logger.captured[0] ? logger.captured
								 : strerror(-loop_rc));
	else if (!started)
		rc = clip_err_set(err, EINTR, "stopped before the mount was ready");
	/* A daemon's standard error is /dev/null by now: the log is the only
	 * place left to say why it stops. */
	if (rc < 0 && started && !options->foreground)
		log_msg(LOG_ERR, "mount %s: %s", mountpoint, err ? err->msg : "serving failed");
	return rc;
}

/* ---- a server of a supervised mount ------------------------------------------ */

/* The two headers of the FUSE wire protocol that the hooks below look at,
 * as <linux/fuse.h> defines them (that header and libfuse's clash). */
struct wire_in_header {
	uint32_t len;
	uint32_t opcode;
	uint64_t unique;
	uint64_t nodeid;
	uint32_t uid, gid, pid;
	uint16_t total_extlen, padding;
};
struct wire_out_header {
	uint32_t len;
	int32_t error;
	uint64_t unique;
};
#define WIRE_FUSE_INIT 26

/* libfuse's reads through the shared descriptor, as read(2) does them; the
 * kernel's FUSE_INIT of a fresh mount is kept for the supervisor. */
static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
	struct fs *fs = userdata;
	ssize_t n = read(fd, buf, len);
	struct wire_in_header h;
	if (n >= (ssize_t)sizeof(h) && !atomic_load(&fs->init_seen)) {
		memcpy(&h, buf, sizeof(h));
		if (h.opcode == WIRE_FUSE_INIT && (size_t)n <= sizeof(fs->init)) {
			memcpy(fs->init, buf, (size_t)n);
			fs->init_len = (size_t)n;
			fs->init_unique = h.unique;
			atomic_store(&fs->init_seen, true);
		}
	}
	return n;
}

static size_t iov_total(const struct iovec *iov, int count)
{
	size_t total = 0;
	for (int i = 0; i < count; i++)
		total += iov[i].iov_len;
	return total;
}

/* libfuse's replies, as writev(2) does them, except that the reply to a
 * replayed INIT is kept from the kernel (it had its INIT long ago and would
 * take a second reply as an error), and that the reply to a fresh mount's
 * INIT, once the kernel has it, tells the supervisor the server is ready. */
static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct fs *fs = userdata;
	struct wire_out_header h = { 0 };
	if (count > 0 && iov[0].iov_len >= sizeof(h))
		memcpy(&h, iov[0].iov_base, sizeof(h));
	if (fs->swallow_reply) {
		fs->swallowed_error = h.error ? h.error : fs->swallowed_error;
		return (ssize_t)iov_total(iov, count);
	}
	ssize_t n = writev(fd, iov, count);
	if (n >= 0 && atomic_load(&fs->init_seen) && h.unique == fs->init_unique &&
	    !atomic_exchange(&fs->init_reported, true)) {
		int saved = errno;
		if (h.error == 0)
			clip_supervisor_send(fs->supervisor_sock, CLIP_SUPERVISOR_MSG_READY,
					     fs->init, fs->init_len);
		else
			clip_supervisor_send(fs->supervisor_sock, CLIP_SUPERVISOR_MSG_ERROR,
					     "the kernel's INIT was refused",
					     strlen("the kernel's INIT was refused"));
		errno = saved;
	}
	return n;
}

static const struct fuse_custom_io supervised_io = {
	.read = io_read,
	.writev = io_writev,
};

/* Feed libfuse the INIT the kernel sent the first server, so that it sets
 * up the session (and runs op_init) as then; its reply is swallowed. */
static int replay_init(struct fs *fs, struct fuse_session *se, unsigned char *init, size_t len,
		       struct clip_err *err)
{
	struct fuse_buf buf = { .mem = init, .size = len };
	fs->swallowed_error = 0;
	fs->swallow_reply = true;
	fuse_session_process_buf(se, &buf);
	fs->swallow_reply = false;
	if (fs->swallowed_error)
		return clip_err_set(err, EPROTO, "replaying the mount's INIT: libfuse answered %s",
				    strerror(-fs->swallowed_error));
	if (!fs->served)
		return clip_err_set(err, EPROTO, "replaying the mount's INIT: not accepted");
	return 0;
}

/* Serve as a server of a supervised mount, whose supervisor is at the other
 * end of `sock` (taken): receive the descriptor, take over or start fresh,
 * serve until told to stop or unmounted. 0 for a clean stop. */
static int serve_supervised(struct fs *fs, const struct clip_fuse_options *options, int sock,
			    const char *mountpoint, struct clip_err *err)
{
	fs->supervisor_sock = sock;
	fs->report_fd = -1;
	int fuse_fd = -1, shared_fd = -1;
	unsigned char init[CLIP_SUPERVISOR_INIT_MAX];
	size_t init_len = 0;
	struct session s = { .args = FUSE_ARGS_INIT(0, NULL) };
	/* Until the mount serves, libfuse's messages become the error the
	 * supervisor logs. */
	logger.capture = true;
	logger.captured[0] = '\0';
	fuse_set_log_func(log_from_libfuse);
	int rc = clip_supervisor_receive_hello(sock, &fuse_fd, &shared_fd, init, &init_len, err);
	if (rc < 0)
		goto out;
	void *shared = mmap(NULL, sizeof(struct clip_supervisor_shared), PROT_READ, MAP_SHARED,
			    shared_fd, 0);
	close(shared_fd);
	if (shared != MAP_FAILED && ((const struct clip_supervisor_shared *)shared)->version ==
					    CLIP_SUPERVISOR_SHARED_VERSION)
		fs->shared = shared;
	if (fuse_opt_add_arg(&s.args, "clip") < 0) {
		close(fuse_fd);
		rc = clip_err_nomem(err);
		goto out;
	}
	s.se = fuse_session_new(&s.args, &ops, sizeof(ops), fs);
	if (s.se == NULL) {
		close(fuse_fd);
		rc = clip_err_set(err, EINVAL, "cannot start a FUSE session");
		goto out;
	}
	if (fuse_session_custom_io(s.se, &supervised_io, fuse_fd) < 0) {
		close(fuse_fd);
		rc = clip_err_set(err, EINVAL, "cannot give the FUSE session its descriptor");
		goto out;
	}
	if (fuse_set_signal_handlers(s.se) < 0) {
		rc = clip_err_set(err, EIO, "cannot install signal handlers");
		goto out;
	}
	s.handlers = true;
	if (init_len > 0) {
		rc = replay_init(fs, s.se, init, init_len, err);
		if (rc < 0)
			goto out;
		clip_supervisor_send(sock, CLIP_SUPERVISOR_MSG_READY, NULL, 0);
	}
	rc = serve_requests(s.se, options, mountpoint, false, err);
out:
	if (rc < 0 && !fs->served)
		clip_supervisor_send(sock, CLIP_SUPERVISOR_MSG_ERROR, err->msg, strlen(err->msg));
	prefetch_stop(fs);
	session_stop(&s);
	struct clip_err hook_err = { 0 };
	if (rc == 0 && fs->served && options->unmounted &&
	    options->unmounted(options->unmounted_opaque, &hook_err) < 0)
		log_msg(LOG_ERR, "mount %s: at unmount: %s", mountpoint, hook_err.msg);
	if (fs->shared)
		munmap((void *)fs->shared, sizeof(struct clip_supervisor_shared));
	fs->shared = NULL;
	close(sock);
	return rc;
}

/* ---- the supervisor's side ------------------------------------------------------- */

struct supervised {
	struct fs *fs;
	const struct clip_fuse_options *options;
	const char *mountpoint;
	struct session *session;
};

/* The first server: a child of the supervisor, with the archive and the
 * content the mount opened. */
static void serve_forked(void *opaque, int sock)
{
	struct supervised *sv = opaque;
	if (sv->fs->report_fd >= 0)
		close(sv->fs->report_fd);
	sv->fs->report_fd = -1;
	struct clip_err err = { 0 };
	int rc = serve_supervised(sv->fs, sv->options, sock, sv->mountpoint, &err);
	_exit(rc < 0 ? 1 : 0);
}

static void supervised_unmount(void *opaque)
{
	struct supervised *sv = opaque;
	if (sv->session->mounted)
		fuse_session_unmount(sv->session->se);
	sv->session->mounted = false;
}

static void supervised_report(void *opaque, const char *failure)
{
	struct supervised *sv = opaque;
	if (sv->fs->report_fd >= 0)
		report_to_parent(sv->fs->report_fd, failure);
	sv->fs->report_fd = -1;
}

static void supervised_log(void *opaque, int priority, const char *msg)
{
	log_msg(priority, "%s", msg);
}

/* The supervisor's life: mount, supervise servers, unmount. */
static int supervise(struct fs *fs, const struct clip_fuse_options *options, const char *mount_opts,
		     const char *mountpoint, int log_fd, struct clip_err *err)
{
	cleanup_free char *binary = NULL;
	if (options->server_binary == NULL) {
		binary = realpath("/proc/self/exe", NULL);
		if (binary == NULL)
			return clip_err_errno(err, errno, "/proc/self/exe");
	}
	char cwd[PATH_MAX];
	if (getcwd(cwd, sizeof(cwd)) == NULL)
		return clip_err_errno(err, errno, "working directory");
	struct session s = { .args = FUSE_ARGS_INIT(0, NULL) };
	int rc = session_start(&s, fs, mount_opts, mountpoint, false, err);
	if (rc == 0 && fs->report_fd >= 0)
		rc = leave_caller(log_fd, err);
	if (rc == 0) {
		logger_start(fs);
		struct supervised sv = {
			.fs = fs, .options = options, .mountpoint = mountpoint, .session = &s
		};
		struct clip_supervisor_config cfg = {
			.fuse_fd = fuse_session_fd(s.se),
			.mountpoint = mountpoint,
			.binary = options->server_binary ? options->server_binary : binary,
			.argv = options->server_argv,
			.cwd = cwd,
			.serve_forked = serve_forked,
			.unmount = supervised_unmount,
			.report = supervised_report,
			.log = supervised_log,
			.opaque = &sv,
		};
		if (options->server_argv == NULL)
			rc = clip_err_set(err, EINVAL, "supervised, but no arguments for servers");
		else
			rc = clip_supervisor_run(&cfg, err);
	}
	session_stop(&s);
	return rc;
}

int clip_fuse_serve(struct clip_archive *archive, struct clip_content *content,
		    const struct clip_fuse_options *options, struct clip_err *err)
{
	struct fs fs = {
		.archive = archive,
		.content = content,
		.foreground = options->foreground,
		.max_read = find_max_read(options->fuse_options),
		.prefetch = options->prefetch,
		.exact_reads = options->exact_reads,
		.stats_extra = options->stats_extra_json ? options->stats_extra_json : "",
		.log_fd = -1,
		.report_fd = -1,
		.supervisor_sock = -1,
	};
	clip_archive_stats(archive, &fs.stats);
	cleanup_free char *mountpoint = NULL;
	int rc;
	if (options->serve_fd > 0)
		/* Mounted already, by our supervisor. */
		mountpoint = strdup(options->mountpoint);
	else if ((rc = resolve_mountpoint(options->mountpoint, &mountpoint, err)) < 0)
		return rc;
	if (mountpoint == NULL)
		return clip_err_nomem(err);
	cleanup_close int log_fd = -1;
	if (options->log_path) {
		log_fd = open(options->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
		if (log_fd < 0)
			return clip_err_errno(err, errno, "log file %s", options->log_path);
	}
	fs.log_fd = log_fd;
	if (options->serve_fd > 0) {
		rc = serve_supervised(&fs, options, options->serve_fd, mountpoint, err);
		if (rc < 0)
			clip_err_prefix(err, "mount %s", options->mountpoint);
		return rc;
	}
	char mount_opts[4096];
	rc = mount_options(options, mount_opts, sizeof(mount_opts), err);
	if (rc < 0)
		return rc;
	if (!options->foreground) {
		bool in_parent;
		rc = fork_daemon(&fs, options->mountpoint, &in_parent, err);
		if (rc < 0 || in_parent)
			return rc;
	}

	struct session s = { .args = FUSE_ARGS_INIT(0, NULL) };
	if (options->supervise) {
		rc = supervise(&fs, options, mount_opts, mountpoint, log_fd, err);
	} else {
		rc = session_start(&s, &fs, mount_opts, mountpoint, true, err);
		if (rc == 0 && fs.report_fd >= 0)
			rc = leave_caller(log_fd, err);
		if (rc == 0)
			rc = serve_requests(s.se, options, mountpoint, true, err);
	}
	prefetch_stop(&fs);
	session_stop(&s);
	struct clip_err hook_err = { 0 };
	if (fs.served && options->unmounted &&
	    options->unmounted(options->unmounted_opaque, &hook_err) < 0)
		log_msg(LOG_ERR, "mount %s: at unmount: %s", mountpoint, hook_err.msg);
	if (fs.report_fd >= 0) {
		/* The daemon failed to start: its report is the caller's error
		 * (the parent names the mountpoint), and it must not go on to
		 * run the caller's code. */
		report_to_parent(fs.report_fd, err && err->msg[0] ? err->msg : "start-up failed");
		_exit(1);
	}
	if (rc < 0)
		clip_err_prefix(err, "mount %s", options->mountpoint);
	return rc;
}
