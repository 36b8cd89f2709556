/* clip: registry credentials (docker/podman config files, credential
 * helpers) and the parsers for what an authenticating registry sends
 * (WWW-Authenticate challenges, token responses).
 *
 * Everything read here may hold a secret, so no error message quotes the
 * input: JSON errors give a line and column but not jansson's text (which
 * quotes the token it stopped at), base64 errors name the registry, and a
 * helper's answer is only quoted when it failed (its answer then is an
 * error message, not credentials). Buffers that held secrets are wiped
 * before they are freed.
 */
#include "clip/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

extern char **environ;

#define HELPER_PREFIX	   "docker-credential-"
#define HELPER_TIMEOUT_MS  10000
#define HELPER_NAME_MAX	   128
#define CHALLENGE_MAX	   8192
#define TOKEN_DEFAULT_LIFE 60
#define DOCKER_HUB	   "docker.io"
#define DOCKER_HUB_KEY	   "https://index.docker.io/v1/"

/* ---- secrets ---------------------------------------------------------- */

static void free_secret(char *s)
{
	if (s != NULL) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

/* A buffer that may hold a secret: wiped and freed when it leaves scope. */
struct secret_buf {
	char *data;
	size_t len;
};

static void secret_buf_free(struct secret_buf *b)
{
	if (b->data != NULL) {
		explicit_bzero(b->data, b->len);
		free(b->data);
	}
	b->data = NULL;
	b->len = 0;
}

#define cleanup_secret __attribute__((cleanup(secret_buf_free)))

void clip_credentials_clear(struct clip_credentials *c)
{
	if (c == NULL)
		return;
	free_secret(c->username);
	free_secret(c->password);
	free_secret(c->identity_token);
	memset(c, 0, sizeof(*c));
}

/* ---- JSON ------------------------------------------------------------- */

/* Parse a JSON object; errors give the position only (see the top). */
static int load_object(const char *json, size_t len, const char *what, json_t **out,
		       struct clip_err *err)
{
	json_error_t jerr;
	json_t *root = json_loadb(json, len, 0, &jerr);
	if (root == NULL)
		return clip_err_set(err, EBADMSG, "%s: invalid JSON at line %d column %d", what,
				    jerr.line, jerr.column);
	if (!json_is_object(root)) {
		json_decref(root);
		return clip_err_set(err, EBADMSG, "%s: expected a JSON object", what);
	}
	*out = root;
	return 0;
}

/* ---- registry keys ---------------------------------------------------- */

/* The registry host a config key names: without "http(s)://" and any path,
 * with Docker Hub's aliases folded into "docker.io". Written into buf. */
static void key_to_registry(const char *key, char *buf, size_t cap)
{
	if (strncmp(key, "https://", 8) == 0)
		key += 8;
	else if (strncmp(key, "http://", 7) == 0)
		key += 7;
	size_t n = strcspn(key, "/");
	if (n >= cap)
		n = cap - 1;
	memcpy(buf, key, n);
	buf[n] = '\0';
	if (strcmp(buf, "index.docker.io") == 0 || strcmp(buf, "registry-1.docker.io") == 0)
		snprintf(buf, cap, "%s", DOCKER_HUB);
}

/* The member of `obj` whose key names `registry`: an exact key first (and
 * docker's own key for Docker Hub), then any key that normalizes to it. */
static json_t *find_registry_member(json_t *obj, const char *registry)
{
	if (!json_is_object(obj))
		return NULL;
	json_t *v = json_object_get(obj, registry);
	if (v != NULL)
		return v;
	char want[256];
	key_to_registry(registry, want, sizeof(want));
	if (strcmp(want, DOCKER_HUB) == 0 && (v = json_object_get(obj, DOCKER_HUB_KEY)) != NULL)
		return v;
	const char *key;
	json_object_foreach (obj, key, v) {
		char have[256];
		key_to_registry(key, have, sizeof(have));
		if (strcmp(have, want) == 0)
			return v;
	}
	return NULL;
}

/* ---- base64 ----------------------------------------------------------- */

static bool is_base64_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/';
}

/* Decode standard padded base64 (what docker writes) into a new
 * NUL-terminated buffer; -EINVAL when malformed. EVP_DecodeBlock is lenient
 * about whitespace and counts the padding as output, so the input is
 * checked strictly here first and the padding subtracted after. */
