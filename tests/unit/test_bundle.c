/* Unit tests for src/lib/bundle.c: the image's User resolved as runc resolves
 * it, the runtime spec made from an image config the way umoci makes it, and
 * the configs a bundle must refuse with a clear error. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "clip/bundle.h"
#include "clip/image.h"
#include "testutil.h"

static const char PASSWD[] = "root:x:0:0:root:/root:/bin/bash\n"
			     "# a comment, and a blank line\n"
			     "\n"
			     "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
			     "app:x:1000:1000:App,,,:/home/app:/bin/sh\n"
			     "broken:x:notanumber:0::/:/bin/sh\n"
			     "nohome:x:1001:1001\n";
static const char GROUP[] = "root:x:0:\n"
			    "daemon:x:1:\n"
			    "audio:x:29:app\n"
			    "video:x:44:other,app\n"
			    "app:x:1000:\n"
			    "staff:x:50:root\n";

struct user_case {
	const char *spec;
	uint32_t uid, gid;
	const char *home;
	uint32_t groups[4];
	size_t ngroups;
};

static void check_user(const struct user_case *c, const char *passwd, const char *group)
{
	struct clip_bundle_user u;
	struct clip_err err = { 0 };
	int r = clip_bundle_user_resolve(c->spec, passwd, group, &u, &err);
	if (r != 0)
		print_error("\"%s\": %s\n", c->spec, err.msg);
	assert_int_equal(r, 0);
	assert_int_equal(u.uid, c->uid);
	assert_int_equal(u.gid, c->gid);
	if (c->home == NULL)
		assert_null(u.home);
	else
		assert_string_equal(u.home, c->home);
	assert_int_equal(u.nadditional, c->ngroups);
	for (size_t i = 0; i < c->ngroups; i++)
		assert_int_equal(u.additional_gids[i], c->groups[i]);
	clip_bundle_user_free(&u);
}

static void test_user_resolve(void **state)
{
	(void)state;
	static const struct user_case cases[] = {
		/* "" is root, with its passwd entry's home and its groups */
		{ "", 0, 0, "/root", { 50 }, 1 },
		{ "root", 0, 0, "/root", { 50 }, 1 },
		/* by name: gid from passwd, groups that list the name */
		{ "app", 1000, 1000, "/home/app", { 29, 44 }, 2 },
		/* a number with an entry is that entry */
		{ "1000", 1000, 1000, "/home/app", { 29, 44 }, 2 },
		/* a number without one: gid 0, no home */
		{ "4242", 4242, 0, NULL, { 0 }, 0 },
		/* an explicit group replaces the gid and drops the groups */
		{ "app:audio", 1000, 29, "/home/app", { 0 }, 0 },
		{ "app:44", 1000, 44, "/home/app", { 0 }, 0 },
		{ "4242:4343", 4242, 4343, NULL, { 0 }, 0 },
		{ "1000:video", 1000, 44, "/home/app", { 0 }, 0 },
		/* an entry without a home field gets / */
		{ "nohome", 1001, 1001, "/", { 0 }, 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_user(&cases[i], PASSWD, GROUP);

	/* An image without /etc/passwd and /etc/group: numbers only. */
	static const struct user_case bare[] = {
		{ "", 0, 0, NULL, { 0 }, 0 },
		{ "1000:1000", 1000, 1000, NULL, { 0 }, 0 },
	};
	for (size_t i = 0; i < sizeof(bare) / sizeof(bare[0]); i++)
		check_user(&bare[i], NULL, NULL);
}

static void expect_user_error(const char *spec, const char *passwd, const char *group, int code,
			      const char *needle)
{
	struct clip_bundle_user u;
	struct clip_err err = { 0 };
	int r = clip_bundle_user_resolve(spec, passwd, group, &u, &err);
	assert_int_equal(r, -code);
	if (strstr(err.msg, needle) == NULL)
		fail_msg("\"%s\": \"%s\" lacks \"%s\"", spec, err.msg, needle);
}

