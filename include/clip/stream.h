/* clip: a sequential byte stream (a blob being read or downloaded).
 *
 * What the indexer reads a layer from, whatever holds it: a registry
 * download (clip_registry_blob_stream), a blob file of a local OCI layout, a
 * wrapper that counts progress. A stream is read once, from start to end;
 * there is no seek.
 *
 * Thread safety: a stream is used by one thread at a time (it may be opened
 * in one thread and read in another); distinct streams are independent.
 */
#ifndef CLIP_STREAM_H
#define CLIP_STREAM_H

#include <stddef.h>
#include <sys/types.h>

#include "clip/err.h"

/* read: up to `len` bytes into `buf`; returns the number of bytes read
 * (fewer than asked is not the end), 0 at the end of the stream, or a
 * negative errno with `err` set, naming the stream and the reason.
 * close (may be NULL): releases what the stream holds. Whoever holds the
 * stream calls it once, whether or not the stream was read to its end, and
 * uses the stream no more.
 * opaque: the stream's state, passed to both; the stream's own business. */
struct clip_stream {
	ssize_t (*read)(void *opaque, void *buf, size_t len, struct clip_err *err);
	void (*close)(void *opaque);
	void *opaque;
};

#endif
