#!/usr/bin/env bats
# Integration test of `clip mount --supervise` (docs/TAKEOVER.md): a mount whose server is
# killed goes on serving, through a new server, with no failed read and no wrong byte, the
# requests the dead server had taken resent by the kernel (Linux 6.9+); a crash loop ends in
# EIO answers, not a hang; `clip restart` replaces a server without failing a read; the
# supervisor unmounts on SIGTERM.
#
# How to run (as root, with /dev/fuse):
#   meson test -C build integration-takeover -v
#   CLIP=$PWD/build/clip CLIP_TEST_IMAGE=DIR bats tests/integration/takeover.bats
# Needs: root, /dev/fuse, python3, findmnt, fusermount3, Linux 6.9 or later (FUSE_NOTIFY_RESEND).
# The test image is built as in mount.bats (CLIP_TEST_IMAGE=DIR reuses one). The reference
# checksums come from the image's layer tars, read by python (tools/takeover_stress.py), not
# from clip.

load helpers

STRESS=$BATS_TEST_DIRNAME/tools/takeover_stress.py

setup_file() {
	CLIP_SKIP_REASON=$(require_env /dev/fuse python3 findmnt fusermount3)
	# FUSE_NOTIFY_RESEND is Linux 6.9's.
	local major minor
	IFS=. read -r major minor _ <<<"$(uname -r)"
	if [ -z "$CLIP_SKIP_REASON" ] && { [ "$major" -lt 6 ] ||
		{ [ "$major" -eq 6 ] && [ "${minor%%[!0-9]*}" -lt 9 ]; }; }; then
		CLIP_SKIP_REASON="Linux $(uname -r) cannot resend FUSE requests (needs 6.9)"
	fi
	export CLIP_SKIP_REASON
	[ -z "$CLIP_SKIP_REASON" ] || return 0

	W=$(make_workdir)
	export W
	IMAGE=$(test_image "$W/image") || return 1
	export IMAGE
	export ARCHIVE=$W/test.clip
	"$CLIP" index "oci:$IMAGE:latest" -o "$ARCHIVE" --quiet
	python3 "$STRESS" reference "$IMAGE:latest" "$W/reference.json"
}

teardown_file() {
	[ -n "${W:-}" ] || return 0
	unmount_under "$W"
	kill_daemons_under "$W"
	remove_workdir "$W"
}

setup() {
	[ -z "${CLIP_SKIP_REASON:-}" ] || skip "$CLIP_SKIP_REASON"
	T=$(mktemp -d "$W/test.XXXXXX")
	MNT=$T/mnt
	mkdir "$MNT"
}

teardown() {
	[ -n "${T:-}" ] || return 0
	touch "$T/stop"
	[ -z "${STRESS_PID:-}" ] || wait "$STRESS_PID" 2>/dev/null || true
	unmount_under "$T"
	kill_daemons_under "$T"
	rm -rf --one-file-system "$T"
}

# ---- helpers ---------------------------------------------------------------------------------

# kill_daemons_under DIR: SIGKILL every process whose command line names a path under DIR (a
# supervisor or server a failed test left behind).
kill_daemons_under() {
	python3 - "$1" <<'PY'
import os, signal, sys
d = os.fsencode(sys.argv[1] + "/")
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open("/proc/%s/cmdline" % pid, "rb").read().split(b"\0")
    except OSError:
        continue
    if int(pid) != os.getpid() and b"mount" in argv and any(a.startswith(d) for a in argv):
        try:
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
PY
}

# mount_supervised: the test archive at $MNT, supervised, with its own cache and log.
mount_supervised() {
	"$CLIP" mount --supervise "$ARCHIVE" "$MNT" --cache-dir "$T/cache" --log "$T/log" 3>&-
}

# start_stress [THREADS]: the read stress over $MNT in the background (8 threads), until
# $T/stop exists.
start_stress() {
	rm -f "$T/stop"
	python3 "$STRESS" stress "$MNT" "$W/reference.json" "$T/stop" "$T/stress.json" \
		--threads "${1:-8}" --mapped 4 3>&- &
	STRESS_PID=$!
	# Let it reach full speed (and the mapped files be mapped) before the first kill.
	sleep 2
}

# stop_stress: stop the stress, print its summary, fail unless it read files and every read
# succeeded with the right bytes.
stop_stress() {
	touch "$T/stop"
	if ! stress_stopped_within 30; then
		echo "readers still blocked 30 s after the stop: requests were lost"
		return 1
	fi
	wait "$STRESS_PID"
	STRESS_PID=
	python3 - "$T/stress.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
slowest = max([d for _, d in s["slow"]] or [0])
print("stress: %d files, %d MB in %.1f s, %d failed, %d wrong, slowest read %.0f ms, errors %s"
      % (s["files"], s["bytes"] >> 20, s["seconds"], s["failed"], s["wrong"], slowest * 1000,
         s["errors"]))
assert s["files"] > 100, "the stress read too little"
assert s["failed"] == 0 and s["wrong"] == 0, "reads failed or gave wrong bytes"
PY
}

