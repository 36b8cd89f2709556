/* clip: the supervisor of a mount that outlives its server.
 *
 * `clip mount --supervise` leaves two processes: a supervisor that owns the
 * mount and its /dev/fuse descriptor, and a server that answers requests
 * through that descriptor. When a server dies the supervisor has the kernel
 * resend what it had taken and starts another; docs/TAKEOVER.md tells how.
 * The supervisor listens on an abstract unix socket named after its pid
 * (CLIP_SUPERVISOR_SOCKET), for `clip restart`.
 */
#ifndef CLIP_SUPERVISOR_H
#define CLIP_SUPERVISOR_H

#include <sys/types.h>

#include "clip/err.h"

/* printf format of the abstract socket's name (without the leading NUL). */
#define CLIP_SUPERVISOR_SOCKET "clip-supervisor-%ld"

/* Ask the supervisor `supervisor` to replace its server by a new one started
 * from `binary` (absolute; NULL: the binary it runs now) without failing a
 * request: the new server starts beside the old, and once it serves the old
 * one is killed and the kernel resends what it had taken. Waits for the
 * outcome (up to a minute): 0 with *new_server the new server's pid, or a
 * negative errno with `err` saying why (the old server then still serves).
 * Only root or the supervisor's user may ask. */
int clip_supervisor_restart(pid_t supervisor, const char *binary, pid_t *new_server,
			    struct clip_err *err);

#endif