static void test_user_errors(void **state)
{
	(void)state;
	expect_user_error("nobody", PASSWD, GROUP, ENOENT,
			  "no such user in the image's /etc/passwd");
	expect_user_error("app", NULL, NULL, ENOENT, "\"app\"");
	expect_user_error("app:nogroup", PASSWD, GROUP, ENOENT, "no group \"nogroup\"");
	expect_user_error("app:video", PASSWD, NULL, ENOENT, "no group \"video\"");
	expect_user_error("3000000000", PASSWD, GROUP, EINVAL, "out of range");
	/* the malformed entry is skipped, not matched */
	expect_user_error("broken", PASSWD, GROUP, ENOENT, "\"broken\"");
}

/* A rootfs directory with etc/passwd and etc/group, open as O_PATH. */
static int make_rootfs(char **dir_out)
{
	char *dir = tt_tmpdir();
	char path[4096];
	snprintf(path, sizeof(path), "%s/etc", dir);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/etc/passwd", dir);
	tt_write_file(path, PASSWD, strlen(PASSWD));
	snprintf(path, sizeof(path), "%s/etc/group", dir);
	tt_write_file(path, GROUP, strlen(GROUP));
	int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	*dir_out = dir;
	return fd;
}

static json_t *spec_of(const char *config, int rootfs_fd, const struct clip_bundle_options *o)
{
	char *text = NULL;
	struct clip_err err = { 0 };
	int r = clip_bundle_spec(config, rootfs_fd, o, &text, &err);
	if (r != 0)
		print_error("%s\n", err.msg);
	assert_int_equal(r, 0);
	json_t *spec = json_loads(text, 0, NULL);
	assert_non_null(spec);
	free(text);
	return spec;
}

static void assert_strings(json_t *array, const char *const *want, size_t n)
{
	assert_true(json_is_array(array));
	assert_int_equal(json_array_size(array), n);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(json_string_value(json_array_get(array, i)), want[i]);
}

static const char CONFIG[] =
	"{\"Entrypoint\":[\"/usr/bin/python3\",\"-u\"],\"Cmd\":[\"app.py\",\"--serve\"],"
	"\"Env\":[\"PATH=/opt/bin:/usr/bin\",\"LANG=C.UTF-8\"],\"WorkingDir\":\"/srv\","
	"\"User\":\"app\",\"os\":\"linux\",\"architecture\":\"amd64\","
	"\"Labels\":{\"org.example.team\":\"ml\",\"version\":\"3\"},\"StopSignal\":\"SIGINT\","
	"\"ExposedPorts\":{\"8080/tcp\":{}},\"created\":\"2026-01-02T03:04:05Z\","
	"\"author\":\"someone\"}";

