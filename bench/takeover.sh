#!/bin/bash
# bench/takeover.sh: what a server's death costs a supervised mount (clip mount --supervise).
#
# usage: bench/takeover.sh [--image LAYOUT] [--kills N] [--interval S] [--threads N]
#
#   --image LAYOUT  the Debian test image (scripts/build-test-image); default: $CLIP_BENCH_IMAGE,
#                   else it is built into a temp dir (needs root; cached base, ~15 s)
#   --kills N       SIGKILLs of the server (default: 20)
#   --interval S    seconds between kills (default: 1)
#   --threads N     reader threads of the stress (default: 8)
#
# The stress is tests/integration/tools/takeover_stress.py: N threads read random files of the
# image, each file's page cache dropped first so that every read reaches the server, and check
# every file's SHA-256 against the image's layer tars; 4 large files stay mmap'd throughout.
# The disk cache is warm (one pass over every file first): what is measured is the FUSE path.
# Three runs of N intervals of S seconds, each interval starting with a look at the server's
# pid (clip stats), so that the three load the machine alike:
#   plain        clip mount (one /dev/fuse clone per thread), no kills: throughput
#   supervised   clip mount --supervise (one shared descriptor), no kills: throughput, and the
#                pause measure below at the same instants (what the load alone gives)
#   kills        clip mount --supervise, the server SIGKILLed N times: for each kill, the
#                longest read() that was in flight at the kill or began within 0.5 s after it
#                (the pause a program saw); p50 and max over the kills; failed and wrong reads
#   after        clip mount --supervise, the server SIGKILLed N times before the stress, then
#                no kills: the throughput after restarts, next to "supervised" (before them)
# Prints a markdown table on stdout; progress on stderr.
#
# Needs: root, /dev/fuse, Linux 6.9+, python3, the clip binary ($CLIP, default build/clip).

set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
CLIP=${CLIP:-$here/build/clip}
STRESS=$here/tests/integration/tools/takeover_stress.py
image=${CLIP_BENCH_IMAGE:-}
kills=20
interval=1
threads=8
while [ $# -gt 0 ]; do
	case $1 in
	--image) image=$2; shift 2 ;;
	--kills) kills=$2; shift 2 ;;
	--interval) interval=$2; shift 2 ;;
	--threads) threads=$2; shift 2 ;;
	*) sed -n '3,10s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
	esac
done

# shellcheck source=bench/common.bash
. "$here/bench/common.bash"
bench_init takeover
[ "$(id -u)" = 0 ] || bench_die "needs root (FUSE mounts with allow_other, dropping caches)"
[ -x "$CLIP" ] || bench_die "no clip binary at $CLIP"
if [ -z "$image" ]; then
	bench_note "building the test image"
	image=$("$here/scripts/build-test-image" "$T/image")
fi

"$CLIP" index "oci:$image:latest" -o "$T/a.clip" --quiet
python3 "$STRESS" reference "$image:latest" "$T/reference.json"
mkdir "$T/mnt"
MNT=$T/mnt

# stats_field KEY: one number of the mount's stats (sed, not python: the loop below must not
# load the machine more in one run than in another).
stats_field() {
	"$CLIP" stats --json "$MNT" | sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"
}