# stress_stopped_within SECONDS: whether the stress (told to stop) has exited within SECONDS.
stress_stopped_within() {
	local tries
	for ((tries = 0; tries < $1 * 20; tries++)); do
		kill -0 "$STRESS_PID" 2>/dev/null || return 0
		sleep 0.05
	done
	return 1
}

# gone PID: fail unless PID has exited (a zombie counts: init reaps it late).
gone() {
	if [ -e "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; then
		echo "process $1 still running"
		return 1
	fi
}

# wait_new_server OLD: wait up to 10 s for the mount's stats to name a server other than OLD;
# print it.
wait_new_server() {
	local pid tries
	for ((tries = 0; tries < 200; tries++)); do
		pid=$(stats_field "$MNT" server_pid 2>/dev/null) || pid=
		if [ -n "$pid" ] && [ "$pid" != "$1" ]; then
			echo "$pid"
			return 0
		fi
		sleep 0.05
	done
	echo "no new server after $1" >&2
	return 1
}

# ---- tests -----------------------------------------------------------------------------------

@test "a supervised mount survives SIGKILL of its server three times under a 16-thread read stress and a python3 loop" {
	mount_supervised
	local supervisor server new i
	supervisor=$(stats_field "$MNT" supervisor_pid)
	server=$(stats_field "$MNT" server_pid)
	[ "$supervisor" != "$server" ]
	[ "$(stats_field "$MNT" restarts)" = 0 ]
	# Beside the server, a spare waits to take over.
	[ "$(ps -o pid= --ppid "$supervisor" | wc -l)" = 2 ]
	start_stress 16
	# A program of the image keeps starting from the mount throughout, as a container would.
	(
		while [ ! -e "$T/stop" ]; do
			if chroot "$MNT" /usr/bin/python3 -c 'import argparse, email, hashlib; print(1)' \
				>/dev/null 2>>"$T/python.err"; then
				echo ok >>"$T/python.runs"
			else
				echo failed >>"$T/python.runs"
			fi
		done
	) 3>&- &
	local python_loop=$!
	for i in 1 2 3; do
		kill -KILL "$server"
		new=$(wait_new_server "$server")
		server=$new
		sleep 1
	done
	stop_stress
	wait "$python_loop"
	echo "python3 in a chroot: $(grep -c ok "$T/python.runs") runs, $(grep -c failed "$T/python.runs") failed"
	cat "$T/python.err" 2>/dev/null || true
	[ "$(grep -c ok "$T/python.runs")" -ge 3 ]
	! grep -q failed "$T/python.runs"
	[ "$(stats_field "$MNT" supervisor_pid)" = "$supervisor" ]
	[ "$(stats_field "$MNT" restarts)" = 3 ]
	local pause
	pause=$(stats_field "$MNT" takeover_pause_max_ms)
	echo "longest takeover: $pause ms"
	python3 -c 'import sys; p = float(sys.argv[1]); assert 0 < p < 5000, p' "$pause"
	grep -q "took over after" "$T/log"
	# clip umount returns once both processes are gone.
	"$CLIP" umount "$MNT"
	not_mounted "$MNT"
	gone "$supervisor"
	gone "$server"
}

@test "with the resend turned off, reads the dead server had taken hang: the test above can fail" {
	# CLIP_TAKEOVER_NO_RESEND (for this test only) makes the supervisor skip the
	# FUSE_NOTIFY_RESEND write. The kernel then keeps the requests the killed server had
	# taken on its processing list, unanswered: the stress's readers of those files never
	# finish.
	CLIP_TAKEOVER_NO_RESEND=1 mount_supervised
	local server i
	server=$(stats_field "$MNT" server_pid)
	start_stress
	for i in 1 2 3; do
		kill -KILL "$server"
		server=$(wait_new_server "$server")
		sleep 1
	done
	touch "$T/stop"
	if stress_stopped_within 10; then
		echo "every reader finished: no request was lost without the resend"
		return 1
	fi
	# The hung readers wait killably; unmounting ends their wait.
	umount -l "$MNT"
	kill -KILL "$STRESS_PID" 2>/dev/null || true
	wait "$STRESS_PID" 2>/dev/null || true
	STRESS_PID=
}

@test "a crash loop ends in EIO answers, not a hang; clip restart recovers; SIGTERM unmounts" {
	# The supervisor starts later servers from the binary's path: a copy of clip, mounted
	# from, then replaced by a program that dies at once, as a broken upgrade would.
	cp "$CLIP" "$T/clip"
	"$T/clip" mount --supervise "$ARCHIVE" "$MNT" --cache-dir "$T/cache" --log "$T/log" 3>&-
	local supervisor server
	supervisor=$(stats_field "$MNT" supervisor_pid)
	server=$(stats_field "$MNT" server_pid)
	cmp "$MNT/etc/debian_version" <(printf 'clip-test over debian\n') ||
		cat "$MNT/etc/debian_version"
	rm "$T/clip"
	printf '#!/bin/sh\nexit 3\n' >"$T/clip"
	chmod +x "$T/clip"
	# The spare server the supervisor keeps ready runs the old binary: it goes first (a
	# spare that dies is replaced only once a server serves).
	local child
	for child in $(ps -o pid= --ppid "$supervisor"); do
		if [ "$child" != "$server" ]; then
			kill -KILL "$child"
			wait_gone "$child"
		fi
	done
	kill -KILL "$server"
	# Five starts with 50 to 400 ms between them: within seconds, every request is EIO.
	run timeout 20 cat "$MNT/usr/bin/python3.11"
	echo "status $status, output: ${output:0:200}"
	[ "$status" -eq 1 ]
	[[ $output == *"Input/output error"* ]]
	run timeout 10 ls "$MNT/etc"
	[ "$status" -ne 124 ]
	[ "$status" -ne 0 ]
	grep -q "giving up" "$T/log"
	[ -e "/proc/$supervisor" ]
	# The supervisor answers the stats itself, saying so.
	[ "$(stats_field "$MNT" gave_up)" = True ]
	[ "$(stats_field "$MNT" supervisor_pid)" = "$supervisor" ]
	# A working binary brings the mount back.
	run --separate-stderr "$CLIP" restart --binary "$CLIP" "$MNT"
	echo "status $status, output: $output, stderr: $stderr"
	[ "$status" -eq 0 ]
	cmp "$MNT/etc/debian_version" <(printf 'clip-test over debian\n')
	# The supervisor still owns the mount, and unmounts it when told.
	kill -TERM "$supervisor"
	wait_gone "$supervisor"
	not_mounted "$MNT"
}

@test "a server handed something other than its supervisor's socket says so and exits 1" {
	# --serve-fd is what a supervisor passes the servers it starts.
	run --separate-stderr "$CLIP" mount --serve-fd=9 "$ARCHIVE" "$MNT" 9</dev/null
	echo "status $status, stderr: $stderr"
	[ "$status" -eq 1 ]
	[[ $stderr == *"supervisor: receiving the descriptor"* ]]
	not_mounted "$MNT"
}

@test "clip restart replaces the server under a read stress; --binary upgrades; a broken binary fails" {
	mount_supervised
	local supervisor server new
	supervisor=$(stats_field "$MNT" supervisor_pid)
	server=$(stats_field "$MNT" server_pid)
	start_stress
	run --separate-stderr "$CLIP" restart "$MNT"
	echo "status $status, output: $output, stderr: $stderr"
	[ "$status" -eq 0 ]
	new=$(stats_field "$MNT" server_pid)
	[ "$new" != "$server" ]
	[ "$output" = "$MNT: served by process $new" ]
	wait_gone "$server"
	# An upgrade: another binary (a copy, so that its path differs) takes over.
	cp "$CLIP" "$T/clip-new"
	sleep 1
	run --separate-stderr "$CLIP" restart --binary "$T/clip-new" "$MNT"
	echo "status $status, output: $output, stderr: $stderr"
	[ "$status" -eq 0 ]
	server=$new
	new=$(stats_field "$MNT" server_pid)
	[ "$new" != "$server" ]
	[ "$(readlink "/proc/$new/exe")" = "$T/clip-new" ]
	# A binary that cannot serve: the old server goes on.
	printf '#!/bin/sh\nexit 3\n' >"$T/broken"
	chmod +x "$T/broken"
	sleep 1
	run --separate-stderr "$CLIP" restart --binary "$T/broken" "$MNT"
	echo "status $status, stderr: $stderr"
	[ "$status" -eq 1 ]
	[[ $stderr == *"failed to start 5 times"* ]]
	[ "$(stats_field "$MNT" server_pid)" = "$new" ]
	sleep 1
	stop_stress
	[ "$(stats_field "$MNT" restarts)" = 2 ]
	[ "$(stats_field "$MNT" supervisor_pid)" = "$supervisor" ]
}

@test "clip restart refuses a mount without a supervisor" {
	"$CLIP" mount "$ARCHIVE" "$MNT" --cache-dir "$T/cache" 3>&-
	run --separate-stderr "$CLIP" restart "$MNT"
	echo "status $status, stderr: $stderr"
	[ "$status" -eq 1 ]
	[[ $stderr == *"not a supervised mount"* ]]
}

@test "SIGTERM to the supervisor or to the server unmounts cleanly" {
	local target supervisor server
	for target in supervisor server; do
		mount_supervised
		supervisor=$(stats_field "$MNT" supervisor_pid)
		server=$(stats_field "$MNT" server_pid)
		cat "$MNT/etc/os-release" >/dev/null
		if [ "$target" = supervisor ]; then
			kill -TERM "$supervisor"
		else
			kill -TERM "$server"
		fi
		wait_gone "$supervisor"
		wait_gone "$server"
		not_mounted "$MNT"
	done
}
