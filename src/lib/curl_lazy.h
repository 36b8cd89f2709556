/* libcurl, loaded on first use (private to libclip).
 *
 * libcurl links some thirty shared libraries (TLS, Kerberos, LDAP, SSH,
 * RTMP, IDN...). Linked normally, every clip process pays for loading and
 * relocating them at start-up, about 4 ms here, even `clip cat` of a local
 * layout that never talks HTTP. So libclip takes only libcurl's headers and
 * loads libcurl.so.4 with dlopen the first time a registry is opened; the
 * names below then call through the loaded table, so registry.c reads as
 * plain libcurl code.
 */
#ifndef CLIP_CURL_LAZY_H
#define CLIP_CURL_LAZY_H

#include <curl/curl.h>

#include "clip/err.h"

struct clip_curl_api {
	__typeof__(curl_easy_cleanup) *easy_cleanup;
	__typeof__(curl_easy_escape) *easy_escape;
	__typeof__(curl_easy_getinfo) *easy_getinfo;
	__typeof__(curl_easy_init) *easy_init;
	__typeof__(curl_easy_pause) *easy_pause;
	__typeof__(curl_easy_reset) *easy_reset;
	__typeof__(curl_easy_setopt) *easy_setopt;
	__typeof__(curl_easy_strerror) *easy_strerror;
	__typeof__(curl_free) *free;
	__typeof__(curl_getdate) *getdate;
	__typeof__(curl_global_init) *global_init;
	__typeof__(curl_multi_add_handle) *multi_add_handle;
	__typeof__(curl_multi_cleanup) *multi_cleanup;
	__typeof__(curl_multi_info_read) *multi_info_read;
	__typeof__(curl_multi_init) *multi_init;
	__typeof__(curl_multi_perform) *multi_perform;
	__typeof__(curl_multi_poll) *multi_poll;
	__typeof__(curl_multi_remove_handle) *multi_remove_handle;
	__typeof__(curl_multi_strerror) *multi_strerror;
	__typeof__(curl_share_cleanup) *share_cleanup;
	__typeof__(curl_share_init) *share_init;
	__typeof__(curl_share_setopt) *share_setopt;
	__typeof__(curl_slist_append) *slist_append;
	__typeof__(curl_slist_free_all) *slist_free_all;
	__typeof__(curl_url) *url;
	__typeof__(curl_url_cleanup) *url_cleanup;
	__typeof__(curl_url_get) *url_get;
	__typeof__(curl_url_set) *url_set;
};

/* The loaded table: valid only after clip_curl_load() succeeded. */
extern struct clip_curl_api clip_curl;

/* Load libcurl.so.4 and resolve every function above, once per process
 * (thread-safe). 0, or -ELIBACC with a message naming the library and what
 * dlopen/dlsym said. */
int clip_curl_load(struct clip_err *err);

#ifndef CLIP_CURL_LAZY_IMPL
/* curl.h makes these three type-checking macros under GCC; calls go
 * through the table instead. */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#undef curl_share_setopt
#define curl_easy_cleanup	 (clip_curl.easy_cleanup)
#define curl_easy_escape	 (clip_curl.easy_escape)
#define curl_easy_getinfo	 (clip_curl.easy_getinfo)
#define curl_easy_init		 (clip_curl.easy_init)
#define curl_easy_pause		 (clip_curl.easy_pause)
#define curl_easy_reset		 (clip_curl.easy_reset)
#define curl_easy_setopt	 (clip_curl.easy_setopt)
#define curl_easy_strerror	 (clip_curl.easy_strerror)
#define curl_free		 (clip_curl.free)
#define curl_getdate		 (clip_curl.getdate)
#define curl_global_init	 (clip_curl.global_init)
#define curl_multi_add_handle	 (clip_curl.multi_add_handle)
#define curl_multi_cleanup	 (clip_curl.multi_cleanup)
#define curl_multi_info_read	 (clip_curl.multi_info_read)
#define curl_multi_init		 (clip_curl.multi_init)
#define curl_multi_perform	 (clip_curl.multi_perform)
#define curl_multi_poll		 (clip_curl.multi_poll)
#define curl_multi_remove_handle (clip_curl.multi_remove_handle)
#define curl_multi_strerror	 (clip_curl.multi_strerror)
#define curl_share_cleanup	 (clip_curl.share_cleanup)
#define curl_share_init		 (clip_curl.share_init)
#define curl_share_setopt	 (clip_curl.share_setopt)
#define curl_slist_append	 (clip_curl.slist_append)
#define curl_slist_free_all	 (clip_curl.slist_free_all)
#define curl_url		 (clip_curl.url)
#define curl_url_cleanup	 (clip_curl.url_cleanup)
#define curl_url_get		 (clip_curl.url_get)
#define curl_url_set		 (clip_curl.url_set)
#endif

#endif
