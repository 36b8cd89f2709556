/* clip restart: replace the server of a supervised mount (clip mount
 * --supervise) without failing a request, to upgrade clip or to recover a
 * mount whose servers kept dying. docs/TAKEOVER.md tells how. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#include "cli.h"
#include "clip/fuse.h"
#include "clip/supervisor.h"

static void help(void)
{
	printf("usage: clip restart [--binary PATH] MOUNTPOINT\n"
	       "\n"
	       "Replace the server of a mount made with `clip mount --supervise`: a new\n"
	       "server starts beside the running one, and once it serves, the old one is\n"
	       "stopped and the requests it had taken are served again by the new one, so\n"
	       "that no program sees an error. If the new server fails to start (5 tries),\n"
	       "the old one keeps serving and the command fails.\n"
	       "\n"
	       "options:\n"
	       "      --binary PATH             start the new server from this clip binary\n"
	       "                                (an upgrade; default: the one serving now),\n"
	       "                                which later restarts then use too\n"
	       "  -h, --help                    this text\n");
}

/* The supervisor's pid from the mount's stats: 0 with a message printed when
 * there is none. */
static pid_t supervisor_pid(const char *path)
{
	char buf[1 << 16];
	ssize_t n = getxattr(path, CLIP_FUSE_STATS_XATTR, buf, sizeof(buf) - 1);
	if (n <= 0) {
		cli_fail(CLI_EXIT_FAILURE, "restart %s: %s", path,
			 n < 0 ? strerror(errno) : "no stats");
		return 0;
	}
	buf[n] = '\0';
	json_t *root = json_loads(buf, 0, NULL);
	json_int_t pid = json_integer_value(json_object_get(root, "supervisor_pid"));
	json_decref(root);
	if (pid <= 0)
		cli_fail(CLI_EXIT_FAILURE,
			 "restart %s: not a supervised mount (made without clip mount --supervise)",
			 path);
	return pid > 0 ? (pid_t)pid : 0;
}

int cmd_restart(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "binary", required_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *binary = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'b': binary = optarg; break;
		case 'h': help(); return 0;
		default: return cli_usage_error("restart", "invalid option");
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("restart", "expected MOUNTPOINT");
	const char *path = argv[optind];
	char *absolute = NULL;
	if (binary && (absolute = realpath(binary, NULL)) == NULL)
		return cli_fail(CLI_EXIT_FAILURE, "--binary %s: %s", binary, strerror(errno));
	struct clip_err err = { 0 };
	int rc = 0;
	char *mnt = realpath(path, NULL);
	if (mnt == NULL) {
		rc = cli_fail(CLI_EXIT_FAILURE, "restart %s: %s", path, strerror(errno));
	} else if (clip_fuse_find_mount(mnt, NULL, &err) < 0) {
		rc = cli_fail(CLI_EXIT_FAILURE, "restart %s", err.msg);
	} else {
		pid_t supervisor = supervisor_pid(mnt);
		pid_t server = 0;
		if (supervisor == 0)
			rc = CLI_EXIT_FAILURE;
		else if (clip_supervisor_restart(supervisor, absolute, &server, &err) < 0)
			rc = cli_fail(CLI_EXIT_FAILURE, "restart %s: %s", path, err.msg);
		else
			printf("%s: served by process %ld\n", path, (long)server);
	}
	free(mnt);
	free(absolute);
	return rc;
}
