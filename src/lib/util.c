/* The helpers of util.h that are not inline. */
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

#include "clip/err.h"

int clip_write_full(int fd, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

ssize_t clip_pread_full(int fd, void *buf, size_t len, uint64_t offset)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n =
			pread(fd, (unsigned char *)buf + done, len - done, (off_t)(offset + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* Write `len` bytes to `path` through a temporary file in the same directory,
 * fsync and rename, so that `path` is either the old file or the whole new
 * one. The file gets 0644 less the umask, as open(2) would give it. */
int clip_write_file_atomic(const char *path, const void *data, size_t len, struct clip_err *err)
{
	size_t plen = strlen(path);
	cleanup_free char *tmp = malloc(plen + 16);
	if (tmp == NULL)
		return clip_err_nomem(err);
	snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
	int fd = mkstemp(tmp);
	if (fd < 0)
		return clip_err_errno(err, errno, "%s: cannot create temporary file", path);
	mode_t mask = umask(0);
	umask(mask);
	int rc = clip_write_full(fd, data, len);
	if (rc == 0 && fchmod(fd, 0644 & ~mask) < 0)
		rc = -errno;
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0) {
		unlink(tmp);
		return clip_err_errno(err, rc, "%s: cannot write", path);
	}
	return 0;
}
