/* clip: errors carried from where they happen to where they are printed.
 *
 * Every fallible function in libclip takes a `struct clip_err *` owned by the
 * caller, returns 0 (or a non-negative count) on success and a negative errno
 * on failure, with a message in `err` naming the object and the reason.
 * Callers add context as the error moves up with clip_err_prefix(); only the
 * CLI's main() prints it.
 */
#ifndef CLIP_ERR_H
#define CLIP_ERR_H

#define CLIP_ERR_MSG_MAX 1024

struct clip_err {
	int code; /* negative errno, 0 when no error was set */
	char msg[CLIP_ERR_MSG_MAX];
};

/* Record an error. `code` is an errno value of either sign; it is stored and
 * returned negative so that `return clip_err_set(err, EINVAL, ...)` works.
 * `err` may be NULL, in which case only the code is returned. */
int clip_err_set(struct clip_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prepend "<context>: " to the message already in `err` and return its code
 * (or -EIO if none was set). `err` may be NULL. */
int clip_err_prefix(struct clip_err *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Record the failure of a system call: the message is the formatted text,
 * ": ", and strerror(code), and the code is returned negative. `code` is an
 * errno value of either sign (pass errno right after the failing call). */
int clip_err_errno(struct clip_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Record running out of memory: -ENOMEM with "out of memory". */
int clip_err_nomem(struct clip_err *err);

/* Reset `err` to "no error". */
void clip_err_clear(struct clip_err *err);

#endif