static int base64_decode(const char *in, size_t len, struct secret_buf *out)
{
	if (len % 4 != 0)
		return -EINVAL;
	size_t pad = 0;
	if (len > 0 && in[len - 1] == '=')
		pad++;
	if (len > 1 && in[len - 2] == '=')
		pad++;
	for (size_t i = 0; i < len - pad; i++) {
		if (!is_base64_char(in[i]))
			return -EINVAL;
	}
	if (len > INT32_MAX)
		return -EINVAL;
	size_t cap = len / 4 * 3 + 1;
	unsigned char *buf = malloc(cap);
	if (buf == NULL)
		return -ENOMEM;
	int n = len == 0 ? 0 : EVP_DecodeBlock(buf, (const unsigned char *)in, (int)len);
	if (n < 0 || (size_t)n < pad) {
		explicit_bzero(buf, cap);
		free(buf);
		return -EINVAL;
	}
	size_t outlen = (size_t)n - pad;
	buf[outlen] = '\0';
	out->data = (char *)buf;
	out->len = cap;
	/* len is the allocation, for wiping; the string ends at outlen. */
	return (int)outlen;
}

/* ---- credential helpers ----------------------------------------------- */

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The first line of a failed helper's answer, printable ASCII only, for an
 * error message. */
static void first_line(const char *s, size_t len, char *buf, size_t cap)
{
	size_t j = 0;
	for (size_t i = 0; i < len && j + 1 < cap && s[i] != '\n'; i++)
		buf[j++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	buf[j] = '\0';
}

/* Reap `pid`, waiting until `deadline` (monotonic ms); then kill it. */
static int reap(pid_t pid, long long deadline, int *status)
{
	for (;;) {
		pid_t r = waitpid(pid, status, WNOHANG);
		if (r == pid)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
		if (now_ms() >= deadline) {
			kill(pid, SIGKILL);
			while (waitpid(pid, status, 0) < 0 && errno == EINTR)
				;
			return -ETIMEDOUT;
		}
		struct timespec ts = { 0, 5 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

/* Start `prog get` with `server` on its stdin, its stdout a pipe whose read
 * end is *out, and its stderr /dev/null. */
static int spawn_helper(const char *prog, const char *server, pid_t *pid, int *out,
			struct clip_err *err)
{
	int in[2], answer[2];
	if (pipe2(in, O_CLOEXEC) < 0)
		return clip_err_errno(err, errno, "%s: pipe", prog);
	cleanup_close int in_read = in[0];
	cleanup_close int in_write = in[1];
	if (pipe2(answer, O_CLOEXEC) < 0)
		return clip_err_errno(err, errno, "%s: pipe", prog);
	cleanup_close int answer_read = answer[0];
	cleanup_close int answer_write = answer[1];
	/* The server name fits in the pipe buffer, and while we hold the read
	 * end nothing can raise SIGPIPE: write it all before the helper runs. */
	size_t slen = strlen(server);
	ssize_t w = write(in_write, server, slen);
	close(clip_steal_fd(in_write));
	if (w != (ssize_t)slen)
		return clip_err_set(err, EIO, "%s: cannot write its input", prog);

	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in_read, STDIN_FILENO);
	posix_spawn_file_actions_adddup2(&fa, answer_write, STDOUT_FILENO);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
	char *argv[] = { (char *)prog, (char *)"get", NULL };
	int r = posix_spawnp(pid, prog, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r == ENOENT)
		return clip_err_set(err, ENOENT, "credential helper %s: not found in PATH", prog);
	if (r != 0)
		return clip_err_errno(err, r, "credential helper %s: cannot run it", prog);
	/* Our copies of the helper's ends close on return, so that its exit
	 * ends the answer. */
	*out = clip_steal_fd(answer_read);
	return 0;
}

/* Read the helper's answer from `fd` until it closes its end, by `deadline`
 * (monotonic ms), into a new buffer *buf of CLIP_AUTH_MAX_HELPER + 1 bytes,
 * *got of them used (the caller frees *buf whether or not this fails). */
static int read_answer(const char *prog, int fd, long long deadline, struct secret_buf *buf,
		       size_t *got, struct clip_err *err)
{
	buf->data = malloc(CLIP_AUTH_MAX_HELPER + 1);
	buf->len = CLIP_AUTH_MAX_HELPER + 1;
	if (buf->data == NULL)
		return clip_err_nomem(err);
	for (;;) {
		long long left = deadline - now_ms();
		if (left <= 0)
			return clip_err_set(err, ETIMEDOUT,
					    "credential helper %s: no answer within %d s", prog,
					    HELPER_TIMEOUT_MS / 1000);
		struct pollfd pfd = { fd, POLLIN, 0 };
		int pr = poll(&pfd, 1, (int)left);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0)
			return clip_err_errno(err, errno, "credential helper %s: poll", prog);
		if (pr == 0)
			continue;
		ssize_t n = read(fd, buf->data + *got, CLIP_AUTH_MAX_HELPER + 1 - *got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return clip_err_errno(err, errno, "credential helper %s: read", prog);
		if (n == 0)
			return 0;
		*got += (size_t)n;
		if (*got > CLIP_AUTH_MAX_HELPER)
			return clip_err_set(err, EFBIG,
					    "credential helper %s: answer longer than %u bytes",
					    prog, CLIP_AUTH_MAX_HELPER);
	}
}

/* What a helper that exited with `status` after answering `buf` (`got`
 * bytes, NUL-terminated) means: exit status 0 hands the answer over to
 * *answer and returns 0; "credentials not found" returns 1; anything else
 * is an error quoting the answer's first line (then an error message, not
 * credentials). */
static int helper_outcome(const char *prog, int status, struct secret_buf *buf, size_t got,
			  struct secret_buf *answer, struct clip_err *err)
{
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		*answer = *buf;
		answer->len = got;
		*buf = (struct secret_buf){ NULL, 0 };
		return 0;
	}
	/* docker-credential-helpers answer "credentials not found in native
	 * keychain" (exit 1) for an unknown server: anonymous access, not an
	 * error. */
	if (strstr(buf->data, "credentials not found") != NULL)
		return 1;
	char line[201];
	first_line(buf->data, got, line, sizeof(line));
	if (WIFSIGNALED(status))
		return clip_err_set(err, EIO, "credential helper %s: killed by signal %d", prog,
				    WTERMSIG(status));
	return clip_err_set(err, EIO, "credential helper %s: exited with status %d%s%s", prog,
			    WEXITSTATUS(status), line[0] != '\0' ? ": " : "", line);
}

/* Run `docker-credential-<name> get` with `server` on stdin. On exit status 0
 * the answer is in *answer (a secret); 1 is returned for "credentials not
 * found"; negative errno with a message otherwise. */
static int run_helper(const char *name, const char *server, struct secret_buf *answer,
		      struct clip_err *err)
{
	if (name[0] == '\0' || strlen(name) > HELPER_NAME_MAX || strchr(name, '/') != NULL)
		return clip_err_set(err, EINVAL, "invalid credential helper name \"%.*s\"",
				    HELPER_NAME_MAX, name);
	char prog[sizeof(HELPER_PREFIX) + HELPER_NAME_MAX];
	snprintf(prog, sizeof(prog), HELPER_PREFIX "%s", name);
	pid_t pid = 0;
	int fd = -1;
	int rc = spawn_helper(prog, server, &pid, &fd, err);
	if (rc < 0)
		return rc;

	long long deadline = now_ms() + HELPER_TIMEOUT_MS;
	cleanup_secret struct secret_buf buf = { NULL, 0 };
	size_t got = 0;
	rc = read_answer(prog, fd, deadline, &buf, &got, err);
	close(fd);
	int status = 0;
	/* After a failure there is no point waiting for it. */
	int wr = reap(pid, rc == 0 ? deadline : 0, &status);
	if (rc == 0 && wr == -ETIMEDOUT)
		rc = clip_err_set(err, ETIMEDOUT, "credential helper %s: did not exit within %d s",
				  prog, HELPER_TIMEOUT_MS / 1000);
	else if (rc == 0 && wr < 0)
		rc = clip_err_errno(err, wr, "credential helper %s: waitpid", prog);
	if (rc < 0)
		return rc;
	buf.data[got] = '\0';
	return helper_outcome(prog, status, &buf, got, answer, err);
}

static char *dup_string_member(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);
	return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

/* Ask helper `name` for `registry`'s credentials. */
static int lookup_helper(const char *name, const char *registry, struct clip_credentials *out,
			 struct clip_err *err)
{
	/* Docker keys Docker Hub by its v1 index URL, helpers included. */
	char host[256];
	key_to_registry(registry, host, sizeof(host));
	const char *server = strcmp(host, DOCKER_HUB) == 0 ? DOCKER_HUB_KEY : registry;
	cleanup_secret struct secret_buf answer = { NULL, 0 };
	int r = run_helper(name, server, &answer, err);
	if (r < 0)
		return r;
	if (r == 1)
		return 0;

	char what[sizeof(HELPER_PREFIX) + HELPER_NAME_MAX + 16];
	snprintf(what, sizeof(what), "credential helper " HELPER_PREFIX "%s", name);
	json_t *root;
	r = load_object(answer.data, answer.len, what, &root, err);
	if (r < 0)
		return r;
	json_t *user = json_object_get(root, "Username");
	json_t *secret = json_object_get(root, "Secret");
	if (!json_is_string(secret) || json_string_length(secret) == 0 ||
	    (user != NULL && !json_is_string(user))) {
		json_decref(root);
		return clip_err_set(err, EBADMSG,
				    "%s: answer has no \"Secret\" string (or a non-string "
				    "\"Username\")",
				    what);
	}
	struct clip_credentials c = { 0 };
	const char *u = user != NULL ? json_string_value(user) : "";
	if (strcmp(u, "<token>") == 0) {
		c.identity_token = dup_string_member(root, "Secret");
	} else {
		c.username = strdup(u);
		c.password = dup_string_member(root, "Secret");
	}
	json_decref(root);
	if (c.identity_token == NULL && (c.username == NULL || c.password == NULL)) {
		clip_credentials_clear(&c);
		return clip_err_nomem(err);
	}
	*out = c;
	return 1;
}

/* An "auths" entry: {"auth": base64("user:password"), "identitytoken": ...}. */
static int lookup_auths_entry(json_t *entry, const char *what, const char *registry,
			      struct clip_credentials *out, struct clip_err *err)
{
	if (!json_is_object(entry))
		return clip_err_set(err, EBADMSG, "%s: auths entry for %s is not an object", what,
				    registry);
	json_t *auth = json_object_get(entry, "auth");
	json_t *idt = json_object_get(entry, "identitytoken");
	if ((auth != NULL && !json_is_string(auth)) || (idt != NULL && !json_is_string(idt)))
		return clip_err_set(err, EBADMSG,
				    "%s: auths entry for %s: \"auth\" and \"identitytoken\" must "
				    "be strings",
				    what, registry);
	struct clip_credentials c = { 0 };
	if (auth != NULL && json_string_length(auth) > 0) {
		cleanup_secret struct secret_buf plain = { NULL, 0 };
		int n = base64_decode(json_string_value(auth), json_string_length(auth), &plain);
		if (n == -ENOMEM)
			return clip_err_nomem(err);
		if (n < 0)
			return clip_err_set(err, EINVAL,
					    "%s: auths entry for %s: \"auth\" is not valid base64",
					    what, registry);
		char *colon = memchr(plain.data, ':', (size_t)n);
		if (colon == NULL || memchr(plain.data, '\0', (size_t)n) != NULL)
			return clip_err_set(err, EINVAL,
					    "%s: auths entry for %s: \"auth\" does not decode to "
					    "\"username:password\"",
					    what, registry);
		c.username = clip_strdup_len(plain.data, (size_t)(colon - plain.data));
		c.password = strdup(colon + 1);
		if (c.username == NULL || c.password == NULL) {
			clip_credentials_clear(&c);
			return clip_err_nomem(err);
		}
	}
	if (idt != NULL && json_string_length(idt) > 0) {
		c.identity_token = strdup(json_string_value(idt));
		if (c.identity_token == NULL) {
			clip_credentials_clear(&c);
			return clip_err_nomem(err);
		}
	}
	if (c.username == NULL && c.identity_token == NULL)
		return 0;
	*out = c;
	return 1;
}

int clip_auth_lookup_in_config(const char *json, size_t len, const char *what, const char *registry,
			       struct clip_credentials *out, struct clip_err *err)
{
	if (len > CLIP_AUTH_MAX_FILE)
		return clip_err_set(err, EFBIG, "%s: %zu bytes is more than the limit of %u", what,
				    len, CLIP_AUTH_MAX_FILE);
	json_t *root;
	int r = load_object(json, len, what, &root, err);
	if (r < 0)
		return r;

	json_t *helpers = json_object_get(root, "credHelpers");
	json_t *store = json_object_get(root, "credsStore");
	json_t *auths = json_object_get(root, "auths");
	if ((helpers != NULL && !json_is_object(helpers)) ||
	    (store != NULL && !json_is_string(store)) ||
	    (auths != NULL && !json_is_object(auths))) {
		json_decref(root);
		return clip_err_set(err, EBADMSG,
				    "%s: \"credHelpers\" and \"auths\" must be objects, "
				    "\"credsStore\" a string",
				    what);
	}

	json_t *helper = find_registry_member(helpers, registry);
	if (helper != NULL && !json_is_string(helper)) {
		json_decref(root);
		return clip_err_set(err, EBADMSG, "%s: credHelpers entry for %s is not a string",
				    what, registry);
	}
	if (helper == NULL && store != NULL && json_string_length(store) > 0)
		helper = store;
	if (helper != NULL) {
		r = lookup_helper(json_string_value(helper), registry, out, err);
		if (r < 0)
			clip_err_prefix(err, "%s", what);
	} else {
		json_t *entry = find_registry_member(auths, registry);
		r = entry != NULL ? lookup_auths_entry(entry, what, registry, out, err) : 0;
	}
	json_decref(root);
	return r;
}

/* Read a config file into a new buffer; 0 with *buf NULL when it does not
 * exist. */
static int read_config(const char *path, struct secret_buf *out, struct clip_err *err)
{
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		return clip_err_errno(err, errno, "%s", path);
	}
	struct stat st;
	if (fstat(fd, &st) < 0)
		return clip_err_errno(err, errno, "%s", path);
	if (!S_ISREG(st.st_mode))
		return clip_err_set(err, EINVAL, "%s: not a regular file", path);
	if ((uint64_t)st.st_size > CLIP_AUTH_MAX_FILE)
		return clip_err_set(err, EFBIG, "%s: %llu bytes is more than the limit of %u", path,
				    (unsigned long long)st.st_size, CLIP_AUTH_MAX_FILE);
	cleanup_secret struct secret_buf b = { malloc(CLIP_AUTH_MAX_FILE + 1),
					       CLIP_AUTH_MAX_FILE + 1 };
	if (b.data == NULL)
		return clip_err_nomem(err);
	size_t got = 0;
	for (;;) {
		ssize_t n = read(fd, b.data + got, CLIP_AUTH_MAX_FILE + 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return clip_err_errno(err, errno, "%s", path);
		if (n == 0)
			break;
		got += (size_t)n;
		if (got > CLIP_AUTH_MAX_FILE)
			return clip_err_set(err, EFBIG, "%s: more than %u bytes", path,
					    CLIP_AUTH_MAX_FILE);
	}
	b.data[got] = '\0';
	*out = b;
	out->len = got;
	b = (struct secret_buf){ NULL, 0 };
	return 1;
}

static int lookup_file(const char *path, const char *registry, struct clip_credentials *out,
		       struct clip_err *err)
{
	cleanup_secret struct secret_buf b = { NULL, 0 };
	int r = read_config(path, &b, err);
	if (r <= 0)
		return r;
	return clip_auth_lookup_in_config(b.data, b.len, path, registry, out, err);
}

int clip_auth_lookup(const char *registry, struct clip_credentials *out, struct clip_err *err)
{
	cleanup_free char *xdg = NULL;
	cleanup_free char *docker = NULL;
	const char *paths[3];
	size_t n = 0;

	const char *env = getenv("REGISTRY_AUTH_FILE");
	if (env != NULL && env[0] != '\0')
		paths[n++] = env;
	env = getenv("XDG_RUNTIME_DIR");
	if (env != NULL && env[0] != '\0') {
		if (asprintf(&xdg, "%s/containers/auth.json", env) < 0)
			return clip_err_nomem(err);
		paths[n++] = xdg;
	}
	env = getenv("DOCKER_CONFIG");
	if (env != NULL && env[0] != '\0') {
		if (asprintf(&docker, "%s/config.json", env) < 0)
			return clip_err_nomem(err);
	} else {
		const char *home = getenv("HOME");
		if (home == NULL || home[0] == '\0') {
			struct passwd pw, *res = NULL;
			char pwbuf[4096];
			if (getpwuid_r(getuid(), &pw, pwbuf, sizeof(pwbuf), &res) == 0 &&
			    res != NULL)
				home = res->pw_dir;
		}
		if (home != NULL && home[0] != '\0' &&
		    asprintf(&docker, "%s/.docker/config.json", home) < 0)
			return clip_err_nomem(err);
	}
	if (docker != NULL)
		paths[n++] = docker;

	for (size_t i = 0; i < n; i++) {
		int r = lookup_file(paths[i], registry, out, err);
		if (r != 0)
			return r;
	}
	return 0;
}

/* ---- WWW-Authenticate ------------------------------------------------- */

static bool is_tchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static const char *skip_ows(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

void clip_auth_challenge_clear(struct clip_auth_challenge *c)
{
	if (c == NULL)
		return;
	free(c->scheme);
	free(c->realm);
	free(c->service);
	free(c->scope);
	free(c->error);
	memset(c, 0, sizeof(*c));
}

/* A quoted-string starting at *pp (on the opening quote): its unescaped
 * value as a new string, *pp moved past the closing quote. */
static int parse_quoted(const char **pp, char **out, const char *name, struct clip_err *err)
{
	const char *p = *pp + 1;
	size_t cap = strlen(p) + 1;
	cleanup_free char *v = malloc(cap);
	if (v == NULL)
		return clip_err_nomem(err);
	size_t n = 0;
	for (;;) {
		unsigned char c = (unsigned char)*p;
		if (c == '\0')
			return clip_err_set(err, EBADMSG,
					    "WWW-Authenticate: unterminated quoted value of \"%s\"",
					    name);
		if (c == '"')
			break;
		if (c == '\\') {
			p++;
			c = (unsigned char)*p;
			if (c == '\0')
				continue;
		}
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return clip_err_set(err, EBADMSG,
					    "WWW-Authenticate: control character in the value of "
					    "\"%s\"",
					    name);
		v[n++] = (char)c;
		p++;
	}
	v[n] = '\0';
	*pp = p + 1;
	*out = clip_steal(v);
	return 0;
}

/* The auth-scheme at *pp into a new string *scheme; *pp moves past it. */
static int parse_scheme(const char **pp, char **scheme, struct clip_err *err)
{
	const char *start = *pp;
	const char *p = start;
	while (is_tchar(*p))
		p++;
	if (p == start)
		return clip_err_set(err, EBADMSG, "WWW-Authenticate: no authentication scheme");
	cleanup_free char *s = clip_strdup_len(start, (size_t)(p - start));
	if (s == NULL)
		return clip_err_nomem(err);
	if (*p != '\0' && *p != ' ' && *p != '\t' && *p != ',')
		return clip_err_set(err, EBADMSG,
				    "WWW-Authenticate: invalid character after the scheme \"%s\"",
				    s);
	*scheme = clip_steal(s);
	*pp = p;
	return 0;
}

/* A parameter's value at *pp, a quoted-string or a token, as a new string
 * *out; *pp moves past it. `pname` names the parameter in errors. */
static int parse_value(const char **pp, const char *pname, char **out, struct clip_err *err)
{
	if (**pp == '"')
		return parse_quoted(pp, out, pname, err);
	const char *start = *pp;
	const char *p = start;
	while (is_tchar(*p))
		p++;
	if (p == start)
		return clip_err_set(err, EBADMSG, "WWW-Authenticate: parameter \"%s\" has no value",
				    pname);
	*out = clip_strdup_len(start, (size_t)(p - start));
	if (*out == NULL)
		return clip_err_nomem(err);
	*pp = p;
	return 0;
}

/* Where the challenge keeps parameter `name` (case-insensitive); NULL for
 * a parameter a registry has no use for. */
static char **param_slot(struct clip_auth_challenge *c, const char *name)
{
	if (strcasecmp(name, "realm") == 0)
		return &c->realm;
	if (strcasecmp(name, "service") == 0)
		return &c->service;
	if (strcasecmp(name, "scope") == 0)
		return &c->scope;
	if (strcasecmp(name, "error") == 0)
		return &c->error;
	return NULL;
}

/* The auth-param "name=value" at *pp (`nparams` of them came before it in
 * this challenge) into *c; *pp moves past it and the whitespace after it.
 * Returns 1, or 0 when what follows is not a parameter but the next
 * challenge of a list (only the first challenge is taken), or a negative
 * errno. `header` is the whole value, for offsets in messages. */
static int parse_param(const char **pp, const char *header, size_t nparams,
		       struct clip_auth_challenge *c, struct clip_err *err)
{
	const char *name = *pp;
	const char *p = name;
	while (is_tchar(*p))
		p++;
	size_t name_len = (size_t)(p - name);
	if (name_len == 0)
		return clip_err_set(err, EBADMSG,
				    "WWW-Authenticate: expected a parameter name at offset %zu",
				    (size_t)(p - header));
	const char *after = skip_ows(p);
	if (*after != '=') {
		/* "token SP" where a parameter should be: the next challenge
		 * of a list (or a token68). */
		if (nparams > 0 || *after == '\0' || *after == ',' || p != after)
			return 0;
		return clip_err_set(err, EBADMSG, "WWW-Authenticate: expected '=' after \"%.*s\"",
				    (int)(name_len > 64 ? 64 : name_len), name);
	}
	char pname[64];
	snprintf(pname, sizeof(pname), "%.*s", (int)(name_len > 63 ? 63 : name_len), name);
	p = skip_ows(after + 1);
	cleanup_free char *value = NULL;
	int r = parse_value(&p, pname, &value, err);
	if (r < 0)
		return r;
	char **slot = param_slot(c, pname);
	if (slot != NULL && *slot != NULL)
		return clip_err_set(err, EBADMSG, "WWW-Authenticate: parameter \"%s\" repeated",
				    pname);
	if (slot != NULL)
		*slot = clip_steal(value);
	p = skip_ows(p);
	if (*p != '\0' && *p != ',')
		return clip_err_set(err, EBADMSG,
				    "WWW-Authenticate: unexpected character after parameter "
				    "\"%s\"",
				    pname);
	*pp = p;
	return 1;
}

int clip_auth_parse_challenge(const char *header, struct clip_auth_challenge *out,
			      struct clip_err *err)
{
	if (header == NULL)
		return clip_err_set(err, EBADMSG, "WWW-Authenticate: no header");
	size_t hlen = strlen(header);
	if (hlen > CHALLENGE_MAX)
		return clip_err_set(err, EFBIG,
				    "WWW-Authenticate: %zu bytes is more than the limit of %d",
				    hlen, CHALLENGE_MAX);

	struct clip_auth_challenge c = { 0 };
	const char *p = skip_ows(header);
	int r = parse_scheme(&p, &c.scheme, err);
	size_t nparams = 0;
	while (r >= 0) {
		p += strspn(p, " \t,");
		if (*p == '\0')
			break;
		r = parse_param(&p, header, nparams++, &c, err);
		if (r == 0)
			break;
	}
	if (r >= 0 && strcasecmp(c.scheme, "Bearer") == 0 &&
	    (c.realm == NULL || c.realm[0] == '\0'))
		r = clip_err_set(err, EBADMSG, "WWW-Authenticate: Bearer challenge without realm");
	if (r < 0) {
		clip_auth_challenge_clear(&c);
		return r;
	}
	*out = c;
	return 0;
}

/* ---- token responses -------------------------------------------------- */

int clip_auth_parse_token_response(const char *json, size_t len, char **token, long *expires_in,
				   struct clip_err *err)
{
	if (len > CLIP_AUTH_MAX_HELPER)
		return clip_err_set(err, EFBIG, "token response: %zu bytes is more than %u", len,
				    CLIP_AUTH_MAX_HELPER);
	json_t *root;
	int r = load_object(json, len, "token response", &root, err);
	if (r < 0)
		return r;
	json_t *t = json_object_get(root, "token");
	if (!json_is_string(t) || json_string_length(t) == 0)
		t = json_object_get(root, "access_token");
	if (!json_is_string(t) || json_string_length(t) == 0) {
		json_decref(root);
		return clip_err_set(err, EBADMSG,
				    "token response: neither \"token\" nor \"access_token\" is a "
				    "non-empty string");
	}
	json_t *exp = json_object_get(root, "expires_in");
	long life = TOKEN_DEFAULT_LIFE;
	if (exp != NULL && !json_is_null(exp)) {
		if (!json_is_integer(exp)) {
			json_decref(root);
			return clip_err_set(err, EBADMSG,
					    "token response: \"expires_in\" is not an integer");
		}
		json_int_t v = json_integer_value(exp);
		/* The spec's minimum is 60 s; less (or nonsense) gets the default. */
		if (v >= TOKEN_DEFAULT_LIFE)
			life = v > (json_int_t)(365L * 86400) ? 365L * 86400 : (long)v;
	}
	char *copy = strdup(json_string_value(t));
	json_decref(root);
	if (copy == NULL)
		return clip_err_nomem(err);
	*token = copy;
	*expires_in = life;
	return 0;
}
