#!/bin/bash
# bench/takeover.sh: what a server's death costs a supervised mount (clip mount --supervise).
#
# usage: bench/takeover.sh [--image LAYOUT] [--kills N] [--interval S] [--seconds S] [--threads N]
#
#   --image LAYOUT  the Debian test image (scripts/build-test-image); default: $CLIP_BENCH_IMAGE,
#                   else it is built into a temp dir (needs root; cached base, ~15 s)
#   --kills N       SIGKILLs of the server (default: 20)
#   --interval S    seconds between kills (default: 1)
#   --seconds S     length of each throughput run without kills (default: 10)
#   --threads N     reader threads of the stress (default: 8)
#
# The stress is tests/integration/tools/takeover_stress.py: N threads read random files of the
# image, each file's page cache dropped first so that every read reaches the server, and check
# every file's SHA-256 against the image's layer tars; 4 large files stay mmap'd throughout.
# The disk cache is warm (one pass over every file first): what is measured is the FUSE path.
# Three runs:
#   plain        clip mount (one /dev/fuse clone per thread), no kills: throughput
#   supervised   clip mount --supervise (one shared descriptor), no kills: throughput
#   kills        clip mount --supervise, the server SIGKILLed N times: for each kill, the
#                longest read() that was in flight at the kill or began within 0.5 s after it
#                (the pause a program saw); p50 and max over the kills; failed and wrong reads
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
seconds=10
threads=8
while [ $# -gt 0 ]; do
	case $1 in
	--image) image=$2; shift 2 ;;
	--kills) kills=$2; shift 2 ;;
	--interval) interval=$2; shift 2 ;;
	--seconds) seconds=$2; shift 2 ;;
	--threads) threads=$2; shift 2 ;;
	*) sed -n '3,11s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
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

stats_field() {
	"$CLIP" stats --json "$MNT" | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# run NAME SECONDS [mount options]: mount, warm the cache, stress for SECONDS (killing the
# server as asked by $do_kills), unmount; the stress summary in $T/NAME.json, the kill times
# in $T/NAME.kills.
run() {
	local name=$1 secs=$2
	shift 2
	"$CLIP" mount "$T/a.clip" "$MNT" --cache-dir "$T/cache" --log "$T/$name.log" "$@" 3>&-
	find "$MNT" -type f -exec cat {} + >/dev/null 2>&1 || true
	rm -f "$T/stop"
	: >"$T/$name.kills"
	python3 "$STRESS" stress "$MNT" "$T/reference.json" "$T/stop" "$T/$name.json" \
		--threads "$threads" --mapped 4 &
	local stress=$! i server new tries
	sleep 1
	if [ "${do_kills:-0}" -gt 0 ]; then
		for ((i = 0; i < do_kills; i++)); do
			server=$(stats_field server_pid)
			date +%s.%N >>"$T/$name.kills"
			kill -KILL "$server"
			for ((tries = 0; tries < 200; tries++)); do
				new=$(stats_field server_pid 2>/dev/null) || new=
				[ -z "$new" ] || [ "$new" = "$server" ] || break
				sleep 0.02
			done
			sleep "$interval"
		done
		stats_field takeover_pause_max_ms >"$T/$name.supervisor_max"
	else
		sleep "$secs"
	fi
	touch "$T/stop"
	wait "$stress"
	"$CLIP" umount "$MNT"
}

bench_note "plain mount, ${seconds} s"
do_kills=0 run plain "$seconds"
bench_note "supervised mount, ${seconds} s"
do_kills=0 run supervised "$seconds" --supervise
bench_note "supervised mount, $kills kills ${interval} s apart"
do_kills=$kills run kills 0 --supervise

python3 - "$T" "$kills" "$threads" <<'PY'
import json, statistics, sys
T, kills, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(name):
    return json.load(open("%s/%s.json" % (T, name)))
def mbps(s):
    return s["bytes"] / s["seconds"] / 1e6
plain, sup, k = load("plain"), load("supervised"), load("kills")
times = [float(l) for l in open(T + "/kills.kills") if l.strip()]
pauses = []
for t in times:
    worst = 0.0
    for start, d in k["slow"]:
        if start <= t + 0.5 and start + d >= t:
            worst = max(worst, d)
    pauses.append(worst * 1000)
sup_max = float(open(T + "/kills.supervisor_max").read())
print("| run | reads (files) | MB/s | failed | wrong | longest read (ms) |")
print("|---|---:|---:|---:|---:|---:|")
for name, s in (("plain mount, no kills", plain), ("--supervise, no kills", sup),
                ("--supervise, %d SIGKILLs" % kills, k)):
    slowest = max([d for _, d in s["slow"]] or [0]) * 1000
    print("| %s | %d | %.0f | %d | %d | %.0f |" % (name, s["files"], mbps(s), s["failed"],
                                                   s["wrong"], slowest))
print()
print("Read pause per kill (the longest read() in flight at the kill or begun within 0.5 s "
      "after it), %d kills, %d reader threads: p50 %.0f ms, max %.0f ms; the supervisor's own "
      "longest takeover (death seen to successor serving): %.1f ms."
      % (len(pauses), threads, statistics.median(pauses), max(pauses), sup_max))
PY