static void test_spec_from_config(void **state)
{
	(void)state;
	char *dir;
	int fd = make_rootfs(&dir);
	struct clip_bundle_options o = { 0 };
	json_t *spec = spec_of(CONFIG, fd, &o);
	json_t *process = json_object_get(spec, "process");

	static const char *const args[] = { "/usr/bin/python3", "-u", "app.py", "--serve" };
	assert_strings(json_object_get(process, "args"), args, 4);
	/* the image's PATH stays, HOME comes from the user's passwd entry */
	static const char *const env[] = { "PATH=/opt/bin:/usr/bin", "LANG=C.UTF-8",
					   "HOME=/home/app" };
	assert_strings(json_object_get(process, "env"), env, 3);
	assert_string_equal(json_string_value(json_object_get(process, "cwd")), "/srv");
	assert_false(json_is_true(json_object_get(process, "terminal")));
	json_t *user = json_object_get(process, "user");
	assert_int_equal(json_integer_value(json_object_get(user, "uid")), 1000);
	assert_int_equal(json_integer_value(json_object_get(user, "gid")), 1000);
	assert_int_equal(json_array_size(json_object_get(user, "additionalGids")), 2);
	/* not root: capabilities only in the bounding set */
	json_t *caps = json_object_get(process, "capabilities");
	assert_true(json_array_size(json_object_get(caps, "bounding")) > 0);
	assert_int_equal(json_array_size(json_object_get(caps, "effective")), 0);

	json_t *ann = json_object_get(spec, "annotations");
	assert_string_equal(json_string_value(json_object_get(ann, "org.example.team")), "ml");
	assert_string_equal(json_string_value(json_object_get(ann, "version")), "3");
	assert_string_equal(
		json_string_value(json_object_get(ann, "org.opencontainers.image.stopSignal")),
		"SIGINT");
	assert_string_equal(
		json_string_value(json_object_get(ann, "org.opencontainers.image.exposedPorts")),
		"8080/tcp");
	assert_string_equal(
		json_string_value(json_object_get(ann, "org.opencontainers.image.author")),
		"someone");
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(spec, "root"), "path")),
		"rootfs");
	/* a network namespace, no user namespace */
	json_t *ns = json_object_get(json_object_get(spec, "linux"), "namespaces");
	bool net = false, userns = false;
	size_t i;
	json_t *v;
	json_array_foreach (ns, i, v) {
		const char *t = json_string_value(json_object_get(v, "type"));
		net |= strcmp(t, "network") == 0;
		userns |= strcmp(t, "user") == 0;
	}
	assert_true(net);
	assert_false(userns);
	json_decref(spec);

	/* ARGS replace Cmd (not Entrypoint); --env replaces and adds; --user
	 * overrides; root gets effective capabilities. */
	static const char *const new_args[] = { "other.py", NULL };
	static const char *const set_env[] = { "LANG=en_US.UTF-8", "EXTRA=1", NULL };
	o.args = new_args;
	o.env = set_env;
	o.user = "root";
	spec = spec_of(CONFIG, fd, &o);
	process = json_object_get(spec, "process");
	static const char *const args2[] = { "/usr/bin/python3", "-u", "other.py" };
	assert_strings(json_object_get(process, "args"), args2, 3);
	static const char *const env2[] = { "PATH=/opt/bin:/usr/bin", "LANG=en_US.UTF-8", "EXTRA=1",
					    "HOME=/root" };
	assert_strings(json_object_get(process, "env"), env2, 4);
	caps = json_object_get(process, "capabilities");
	assert_true(json_array_size(json_object_get(caps, "effective")) > 0);
	json_decref(spec);

	/* Defaults: no Env gets a PATH; no WorkingDir is "/". */
	const char *plain = "{\"Cmd\":[\"sh\"],\"Env\":null,\"WorkingDir\":\"\",\"User\":\"\"}";
	o = (struct clip_bundle_options){ 0 };
	spec = spec_of(plain, fd, &o);
	process = json_object_get(spec, "process");
	const char *path = json_string_value(json_array_get(json_object_get(process, "env"), 0));
	assert_non_null(strstr(path, "PATH=/usr/local/sbin"));
	assert_string_equal(json_string_value(json_object_get(process, "cwd")), "/");
	json_decref(spec);

	close(fd);
	tt_rm_rf(dir);
	free(dir);
}

static void test_spec_rootless(void **state)
{
	(void)state;
	char *dir;
	int fd = make_rootfs(&dir);
	struct clip_bundle_options o = { .rootless = true, .host_uid = 1234, .host_gid = 5678 };
	o.user = "0";
	json_t *spec = spec_of(CONFIG, fd, &o);
	json_t *lx = json_object_get(spec, "linux");
	json_t *um = json_array_get(json_object_get(lx, "uidMappings"), 0);
	assert_int_equal(json_integer_value(json_object_get(um, "hostID")), 1234);
	json_t *gm = json_array_get(json_object_get(lx, "gidMappings"), 0);
	assert_int_equal(json_integer_value(json_object_get(gm, "hostID")), 5678);
	size_t i;
	json_t *v;
	bool net = false, userns = false;
	json_array_foreach (json_object_get(lx, "namespaces"), i, v) {
		const char *t = json_string_value(json_object_get(v, "type"));
		net |= strcmp(t, "network") == 0;
		userns |= strcmp(t, "user") == 0;
	}
	assert_false(net);
	assert_true(userns);
	json_decref(spec);

	/* The image's user 1000 has no host id to map to. */
	o.user = NULL;
	char *text = NULL;
	struct clip_err err = { 0 };
	assert_int_equal(clip_bundle_spec(CONFIG, fd, &o, &text, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "rootless"));
	close(fd);
	tt_rm_rf(dir);
	free(dir);
}

