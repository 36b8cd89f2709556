/* libcurl, loaded on first use: see curl_lazy.h for why. */
#define CLIP_CURL_LAZY_IMPL
#include "curl_lazy.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

struct clip_curl_api clip_curl;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[512];

/* Each entry: the symbol's name and where its address goes. */
static const struct {
	const char *name;
	void **slot;
} entries[] = {
	{ "curl_easy_cleanup", (void **)&clip_curl.easy_cleanup },
	{ "curl_easy_escape", (void **)&clip_curl.easy_escape },
	{ "curl_easy_getinfo", (void **)&clip_curl.easy_getinfo },
	{ "curl_easy_init", (void **)&clip_curl.easy_init },
	{ "curl_easy_pause", (void **)&clip_curl.easy_pause },
	{ "curl_easy_reset", (void **)&clip_curl.easy_reset },
	{ "curl_easy_setopt", (void **)&clip_curl.easy_setopt },
	{ "curl_easy_strerror", (void **)&clip_curl.easy_strerror },
	{ "curl_free", (void **)&clip_curl.free },
	{ "curl_getdate", (void **)&clip_curl.getdate },
	{ "curl_global_init", (void **)&clip_curl.global_init },
	{ "curl_multi_add_handle", (void **)&clip_curl.multi_add_handle },
	{ "curl_multi_cleanup", (void **)&clip_curl.multi_cleanup },
	{ "curl_multi_info_read", (void **)&clip_curl.multi_info_read },
	{ "curl_multi_init", (void **)&clip_curl.multi_init },
	{ "curl_multi_perform", (void **)&clip_curl.multi_perform },
	{ "curl_multi_poll", (void **)&clip_curl.multi_poll },
	{ "curl_multi_remove_handle", (void **)&clip_curl.multi_remove_handle },
	{ "curl_multi_strerror", (void **)&clip_curl.multi_strerror },
	{ "curl_share_cleanup", (void **)&clip_curl.share_cleanup },
	{ "curl_share_init", (void **)&clip_curl.share_init },
	{ "curl_share_setopt", (void **)&clip_curl.share_setopt },
	{ "curl_slist_append", (void **)&clip_curl.slist_append },
	{ "curl_slist_free_all", (void **)&clip_curl.slist_free_all },
	{ "curl_url", (void **)&clip_curl.url },
	{ "curl_url_cleanup", (void **)&clip_curl.url_cleanup },
	{ "curl_url_get", (void **)&clip_curl.url_get },
	{ "curl_url_set", (void **)&clip_curl.url_set },
};

static void load(void)
{
	/* RTLD_LOCAL: libcurl's own dependencies stay out of the global
	 * namespace; libclip resolves only what it asks for. */
	void *lib = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL) {
		snprintf(load_error, sizeof(load_error), "cannot load libcurl.so.4: %s", dlerror());
		return;
	}
	for (size_t i = 0; i < sizeof(entries) / sizeof(entries[0]); i++) {
		void *sym = dlsym(lib, entries[i].name);
		if (sym == NULL) {
			snprintf(load_error, sizeof(load_error),
				 "libcurl.so.4 has no %s (too old a libcurl?)", entries[i].name);
			return;
		}
		*entries[i].slot = sym;
	}
	/* The library stays loaded for the life of the process. */
}

int clip_curl_load(struct clip_err *err)
{
	pthread_once(&load_once, load);
	if (load_error[0])
		return clip_err_set(err, ELIBACC, "%s", load_error);
	return 0;
}