# run NAME KILL [mount options]: mount, warm the cache, stress for $kills times $interval
# seconds, at the start of each interval reading the server's pid and, if KILL is 1,
# SIGKILLing it; unmount. The stress summary in $T/NAME.json, the instants in $T/NAME.kills.
run() {
	local name=$1 do_kill=$2
	shift 2
	"$CLIP" mount "$T/a.clip" "$MNT" --cache-dir "$T/cache" --log "$T/$name.log" "$@" 3>&-
	find "$MNT" -type f -exec cat {} + >/dev/null 2>&1 || true
	# PREKILLS: restarts before the stress, one after the other (the "after" run).
	local k old now
	for ((k = 0; k < ${PREKILLS:-0}; k++)); do
		old=$(stats_field server_pid)
		kill -KILL "$old"
		now=$old
		while [ -z "$now" ] || [ "$now" = "$old" ]; do
			sleep 0.05
			now=$(stats_field server_pid 2>/dev/null || true)
		done
		# A server killed within 0.5 s of its start counts as a failed start (the
		# crash-loop guard): these restarts are of servers that ran.
		sleep 0.7
	done
	rm -f "$T/stop"
	: >"$T/$name.kills"
	python3 "$STRESS" stress "$MNT" "$T/reference.json" "$T/stop" "$T/$name.json" \
		--threads "$threads" --mapped 4 &
	local stress=$! i server
	sleep 1
	for ((i = 0; i < kills; i++)); do
		server=$(stats_field server_pid)
		date +%s.%N >>"$T/$name.kills"
		[ "$do_kill" = 0 ] || kill -KILL "$server"
		sleep "$interval"
	done
	stats_field takeover_pause_max_ms >"$T/$name.supervisor_max"
	touch "$T/stop"
	wait "$stress"
	"$CLIP" umount "$MNT"
}

bench_note "plain mount, no kills"
run plain 0
bench_note "supervised mount, no kills"
run supervised 0 --supervise
bench_note "supervised mount, $kills kills ${interval} s apart"
run kills 1 --supervise
bench_note "supervised mount after $kills restarts, no kills"
PREKILLS=$kills run after 0 --supervise

python3 - "$T" "$kills" "$threads" <<'PY'
import json, statistics, sys
T, kills, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(name):
    return json.load(open("%s/%s.json" % (T, name)))
def mbps(s):
    return s["bytes"] / s["seconds"] / 1e6
plain, sup, k, after = load("plain"), load("supervised"), load("kills"), load("after")
import re
def window(s, t):
    worst = 0.0
    for start, d in s["slow"]:
        if start <= t + 0.5 and start + d >= t:
            worst = max(worst, d)
    return worst * 1000
times = [float(l) for l in open(T + "/kills.kills") if l.strip()]
pauses = [window(k, t) for t in times]
# The same measure at the same instants of the run without kills: the load alone.
base = [window(sup, float(l)) for l in open(T + "/supervised.kills") if l.strip()]
sup_max = float(open(T + "/kills.supervisor_max").read())
takeovers = [float(m) for m in re.findall(r"took over after ([0-9.]+) ms",
                                            open(T + "/kills.log").read())]
print("| run | reads (files) | MB/s | failed | wrong | longest read (ms) |")
print("|---|---:|---:|---:|---:|---:|")
for name, s in (("plain mount, no kills", plain), ("--supervise, no kills", sup),
                ("--supervise, %d SIGKILLs" % kills, k),
                ("--supervise, after %d restarts, no kills" % kills, after)):
    slowest = max([d for _, d in s["slow"]] or [0]) * 1000
    print("| %s | %d | %.0f | %d | %d | %.0f |" % (name, s["files"], mbps(s), s["failed"],
                                                   s["wrong"], slowest))
print()
print("| measure | p50 (ms) | max (ms) |")
print("|---|---:|---:|")
print("| read pause per kill (%d kills): the longest read() in flight at the kill or begun "
      "within 0.5 s after it | %.0f | %.0f |" % (len(pauses), statistics.median(pauses),
                                                max(pauses)))
print("| the same measure at the %d instants of the run without kills (the load alone) | %.0f | %.0f |"
      % (len(base), statistics.median(base), max(base)))
print("| takeover seen by the supervisor: death to the successor serving (log) | %.1f | %.1f |"
      % (statistics.median(takeovers or [0]), max(takeovers or [0])))
print()
print("%d reader threads; `clip stats` takeover_pause_max_ms after the kills: %.1f ms. "
      "Throughput after %d restarts over before them: %.2f."
      % (threads, sup_max, kills, mbps(after) / mbps(sup)))
PY