static void expect_spec_error(const char *config, int fd, const struct clip_bundle_options *o,
			      int code, const char *needle)
{
	char *text = NULL;
	struct clip_err err = { 0 };
	assert_int_equal(clip_bundle_spec(config, fd, o, &text, &err), -code);
	assert_null(text);
	if (strstr(err.msg, needle) == NULL)
		fail_msg("\"%s\" lacks \"%s\"", err.msg, needle);
}

static void test_spec_errors(void **state)
{
	(void)state;
	char *dir;
	int fd = make_rootfs(&dir);
	struct clip_bundle_options o = { 0 };
	expect_spec_error("{\"Cmd\":[\"sh\"],\"User\":\"ghost\"}", fd, &o, ENOENT,
			  "user \"ghost\": no such user");
	expect_spec_error("{\"Cmd\":[\"sh\"],\"WorkingDir\":\"srv\"}", fd, &o, EINVAL,
			  "WorkingDir \"srv\" is not an absolute path");
	expect_spec_error("{\"Cmd\":null,\"Entrypoint\":[]}", fd, &o, EINVAL,
			  "no Entrypoint or Cmd");
	expect_spec_error("{\"Cmd\":[\"sh\",3]}", fd, &o, EBADMSG, "Cmd[1]");
	static const char *const bad_env[] = { "NOVALUE", NULL };
	o.env = bad_env;
	expect_spec_error("{\"Cmd\":[\"sh\"]}", fd, &o, EINVAL, "--env \"NOVALUE\"");
	o.env = NULL;
	/* An empty Cmd is fine once ARGS are given. */
	static const char *const args[] = { "true", NULL };
	o.args = args;
	char *text = NULL;
	struct clip_err err = { 0 };
	assert_int_equal(clip_bundle_spec("{\"Cmd\":null}", fd, &o, &text, &err), 0);
	free(text);
	close(fd);
	tt_rm_rf(dir);
	free(dir);
}

/* The account files are read inside the image's root: an absolute symlink
 * /etc/passwd -> /etc/passwd must not reach the host's. */
static void test_reads_stay_in_root(void **state)
{
	(void)state;
	char *dir = tt_tmpdir();
	char path[4096], target[4096];
	snprintf(path, sizeof(path), "%s/etc", dir);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(target, sizeof(target), "%s/real-passwd", dir);
	tt_write_file(target, "inside:x:77:77::/in:/bin/sh\n", 28);
	snprintf(path, sizeof(path), "%s/etc/passwd", dir);
	assert_int_equal(symlink("/real-passwd", path), 0);
	int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	struct clip_bundle_options o = { .user = "inside" };
	json_t *spec = spec_of("{\"Cmd\":[\"sh\"]}", fd, &o);
	json_t *user = json_object_get(json_object_get(spec, "process"), "user");
	assert_int_equal(json_integer_value(json_object_get(user, "uid")), 77);
	json_decref(spec);
	/* root exists on the host, not in this image */
	o.user = "root";
	expect_spec_error("{\"Cmd\":[\"sh\"]}", fd, &o, ENOENT, "no such user");
	close(fd);
	tt_rm_rf(dir);
	free(dir);
}

static void put_file(const char *dir, const char *rel, mode_t mode)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	tt_write_file(path, "#!/bin/sh\n", 10);
	assert_int_equal(chmod(path, mode), 0);
}

