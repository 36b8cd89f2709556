#include "clip/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int clip_err_set(struct clip_err *err, int code, const char *fmt, ...)
{
	if (code > 0)
		code = -code;
	if (code == 0)
		code = -EIO;
	if (err == NULL)
		return code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	err->code = code;
	return code;
}

int clip_err_prefix(struct clip_err *err, const char *fmt, ...)
{
	if (err == NULL)
		return -EIO;
	if (err->code == 0) {
		err->code = -EIO;
		snprintf(err->msg, sizeof(err->msg), "unknown error");
	}
	char prefix[CLIP_ERR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	if (n < 0)
		return err->code;
	/* Room for both in full; the result is cut to the message size. */
	char joined[2 * CLIP_ERR_MSG_MAX + 2];
	snprintf(joined, sizeof(joined), "%s: %s", prefix, err->msg);
	memcpy(err->msg, joined, sizeof(err->msg) - 1);
	err->msg[sizeof(err->msg) - 1] = '\0';
	return err->code;
}

int clip_err_errno(struct clip_err *err, int code, const char *fmt, ...)
{
	if (code < 0)
		code = -code;
	if (code == 0)
		code = EIO;
	if (err == NULL)
		return -code;
	char what[CLIP_ERR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return clip_err_set(err, code, "%s: %s", what, strerror(code));
}

int clip_err_nomem(struct clip_err *err)
{
	return clip_err_set(err, ENOMEM, "out of memory");
}

void clip_err_clear(struct clip_err *err)
{
	if (err == NULL)
		return;
	err->code = 0;
	err->msg[0] = '\0';
}
