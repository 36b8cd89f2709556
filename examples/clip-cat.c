/* clip-cat: print one file of an image, read lazily through libclip.
 *
 * usage: clip-cat ARCHIVE PATH
 *
 * An example of the library's use from outside the tree: it includes only the
 * installed headers and links with `pkg-config --cflags --libs clip` (see
 * examples/Makefile). It opens the archive that `clip index` wrote, resolves
 * PATH in the image's merged tree, and reads the file's bytes from the source
 * the archive records (the OCI layout or registry it was indexed from),
 * fetching and inflating only the part of the layer that holds them. No cache
 * is used: this is `clip cat ARCHIVE PATH` without its options.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <clip/archive.h>
#include <clip/content.h>
#include <clip/err.h>
#include <clip/version.h>

/* Write the bytes of regular file `ino` to stdout: 0 or a negative errno
 * with `err` set. */
static int copy_file(struct clip_content *content, uint32_t ino, uint64_t size,
		     struct clip_err *err)
{
	static char buf[1 << 16];
	for (uint64_t off = 0; off < size;) {
		ssize_t n = clip_content_read(content, ino, buf, sizeof(buf), off, err);
		if (n < 0)
			return (int)n;
		if (n == 0)
			break; /* end of file */
		if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n)
			return clip_err_errno(err, errno, "standard output");
		off += (uint64_t)n;
	}
	if (fflush(stdout) != 0)
		return clip_err_errno(err, errno, "standard output");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--version") == 0) {
		printf("clip-cat: compiled against libclip %s, running with %s\n", CLIP_VERSION,
		       clip_version());
		return 0;
	}
	if (argc != 3) {
		fprintf(stderr, "usage: clip-cat ARCHIVE PATH\n");
		return 2;
	}
	struct clip_err err = { 0 };
	struct clip_archive *archive = NULL;
	struct clip_content *content = NULL;
	struct clip_content_options options = { 0 }; /* the recorded source, no cache */
	struct clip_archive_inode inode;
	uint32_t ino;
	int rc = clip_archive_open(argv[1], &archive, &err);
	if (rc == 0)
		rc = clip_archive_resolve(archive, argv[2], &ino, &err);
	if (rc == 0 && (rc = clip_archive_inode(archive, ino, &inode)) < 0)
		clip_err_set(&err, rc, "%s: unreadable inode", argv[2]);
	if (rc == 0 && !S_ISREG(inode.mode))
		rc = clip_err_set(&err, EINVAL, "%s: not a regular file", argv[2]);
	if (rc == 0)
		rc = clip_content_open(archive, &options, &content, &err);
	if (rc == 0)
		rc = copy_file(content, ino, inode.size, &err);
	if (rc < 0)
		fprintf(stderr, "clip-cat: %s\n", err.msg);
	clip_content_close(content);
	clip_archive_close(archive);
	return rc < 0 ? 1 : 0;
}