static void expect_program(const char *spec, int fd, const char *want)
{
	int pfd = -1;
	char *path = NULL;
	struct clip_err err = { 0 };
	int r = clip_bundle_program_open(spec, fd, &pfd, &path, &err);
	if (want == NULL) {
		assert_int_equal(r, -ENOENT);
		assert_int_equal(pfd, -1);
		assert_non_null(strstr(err.msg, "not found in the image"));
		return;
	}
	if (r != 0)
		print_error("%s\n", err.msg);
	assert_int_equal(r, 0);
	assert_string_equal(path, want);
	assert_true(pfd >= 0);
	close(pfd);
	free(path);
}

/* The program is found as execve and a shell find it, inside the image's
 * root: through the spec's PATH, skipping what is not executable, or by a
 * path relative to the working directory. */
static void test_program_open(void **state)
{
	(void)state;
	char *dir = tt_tmpdir();
	char path[4096];
	const char *dirs[] = { "usr", "usr/bin", "opt", "opt/bin", "srv" };
	for (size_t i = 0; i < 5; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, dirs[i]);
		assert_int_equal(mkdir(path, 0755), 0);
	}
	put_file(dir, "usr/bin/tool", 0755);
	put_file(dir, "opt/bin/tool", 0644); /* first in PATH, not executable */
	put_file(dir, "srv/run.sh", 0755);
	snprintf(path, sizeof(path), "%s/usr/bin/link", dir);
	assert_int_equal(symlink("/usr/bin/tool", path), 0); /* absolute: inside the root */
	int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	expect_program("{\"process\":{\"args\":[\"tool\"],\"env\":[\"PATH=/opt/bin:/usr/bin\"]}}",
		       fd, "/usr/bin/tool");
	expect_program("{\"process\":{\"args\":[\"link\"],\"env\":[\"PATH=/usr/bin\"]}}", fd,
		       "/usr/bin/link");
	expect_program("{\"process\":{\"args\":[\"/srv/run.sh\"]}}", fd, "/srv/run.sh");
	expect_program("{\"process\":{\"args\":[\"./run.sh\"],\"cwd\":\"/srv\"}}", fd,
		       "/srv/./run.sh");
	/* without PATH in the env, the default one */
	expect_program("{\"process\":{\"args\":[\"tool\"],\"env\":[]}}", fd, "/usr/bin/tool");
	expect_program("{\"process\":{\"args\":[\"missing\"],\"env\":[\"PATH=/usr/bin\"]}}", fd,
		       NULL);
	/* the host's /bin/sh is not the image's */
	expect_program("{\"process\":{\"args\":[\"sh\"],\"env\":[\"PATH=/bin\"]}}", fd, NULL);
	close(fd);
	tt_rm_rf(dir);
	free(dir);
}

/* clip_image_parse_config keeps what a spec's annotations come from. */
static void test_image_runtime_fields(void **state)
{
	(void)state;
	struct clip_image img = { 0 };
	struct clip_err err = { 0 };
	const char *config = "{\"os\":\"linux\",\"architecture\":\"amd64\",\"author\":\"me\","
			     "\"config\":{\"Labels\":{\"a\":\"b\"},\"StopSignal\":\"SIGTERM\"},"
			     "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
	assert_int_equal(clip_image_parse_config(config, strlen(config), &img, &err), 0);
	assert_string_equal(
		img.config.runtime_json,
		"{\"Labels\":{\"a\":\"b\"},\"StopSignal\":\"SIGTERM\",\"author\":\"me\"}");
	clip_image_clear(&img);

	const char *bad = "{\"os\":\"linux\",\"architecture\":\"amd64\","
			  "\"config\":{\"Labels\":{\"a\":1}},"
			  "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
	struct clip_image img2 = { 0 };
	assert_int_equal(clip_image_parse_config(bad, strlen(bad), &img2, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "Labels[\"a\"]"));
	clip_image_clear(&img2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_user_resolve),
		cmocka_unit_test(test_user_errors),
		cmocka_unit_test(test_spec_from_config),
		cmocka_unit_test(test_spec_rootless),
		cmocka_unit_test(test_spec_errors),
		cmocka_unit_test(test_reads_stay_in_root),
		cmocka_unit_test(test_image_runtime_fields),
		cmocka_unit_test(test_program_open),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
