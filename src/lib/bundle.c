/* clip bundle: an OCI runtime spec from an image config (see clip/bundle.h). */
#include "clip/bundle.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util.h"

/* The image's passwd and group files are small; anything larger is not one. */
#define ACCOUNT_FILE_MAX (16u << 20)
#define ID_MAX		 0x7fffffffu

/* What PATH a container gets when its image sets none (Docker's and
 * podman's default). */
#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* ---- /etc/passwd and /etc/group ----------------------------------------- */

/* Whether `s` is a decimal id (no sign, no spaces) and its value. */
static bool parse_id(const char *s, size_t len, uint32_t *out)
{
	if (len == 0 || len > 10)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

/* One line of an account file split at ':' into at most `max` fields
 * (borrowed pointers into `line`, which is modified). */
static size_t split_fields(char *line, char **fields, size_t max)
{
	size_t n = 0;
	char *p = line;
	while (n < max) {
		fields[n++] = p;
		p = strchr(p, ':');
		if (p == NULL)
			break;
		*p++ = '\0';
	}
	return n;
}

/* Call `fn` for each entry line of `text` (comments and blank lines
 * skipped) until it returns non-zero; returns that value or 0. */
static int each_line(const char *text, int (*fn)(char *line, void *opaque), void *opaque)
{
	if (text == NULL)
		return 0;
	const char *p = text;
	while (*p) {
		const char *end = strchrnul(p, '\n');
		size_t len = (size_t)(end - p);
		if (len > 0 && p[0] != '#') {
			char *line = strndup(p, len);
			if (line == NULL)
				return -ENOMEM;
			int r = fn(line, opaque);
			free(line);
			if (r)
				return r;
		}
		p = *end ? end + 1 : end;
	}
	return 0;
}

struct passwd_match {
	const char *name; /* match by name; NULL: by uid */
	bool by_uid;
	uint32_t uid;
	/* found: */
	char *found_name, *home;
	uint32_t found_uid, found_gid;
};

static int passwd_line(char *line, void *opaque)
{
	struct passwd_match *m = opaque;
	char *f[7];
	size_t n = split_fields(line, f, 7);
	uint32_t uid, gid = 0;
	if (n < 3 || !parse_id(f[2], strlen(f[2]), &uid))
		return 0; /* not an entry runc could use either */
	if (n >= 4 && f[3][0] && !parse_id(f[3], strlen(f[3]), &gid))
		return 0;
	bool match = (m->name && strcmp(f[0], m->name) == 0) || (m->by_uid && uid == m->uid);
	if (!match)
		return 0;
	m->found_name = strdup(f[0]);
	m->home = strdup(n >= 6 && f[5][0] ? f[5] : "/");
	if (m->found_name == NULL || m->home == NULL)
		return -ENOMEM;
	m->found_uid = uid;
	m->found_gid = gid;
	return 1;
}

struct group_match {
	const char *group; /* an explicit group: match by name or number */
	bool group_numeric;
	uint32_t group_id;
	const char *member; /* no explicit group: groups listing this user */
	/* found: */
	bool found;
	uint32_t gid;
	uint32_t *gids;
	size_t ngids;
};

static bool lists_member(char *members, const char *name)
{
	for (char *save = NULL, *m = strtok_r(members, ",", &save); m;
	     m = strtok_r(NULL, ",", &save))
		if (strcmp(m, name) == 0)
			return true;
	return false;
}

static int group_line(char *line, void *opaque)
{
	struct group_match *m = opaque;
	char *f[4];
	size_t n = split_fields(line, f, 4);
	uint32_t gid;
	if (n < 3 || !parse_id(f[2], strlen(f[2]), &gid))
		return 0;
	if (m->group) {
		if (strcmp(f[0], m->group) == 0 || (m->group_numeric && gid == m->group_id)) {
			m->found = true;
			m->gid = gid;
			return 1;
		}
		return 0;
	}
	if (n < 4 || !lists_member(f[3], m->member))
		return 0;
	uint32_t *g = realloc(m->gids, (m->ngids + 1) * sizeof(*g));
	if (g == NULL)
		return -ENOMEM;
	m->gids = g;
	m->gids[m->ngids++] = gid;
	return 0;
}

void clip_bundle_user_free(struct clip_bundle_user *u)
{
	if (u == NULL)
		return;
	free(u->additional_gids);
	free(u->home);
	memset(u, 0, sizeof(*u));
}

int clip_bundle_user_resolve(const char *spec, const char *passwd, const char *group,
			     struct clip_bundle_user *out, struct clip_err *err)
{
	memset(out, 0, sizeof(*out));
	const char *colon = strchr(spec, ':');
	size_t ulen = colon ? (size_t)(colon - spec) : strlen(spec);
	cleanup_free char *user = strndup(spec, ulen);
	const char *grp = colon ? colon + 1 : "";
	if (user == NULL)
		return clip_err_nomem(err);

	struct passwd_match pm = { 0 };
	uint32_t uid = 0;
	bool numeric = ulen == 0 || parse_id(user, ulen, &uid);
	if (ulen == 0) {
		pm.by_uid = true; /* "" is root, looked up for its home and groups */
	} else {
		pm.name = user;
		pm.by_uid = numeric;
	}
	pm.uid = uid;
	int r = each_line(passwd, passwd_line, &pm);
	if (r < 0) {
		free(pm.found_name);
		free(pm.home);
		return clip_err_nomem(err);
	}
	cleanup_free char *name = pm.found_name;
	struct clip_bundle_user u = { .uid = uid, .gid = 0, .home = pm.home };
	if (r > 0) {
		u.uid = pm.found_uid;
		u.gid = pm.found_gid;
	} else if (!numeric) {
		return clip_err_set(err, ENOENT,
				    "user \"%.100s\": no such user in the image's "
				    "/etc/passwd",
				    user);
	}

	if (grp[0] || name) {
		struct group_match gm = { .member = name };
		if (grp[0]) {
			gm.group = grp;
			gm.group_numeric = parse_id(grp, strlen(grp), &gm.group_id);
		}
		r = each_line(group, group_line, &gm);
		if (r < 0) {
			free(gm.gids);
			clip_bundle_user_free(&u);
			return clip_err_nomem(err);
		}
		if (grp[0]) {
			if (gm.found) {
				u.gid = gm.gid;
			} else if (gm.group_numeric) {
				u.gid = gm.group_id;
			} else {
				clip_bundle_user_free(&u);
				return clip_err_set(err, ENOENT,
						    "user \"%.100s\": no group \"%.100s\" in the "
						    "image's /etc/group",
						    spec, grp);
			}
		} else {
			u.additional_gids = gm.gids;
			u.nadditional = gm.ngids;
		}
	}
	if (u.uid > ID_MAX || u.gid > ID_MAX) {
		clip_bundle_user_free(&u);
		return clip_err_set(err, EINVAL, "user \"%.100s\": id out of range", spec);
	}
	*out = u;
	return 0;
}

/* ---- reading the image's files --------------------------------------------- */

/* The whole of `path` below the root `rootfs_fd`, every component (symlinks
 * too) resolved inside that root, into *out (NUL-terminated, the caller's);
 * *out NULL when the file does not exist. */
static int read_in_root(int rootfs_fd, const char *path, char **out, struct clip_err *err)
{
	*out = NULL;
	struct open_how how = {
		.flags = O_RDONLY | O_CLOEXEC,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	cleanup_close int fd = (int)syscall(SYS_openat2, rootfs_fd, path, &how, sizeof(how));
	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		return clip_err_errno(err, errno, "the image's /%s", path);
	}
	size_t cap = 4096, len = 0;
	cleanup_free char *buf = malloc(cap);
	if (buf == NULL)
		return clip_err_nomem(err);
	for (;;) {
		if (len + 1 == cap) {
			if (cap >= ACCOUNT_FILE_MAX)
				return clip_err_set(err, EFBIG,
						    "the image's /%s: larger than %u bytes", path,
						    ACCOUNT_FILE_MAX);
			char *b = realloc(buf, cap * 2);
			if (b == NULL)
				return clip_err_nomem(err);
			buf = b;
			cap *= 2;
		}
		ssize_t n = read(fd, buf + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return clip_err_errno(err, errno, "the image's /%s", path);
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	*out = clip_steal(buf);
	return 0;
}

static int open_in_root(int rootfs_fd, const char *path)
{
	while (*path == '/')
		path++; /* below the root, not the host's / */
	struct open_how how = {
		.flags = O_RDONLY | O_CLOEXEC,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	return (int)syscall(SYS_openat2, rootfs_fd, *path ? path : ".", &how, sizeof(how));
}

/* Whether `fd` is a regular file someone may execute. */
static bool executable(int fd)
{
	struct stat st;
	return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111);
}

int clip_bundle_program_open(const char *spec_json, int rootfs_fd, int *fd, char **path,
			     struct clip_err *err)
{
	*fd = -1;
	if (path)
		*path = NULL;
	json_t *spec = json_loads(spec_json, 0, NULL);
	json_t *process = json_object_get(spec, "process");
	const char *prog = json_string_value(json_array_get(json_object_get(process, "args"), 0));
	const char *cwd = json_string_value(json_object_get(process, "cwd"));
	const char *search = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	size_t i;
	json_t *e;
	json_array_foreach (json_object_get(process, "env"), i, e) {
		const char *kv = json_string_value(e);
		if (kv && strncmp(kv, "PATH=", 5) == 0)
			search = kv + 5;
	}
	int r = -ENOENT;
	char *found = NULL;
	if (prog == NULL || prog[0] == '\0') {
		r = clip_err_set(err, EINVAL, "the spec has no program");
	} else if (strchr(prog, '/')) {
		if (prog[0] == '/' || asprintf(&found, "%s/%s", cwd ? cwd : "/", prog) < 0)
			found = prog[0] == '/' ? strdup(prog) : NULL;
		*fd = found ? open_in_root(rootfs_fd, found) : -1;
		r = *fd >= 0 ? 0 : -ENOENT;
	} else {
		for (const char *dir = search; r < 0;) {
			size_t len = strcspn(dir, ":");
			free(found);
			found = NULL;
			if (asprintf(&found, "%.*s/%s", (int)len, len ? dir : ".", prog) < 0)
				break;
			*fd = open_in_root(rootfs_fd, found);
			if (*fd >= 0 && executable(*fd))
				r = 0;
			else if (*fd >= 0)
				close(*fd);
			if (dir[len] == '\0')
				break;
			dir += len + 1;
		}
	}
	if (r == -ENOENT)
		r = clip_err_set(err, ENOENT, "program \"%.100s\": not found in the image", prog);
	if (r == 0 && path)
		*path = found;
	else
		free(found);
	if (r < 0)
		*fd = -1;
	json_decref(spec);
	return r;
}

/* ---- the spec -------------------------------------------------------------- */

static json_t *strings(const char *const *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static json_t *mount_entry(const char *dest, const char *type, const char *source,
			   const char *const *options)
{
	json_t *m =
		json_pack("{s:s, s:s, s:s}", "destination", dest, "type", type, "source", source);
	if (options) {
		size_t n = 0;
		while (options[n])
			n++;
		json_object_set_new(m, "options", strings(options, n));
	}
	return m;
}

/* The mounts every container gets (runc's defaults); a rootless one binds
 * /sys from the host, which a user namespace may not mount afresh, and has
 * no gid=5 for devpts, which it may not map. */
static json_t *default_mounts(bool rootless)
{
	static const char *const dev[] = { "nosuid", "strictatime", "mode=755", "size=65536k",
					   NULL };
	static const char *const pts[] = { "nosuid",	"noexec", "newinstance", "ptmxmode=0666",
					   "mode=0620", "gid=5",  NULL };
	static const char *const shm[] = { "nosuid",	"noexec",      "nodev",
					   "mode=1777", "size=65536k", NULL };
	static const char *const mqueue[] = { "nosuid", "noexec", "nodev", NULL };
	static const char *const sys[] = { "nosuid", "noexec", "nodev", "ro", NULL };
	static const char *const sys_bind[] = { "rbind", "nosuid", "noexec", "nodev", "ro", NULL };
	static const char *const cgroup[] = { "nosuid", "noexec", "nodev", "relatime", "ro", NULL };
	json_t *m = json_array();
	json_array_append_new(m, mount_entry("/proc", "proc", "proc", NULL));
	json_array_append_new(m, mount_entry("/dev", "tmpfs", "tmpfs", dev));
	json_t *p = mount_entry("/dev/pts", "devpts", "devpts", pts);
	if (rootless)
		json_array_remove(json_object_get(p, "options"), 5); /* gid=5 */
	json_array_append_new(m, p);
	json_array_append_new(m, mount_entry("/dev/shm", "tmpfs", "shm", shm));
	json_array_append_new(m, mount_entry("/dev/mqueue", "mqueue", "mqueue", mqueue));
	if (rootless)
		json_array_append_new(m, mount_entry("/sys", "none", "/sys", sys_bind));
	else
		json_array_append_new(m, mount_entry("/sys", "sysfs", "sysfs", sys));
	json_array_append_new(m, mount_entry("/sys/fs/cgroup", "cgroup", "cgroup", cgroup));
	return m;
}

/* podman's default capability set (containers.conf default_capabilities):
 * what a container's root may do. A process that is not root gets them only
 * in its bounding set, as with Docker and podman. */
static const char *const default_caps[] = {
	"CAP_CHOWN",   "CAP_DAC_OVERRIDE",     "CAP_FOWNER",	 "CAP_FSETID",
	"CAP_KILL",    "CAP_NET_BIND_SERVICE", "CAP_SETFCAP",	 "CAP_SETGID",
	"CAP_SETPCAP", "CAP_SETUID",	       "CAP_SYS_CHROOT",
};

static json_t *capabilities(bool root)
{
	size_t n = sizeof(default_caps) / sizeof(default_caps[0]);
	json_t *c = json_object();
	json_object_set_new(c, "bounding", strings(default_caps, n));
	json_object_set_new(c, "effective", strings(default_caps, root ? n : 0));
	json_object_set_new(c, "permitted", strings(default_caps, root ? n : 0));
	return c;
}

static json_t *linux_section(const struct clip_bundle_options *o)
{
	static const char *const masked[] = {
		"/proc/acpi",	       "/proc/asound",	   "/proc/kcore",	"/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
		"/sys/firmware",       "/proc/scsi",
	};
	static const char *const readonly[] = {
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	};
	json_t *l = json_object();
	json_t *ns = json_array();
	const char *types[] = { "pid", "network", "ipc", "uts", "mount", "user" };
	for (size_t i = 0; i < 6; i++) {
		bool user = strcmp(types[i], "user") == 0, net = strcmp(types[i], "network") == 0;
		if ((user && !o->rootless) || (net && o->rootless))
			continue;
		json_array_append_new(ns, json_pack("{s:s}", "type", types[i]));
	}
	if (o->rootless) {
		json_object_set_new(l, "uidMappings",
				    json_pack("[{s:i, s:I, s:i}]", "containerID", 0, "hostID",
					      (json_int_t)o->host_uid, "size", 1));
		json_object_set_new(l, "gidMappings",
				    json_pack("[{s:i, s:I, s:i}]", "containerID", 0, "hostID",
					      (json_int_t)o->host_gid, "size", 1));
	} else {
		/* No device but those runc creates itself. */
		json_object_set_new(
			l, "resources",
			json_pack("{s:[{s:b, s:s}]}", "devices", "allow", 0, "access", "rwm"));
	}
	json_object_set_new(l, "namespaces", ns);
	json_object_set_new(l, "maskedPaths", strings(masked, sizeof(masked) / sizeof(*masked)));
	json_object_set_new(l, "readonlyPaths",
			    strings(readonly, sizeof(readonly) / sizeof(*readonly)));
	return l;
}

/* A string array member of the image config, or an empty one. */
static json_t *config_strings(json_t *config, const char *key)
{
	json_t *v = json_object_get(config, key);
	return json_is_array(v) ? v : NULL;
}

static int append_strings(json_t *to, json_t *from, const char *what, struct clip_err *err)
{
	size_t i;
	json_t *s;
	json_array_foreach (from, i, s) {
		if (!json_is_string(s))
			return clip_err_set(err, EBADMSG, "image config: %s[%zu] is not a string",
					    what, i);
		json_array_append(to, s);
	}
	return 0;
}

/* Set "KEY=VALUE" in the env array `env`: replace the entry for KEY, else
 * append. */
static void env_set(json_t *env, const char *kv)
{
	size_t klen = strcspn(kv, "=");
	size_t i;
	json_t *s;
	json_array_foreach (env, i, s) {
		const char *e = json_string_value(s);
		if (e && strncmp(e, kv, klen) == 0 && (e[klen] == '=' || e[klen] == '\0')) {
			json_array_set_new(env, i, json_string(kv));
			return;
		}
	}
	json_array_append_new(env, json_string(kv));
}

static bool env_has(json_t *env, const char *key)
{
	size_t klen = strlen(key), i;
	json_t *s;
	json_array_foreach (env, i, s) {
		const char *e = json_string_value(s);
		if (e && strncmp(e, key, klen) == 0 && e[klen] == '=')
			return true;
	}
	return false;
}

static int process_args(json_t *config, const struct clip_bundle_options *o, json_t *args,
			struct clip_err *err)
{
	json_t *entrypoint = config_strings(config, "Entrypoint");
	int r = entrypoint ? append_strings(args, entrypoint, "Entrypoint", err) : 0;
	if (r < 0)
		return r;
	if (o->args) {
		for (size_t i = 0; o->args[i]; i++)
			json_array_append_new(args, json_string(o->args[i]));
	} else {
		json_t *cmd = config_strings(config, "Cmd");
		if (cmd && (r = append_strings(args, cmd, "Cmd", err)) < 0)
			return r;
	}
	if (json_array_size(args) == 0)
		return clip_err_set(err, EINVAL,
				    "the image has no Entrypoint or Cmd: give the program to run "
				    "after --");
	return 0;
}

static int process_env(json_t *config, const struct clip_bundle_options *o,
		       const struct clip_bundle_user *user, json_t *env, struct clip_err *err)
{
	json_t *image_env = config_strings(config, "Env");
	int r = image_env ? append_strings(env, image_env, "Env", err) : 0;
	if (r < 0)
		return r;
	for (size_t i = 0; o->env && o->env[i]; i++) {
		const char *kv = o->env[i];
		if (kv[0] == '=' || strchr(kv, '=') == NULL)
			return clip_err_set(err, EINVAL, "--env \"%.100s\": expected KEY=VALUE",
					    kv);
		env_set(env, kv);
	}
	if (!env_has(env, "PATH"))
		json_array_append_new(env, json_string(DEFAULT_PATH));
	if (!env_has(env, "HOME") && user->home) {
		cleanup_free char *home = NULL;
		if (asprintf(&home, "HOME=%s", user->home) < 0)
			return clip_err_nomem(err);
		json_array_append_new(env, json_string(home));
	}
	return 0;
}

static json_t *user_object(const struct clip_bundle_user *u)
{
	json_t *o = json_pack("{s:I, s:I}", "uid", (json_int_t)u->uid, "gid", (json_int_t)u->gid);
	if (u->nadditional) {
		json_t *g = json_array();
		for (size_t i = 0; i < u->nadditional; i++)
			json_array_append_new(g, json_integer(u->additional_gids[i]));
		json_object_set_new(o, "additionalGids", g);
	}
	return o;
}

/* umoci's annotations: the image's labels, then what it says about itself
 * under org.opencontainers.image.* (empty when the image does not say). */
static json_t *annotations(json_t *config)
{
	json_t *a = json_object();
	json_t *labels = json_object_get(config, "Labels");
	const char *k;
	json_t *v;
	json_object_foreach (labels, k, v)
		if (json_is_string(v))
			json_object_set(a, k, v);
	static const struct {
		const char *annotation, *key;
	} fields[] = {
		{ "org.opencontainers.image.os", "os" },
		{ "org.opencontainers.image.architecture", "architecture" },
		{ "org.opencontainers.image.author", "author" },
		{ "org.opencontainers.image.created", "created" },
		{ "org.opencontainers.image.stopSignal", "StopSignal" },
	};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		json_t *s = json_object_get(config, fields[i].key);
		json_object_set_new(a, fields[i].annotation,
				    json_string(json_is_string(s) ? json_string_value(s) : ""));
	}
	/* ExposedPorts is an object keyed by "80/tcp"; umoci joins the keys. */
	cleanup_free char *ports = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&ports, &len);
	if (f) {
		bool first = true;
		json_object_foreach (json_object_get(config, "ExposedPorts"), k, v) {
			fprintf(f, "%s%s", first ? "" : ",", k);
			first = false;
		}
		fclose(f);
	}
	json_object_set_new(a, "org.opencontainers.image.exposedPorts",
			    json_string(ports ? ports : ""));
	return a;
}

int clip_bundle_spec(const char *config_json, int rootfs_fd, const struct clip_bundle_options *o,
		     char **out, struct clip_err *err)
{
	*out = NULL;
	json_error_t jerr;
	json_t *config = json_loads(config_json ? config_json : "{}", 0, &jerr);
	if (config == NULL || !json_is_object(config)) {
		json_decref(config);
		return clip_err_set(err, EBADMSG, "image config: not a JSON object");
	}
	json_t *spec = NULL, *args = json_array(), *env = json_array();
	cleanup_free char *passwd = NULL, *group = NULL;
	struct clip_bundle_user user = { 0 };
	int r;

	/* Which user, then what runs: HOME comes from the user's entry. */
	const char *user_spec = o->user;
	if (user_spec == NULL) {
		json_t *u = json_object_get(config, "User");
		user_spec = json_is_string(u) ? json_string_value(u) : "";
	}
	if ((r = read_in_root(rootfs_fd, "etc/passwd", &passwd, err)) < 0 ||
	    (r = read_in_root(rootfs_fd, "etc/group", &group, err)) < 0 ||
	    (r = clip_bundle_user_resolve(user_spec, passwd, group, &user, err)) < 0)
		goto out;
	if (o->rootless && user.uid != 0) {
		r = clip_err_set(err, EINVAL,
				 "user \"%.100s\" is uid %u: a rootless bundle maps only the "
				 "container's root (give --user 0)",
				 user_spec, user.uid);
		goto out;
	}
	if ((r = process_args(config, o, args, err)) < 0 ||
	    (r = process_env(config, o, &user, env, err)) < 0)
		goto out;
	const char *cwd = "/";
	json_t *wd = json_object_get(config, "WorkingDir");
	if (json_is_string(wd) && json_string_value(wd)[0]) {
		cwd = json_string_value(wd);
		if (cwd[0] != '/') {
			r = clip_err_set(err, EINVAL,
					 "image config: WorkingDir \"%.100s\" is not an absolute "
					 "path",
					 cwd);
			goto out;
		}
	}

	json_t *process = json_object();
	json_object_set_new(process, "terminal", json_false());
	json_object_set_new(process, "user", user_object(&user));
	json_object_set(process, "args", args);
	json_object_set(process, "env", env);
	json_object_set_new(process, "cwd", json_string(cwd));
	json_object_set_new(process, "capabilities", capabilities(user.uid == 0));
	json_object_set_new(process, "rlimits",
			    json_pack("[{s:s, s:i, s:i}]", "type", "RLIMIT_NOFILE", "hard", 1024,
				      "soft", 1024));
	json_object_set_new(process, "noNewPrivileges", json_false());

	spec = json_object();
	json_object_set_new(spec, "ociVersion", json_string("1.0.2"));
	json_object_set_new(spec, "process", process);
	json_object_set_new(spec, "root", json_pack("{s:s, s:b}", "path", "rootfs", "readonly", 0));
	json_object_set_new(spec, "hostname", json_string(o->hostname ? o->hostname : "clip"));
	json_object_set_new(spec, "mounts", default_mounts(o->rootless));
	json_object_set_new(spec, "annotations", annotations(config));
	json_object_set_new(spec, "linux", linux_section(o));
	*out = json_dumps(spec, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	r = *out ? 0 : clip_err_nomem(err);
out:
	clip_bundle_user_free(&user);
	json_decref(spec);
	json_decref(args);
	json_decref(env);
	json_decref(config);
	return r;
}
