/* clip: image references (distribution's reference grammar, docker's
 * normalization).
 *
 * A reference is split from the right, as distribution does: "@digest" first,
 * then ":tag" when the last ':' comes after the last '/' (so that the port in
 * "host:5000/app" is not taken for a tag), then the domain, which is the first
 * path component only when it looks like a host ('.' or ':' in it, or
 * "localhost"). Every part is checked here so that a typo fails before any
 * network traffic, with a message that quotes what the user typed.
 */
#include "clip/ref.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clip/image.h"
#include "util.h"

#define NAME_MAX_BYTES	255
#define TAG_MAX_BYTES	128
#define DOCKER_PREFIX	"docker://"
#define DOCKER_HUB	"docker.io"
#define DOCKER_HUB_API	"registry-1.docker.io"
#define OFFICIAL_PREFIX "library/"

/* ---- errors ----------------------------------------------------------- */

/* -EINVAL "invalid reference \"<text>\": <reason>"; a very long reference is
 * cut so that the reason still fits in the message. */
static int __attribute__((format(printf, 3, 4)))
ref_error(struct clip_err *err, const char *text, const char *fmt, ...)
{
	char reason[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	size_t len = strlen(text);
	return clip_err_set(err, EINVAL, "invalid reference \"%.*s%s\": %s",
			    len > 300 ? 300 : (int)len, text, len > 300 ? "..." : "", reason);
}

/* ---- character classes ------------------------------------------------ */

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_word(char c)
{
	return is_alnum(c) || c == '_';
}

/* ---- parts ------------------------------------------------------------ */

/* tag := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127} */
static int check_tag(const char *text, const char *tag, struct clip_err *err)
{
	size_t len = strlen(tag);
	if (len == 0)
		return ref_error(err, text, "empty tag after ':'");
	if (len > TAG_MAX_BYTES)
		return ref_error(err, text, "tag is %zu bytes long, more than %d", len,
				 TAG_MAX_BYTES);
	if (!is_word(tag[0]))
		return ref_error(err, text, "tag must start with a letter, a digit or '_'");
	for (size_t i = 0; i < len; i++) {
		if (!is_word(tag[i]) && tag[i] != '.' && tag[i] != '-')
			return ref_error(err, text, "invalid character '%c' in tag", tag[i]);
	}
	return 0;
}

static int check_digest(const char *text, const char *digest, struct clip_err *err)
{
	if (digest[0] == '\0')
		return ref_error(err, text, "empty digest after '@'");
	if (clip_digest_valid(digest))
		return 0;
	if (clip_digest_verify("", 0, digest, NULL) == -ENOTSUP)
		return ref_error(err, text, "unsupported digest algorithm (only sha256 is)");
	if (strncmp(digest, "sha256:", 7) == 0)
		return ref_error(err, text,
				 "a sha256 digest is \"sha256:\" and 64 lowercase hex digits, "
				 "this one has %zu characters after \"sha256:\"",
				 strlen(digest + 7));
	return ref_error(err, text, "malformed digest after '@'");
}

/* One label of a domain name: [A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])? */
static bool domain_label_valid(const char *s, size_t len)
{
	if (len == 0 || !is_alnum(s[0]) || !is_alnum(s[len - 1]))
		return false;
	for (size_t i = 0; i < len; i++) {
		if (!is_alnum(s[i]) && s[i] != '-')
			return false;
	}
	return true;
}

/* host[:port] with host a domain name, an IPv4 address (which is also a
 * domain name) or a bracketed IPv6 address. */
static int check_domain(const char *text, const char *domain, struct clip_err *err)
{
	const char *port = NULL;
	size_t hostlen;

	if (domain[0] == '[') {
		const char *close = strchr(domain, ']');
		if (close == NULL)
			return ref_error(err, text, "unterminated '[' in registry \"%s\"", domain);
		char addr[64];
		size_t alen = (size_t)(close - domain - 1);
		struct in6_addr a6;
		if (alen == 0 || alen >= sizeof(addr))
			return ref_error(err, text, "invalid IPv6 address in registry \"%s\"",
					 domain);
		memcpy(addr, domain + 1, alen);
		addr[alen] = '\0';
		if (inet_pton(AF_INET6, addr, &a6) != 1)
			return ref_error(err, text, "invalid IPv6 address in registry \"%s\"",
					 domain);
		if (close[1] == ':')
			port = close + 2;
		else if (close[1] != '\0')
			return ref_error(err, text, "unexpected text after ']' in registry \"%s\"",
					 domain);
	} else {
		const char *colon = strchr(domain, ':');
		hostlen = colon != NULL ? (size_t)(colon - domain) : strlen(domain);
		if (colon != NULL)
			port = colon + 1;
		if (hostlen == 0)
			return ref_error(err, text, "empty registry host");
		const char *label = domain;
		const char *end = domain + hostlen;
		while (label <= end) {
			const char *dot = memchr(label, '.', (size_t)(end - label));
			const char *lend = dot != NULL ? dot : end;
			if (!domain_label_valid(label, (size_t)(lend - label)))
				return ref_error(err, text, "invalid registry host \"%.*s\"",
						 (int)hostlen, domain);
			label = lend + 1;
		}
	}
	if (port != NULL) {
		size_t n = strlen(port);
		if (n == 0)
			return ref_error(err, text, "empty port in registry \"%s\"", domain);
		for (size_t i = 0; i < n; i++) {
			if (!is_digit(port[i]))
				return ref_error(err, text, "invalid port in registry \"%s\"",
						 domain);
		}
		if (n > 5 || atol(port) > 65535)
			return ref_error(err, text, "port out of range in registry \"%s\"", domain);
	}
	return 0;
}

/* path := component ('/' component)*, component := [a-z0-9]+ (sep [a-z0-9]+)*,
 * sep := '.' | '_' | '__' | '-'+ */
static int check_path(const char *text, const char *path, struct clip_err *err)
{
	const char *p = path;
	for (;;) {
		if (*p == '/' || *p == '\0')
			return ref_error(err, text, "empty component in repository name \"%s\"",
					 path);
		for (;;) {
			if (!is_lower_alnum(*p)) {
				if (*p >= 'A' && *p <= 'Z')
					return ref_error(err, text,
							 "repository name must be lowercase");
				if (*p == '.' || *p == '_' || *p == '-')
					return ref_error(
						err, text,
						"repository name component must start with a "
						"lowercase letter or a digit");
				if (*p == '/' || *p == '\0')
					return ref_error(err, text,
							 "repository name component must end "
							 "with a lowercase letter or a digit");
				return ref_error(err, text,
						 "invalid character '%c' in repository name", *p);
			}
			while (is_lower_alnum(*p))
				p++;
			if (*p == '.')
				p++;
			else if (*p == '_')
				p += p[1] == '_' ? 2 : 1;
			else if (*p == '-')
				while (*p == '-')
					p++;
			else
				break;
		}
		if (*p == '\0')
			return 0;
		if (*p != '/') {
			if (*p >= 'A' && *p <= 'Z')
				return ref_error(err, text, "repository name must be lowercase");
			return ref_error(err, text, "invalid character '%c' in repository name",
					 *p);
		}
		p++;
	}
}

static bool is_docker_hub(const char *domain)
{
	return strcmp(domain, DOCKER_HUB) == 0 || strcmp(domain, "index.docker.io") == 0 ||
	       strcmp(domain, DOCKER_HUB_API) == 0;
}

/* docker refuses a bare 64-hex name: it would read as an image ID. */
static bool is_hex64(const char *s)
{
	size_t i;
	for (i = 0; s[i] != '\0'; i++) {
		if (!is_digit(s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
			return false;
	}
	return i == 64;
}

/* ---- public ----------------------------------------------------------- */

int clip_ref_parse(const char *text, struct clip_ref *out, struct clip_err *err)
{
	if (text == NULL)
		return clip_err_set(err, EINVAL, "invalid reference: none given");
	const char *s = text;
	if (strncmp(s, DOCKER_PREFIX, strlen(DOCKER_PREFIX)) == 0)
		s += strlen(DOCKER_PREFIX);
	if (*s == '\0')
		return ref_error(err, text, "empty reference");
	if (strstr(s, "://") != NULL)
		return ref_error(err, text, "only the \"docker://\" transport is accepted");
	/* skopeo's other transports would otherwise read as "host:port". */
	static const char *const transports[] = {
		"oci:",		  "oci-archive:",	 "docker-archive:",
		"docker-daemon:", "containers-storage:", "dir:"
	};
	for (size_t i = 0; i < CLIP_ARRAY_SIZE(transports); i++) {
		if (strncmp(s, transports[i], strlen(transports[i])) == 0)
			return ref_error(err, text,
					 "transport \"%s\" is not a registry reference (only "
					 "\"docker://\" is)",
					 transports[i]);
	}

	cleanup_free char *work = strdup(s);
	if (work == NULL)
		return clip_err_nomem(err);

	char *digest = NULL;
	char *at = strchr(work, '@');
	if (at != NULL) {
		*at = '\0';
		digest = at + 1;
		int r = check_digest(text, digest, err);
		if (r < 0)
			return r;
	}

	char *tag = NULL;
	char *colon = strrchr(work, ':');
	char *slash = strrchr(work, '/');
	if (colon != NULL && (slash == NULL || colon > slash)) {
		*colon = '\0';
		tag = colon + 1;
		int r = check_tag(text, tag, err);
		if (r < 0)
			return r;
	}

	char *name = work;
	if (name[0] == '\0')
		return ref_error(err, text, "empty repository name");

	const char *domain = DOCKER_HUB;
	const char *path = name;
	bool explicit_domain = false;
	char *first_slash = strchr(name, '/');
	if (first_slash != NULL) {
		*first_slash = '\0';
		if (strchr(name, '.') != NULL || strchr(name, ':') != NULL ||
		    strcmp(name, "localhost") == 0) {
			domain = name;
			path = first_slash + 1;
			explicit_domain = true;
		} else {
			*first_slash = '/';
		}
	}
	if (explicit_domain) {
		int r = check_domain(text, domain, err);
		if (r < 0)
			return r;
	}
	if (!explicit_domain && tag == NULL && digest == NULL && is_hex64(path))
		return ref_error(err, text,
				 "a 64-digit hexadecimal name reads as an image ID, not a "
				 "repository");
	int r = check_path(text, path, err);
	if (r < 0)
		return r;

	bool hub = is_docker_hub(domain);
	if (hub)
		domain = DOCKER_HUB;
	bool official = hub && strchr(path, '/') == NULL;
	size_t repo_len = (official ? strlen(OFFICIAL_PREFIX) : 0) + strlen(path);
	if (strlen(domain) + 1 + repo_len > NAME_MAX_BYTES)
		return ref_error(err, text, "name \"%s/%s%s\" is longer than %d bytes", domain,
				 official ? OFFICIAL_PREFIX : "", path, NAME_MAX_BYTES);

	struct clip_ref ref = { 0 };
	ref.domain = strdup(domain);
	ref.api_host = strdup(hub ? DOCKER_HUB_API : domain);
	if (asprintf(&ref.repository, "%s%s", official ? OFFICIAL_PREFIX : "", path) < 0)
		ref.repository = NULL;
	if (tag != NULL)
		ref.tag = strdup(tag);
	else if (digest == NULL)
		ref.tag = strdup("latest");
	if (digest != NULL)
		ref.digest = strdup(digest);
	if (ref.domain == NULL || ref.api_host == NULL || ref.repository == NULL ||
	    (ref.tag == NULL && (tag != NULL || digest == NULL)) ||
	    (digest != NULL && ref.digest == NULL)) {
		clip_ref_clear(&ref);
		return clip_err_nomem(err);
	}
	*out = ref;
	return 0;
}

char *clip_ref_format(const struct clip_ref *ref)
{
	char *s;
	if (asprintf(&s, "%s/%s%s%s%s%s", ref->domain, ref->repository, ref->tag ? ":" : "",
		     ref->tag ? ref->tag : "", ref->digest ? "@" : "",
		     ref->digest ? ref->digest : "") < 0)
		return NULL;
	return s;
}

const char *clip_ref_manifest_reference(const struct clip_ref *ref)
{
	return ref->digest != NULL ? ref->digest : ref->tag;
}

bool clip_ref_host_is_loopback(const char *host)
{
	if (host == NULL || host[0] == '\0')
		return false;
	char addr[256];
	if (host[0] == '[') {
		/* "[v6]" or "[v6]:port" */
		const char *close = strchr(host, ']');
		if (close == NULL || (close[1] != '\0' && close[1] != ':'))
			return false;
		size_t n = (size_t)(close - host - 1);
		if (n >= sizeof(addr))
			return false;
		memcpy(addr, host + 1, n);
		addr[n] = '\0';
	} else {
		/* A bare IPv6 address has several ':'; host:port has one. */
		const char *colon = strchr(host, ':');
		size_t n = strlen(host);
		if (colon != NULL && strchr(colon + 1, ':') == NULL)
			n = (size_t)(colon - host);
		if (n >= sizeof(addr))
			return false;
		memcpy(addr, host, n);
		addr[n] = '\0';
	}
	if (strcasecmp(addr, "localhost") == 0)
		return true;
	struct in_addr a4;
	if (inet_pton(AF_INET, addr, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	struct in6_addr a6;
	if (inet_pton(AF_INET6, addr, &a6) == 1) {
		if (IN6_IS_ADDR_LOOPBACK(&a6))
			return true;
		/* ::ffff:127.x.y.z, as Go's IsLoopback (and so docker) counts it. */
		return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
	}
	return false;
}

void clip_ref_clear(struct clip_ref *ref)
{
	if (ref == NULL)
		return;
	free(ref->domain);
	free(ref->api_host);
	free(ref->repository);
	free(ref->tag);
	free(ref->digest);
	memset(ref, 0, sizeof(*ref));
}
