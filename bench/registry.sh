#!/bin/bash
# bench/registry.sh: indexing from and reading lazily through a registry on 127.0.0.1.
#
# usage: bench/registry.sh [--image LAYOUT] [--runs N] [--reads N]
#
#   --image LAYOUT  the Debian test image (scripts/build-test-image); default: $CLIP_BENCH_IMAGE,
#                   else it is built into a temp dir (needs root)
#   --runs N        timed runs per index command, after one warm-up (default 5); medians reported
#   --reads N       cold random 4 KiB reads (default 200)
#
# The image is pushed (skopeo) to a docker-registry started on a free loopback port. In one run:
#   1. clip index REGISTRY-REF next to clip index oci:LAYOUT (the same image): the overhead of
#      HTTP (target <= 10%);
#   2. clip index REGISTRY-REF with -j 1 next to the default (one job per core): the gain of
#      indexing layers in parallel (target >= 1.6x on 2 cores). Also -j 1 pinned to one core
#      (taskset -c 0): one layer at a time with nothing overlapping, the gain of using 2 cores
#      at all, since -j 1 alone already runs each layer's inflate and parsing on two threads;
#      and the share of the largest layer, which bounds what layer parallelism can gain;
#   3. N cold 4 KiB reads at random (file, offset) pairs, each a fresh `clip cat --offset O
#      --length 4096 --stats` process, once through the registry and once from the local layout
#      (blobs in the page cache), on the same pairs: p50/p99 latency, and the compressed bytes
#      fetched per read next to the archive's span size (target: at most 2 spans).
# Prints markdown tables on stdout; progress on stderr.
#
# Needs: docker-registry, skopeo, hyperfine, python3, curl, the clip binary ($CLIP).

set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
CLIP=${CLIP:-$here/build/clip}
image=${CLIP_BENCH_IMAGE:-}
runs=5
reads=200
while [ $# -gt 0 ]; do
	case $1 in
	--image) image=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--reads) reads=$2; shift 2 ;;
	*) sed -n '3,9s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
	esac
done
die() { printf 'registry.sh: %s\n' "$*" >&2; exit 1; }
for tool in docker-registry skopeo hyperfine python3 curl; do
	command -v "$tool" >/dev/null || die "$tool not found (scripts/install-deps)"
done
[ -x "$CLIP" ] || die "no clip binary at $CLIP (build it, or set CLIP)"

T=$(mktemp -d "${TMPDIR:-/tmp}/clip-bench-registry.XXXXXX")
registry_pid=
cleanup() {
	[ -z "$registry_pid" ] || kill "$registry_pid" 2>/dev/null || true
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "$image" ]; then
	echo "registry.sh: building the test image" >&2
	image=$("$here/scripts/build-test-image" "$T/image")
fi

read -r port registry_pid < <("$here/scripts/local-registry" "$T/registry")
ref=127.0.0.1:$port/bench/debian:latest
echo "registry.sh: pushing the image to $ref" >&2
skopeo copy -q --dest-tls-verify=false "oci:$image:latest" "docker://$ref" >&2

echo "registry.sh: index times" >&2
hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$T/index.json" \
	-n registry "$CLIP index -q $ref -o $T/r.clip" \
	-n layout "$CLIP index -q oci:$image:latest -o $T/l.clip" \
	-n 'registry -j 1' "$CLIP index -q -j 1 $ref -o $T/r1.clip" \
	-n 'registry -j 1, one core' "taskset -c 0 $CLIP index -q -j 1 $ref -o $T/r1.clip" >&2
"$CLIP" index -q "$ref" -o "$T/r.clip"
"$CLIP" index -q "oci:$image:latest" -o "$T/l.clip"
"$CLIP" info "$T/r.clip" | sed -n 's/^layer [0-9]*: [^ ]* [a-z]* \([0-9]*\) -> .*/\1/p' |
	python3 -c 'import json, sys; print(json.dumps([int(x) for x in sys.stdin.read().split()]))' \
	>"$T/layers.json"

echo "registry.sh: $reads cold random reads" >&2
python3 - "$CLIP" "$T" "$reads" "$image" <<'PY'
import json, random, re, statistics, subprocess, sys, time

clip, T, reads, image = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
runs = {r["command"]: r for r in json.load(open(T + "/index.json"))["results"]}
med = {k: statistics.median(v["times"]) for k, v in runs.items()}
print("### Index time, the same image from a loopback registry and from an OCI layout\n")
print("| command | median s | ratio |")
print("|---|---:|---:|")
print(f"| clip index oci:LAYOUT | {med['layout']:.3f} | 1.00 |")
print(f"| clip index REGISTRY-REF | {med['registry']:.3f} | {med['registry']/med['layout']:.2f} (target <= 1.10) |")
print(f"| clip index -j 1 REGISTRY-REF | {med['registry -j 1']:.3f} | parallel speed-up {med['registry -j 1']/med['registry']:.2f}x (target >= 1.6x) |")
print(f"| taskset -c 0 clip index -j 1 REGISTRY-REF | {med['registry -j 1, one core']:.3f} | 2 cores vs 1: speed-up {med['registry -j 1, one core']/med['registry']:.2f}x |")
print()
lay = json.load(open(T + "/layers.json"))
print(f"Layers (compressed bytes): {', '.join(str(x) for x in lay)}; the largest is "
      f"{100.0 * max(lay) / sum(lay):.0f}% of the image, so indexing layers at once can save at "
      f"most the time of the others: at most {sum(lay) / max(lay):.2f}x when time follows bytes.")
print()

# Files large enough for a 4 KiB read, from the archive's recursive listing.
out = subprocess.run([clip, "ls", "-R", "--manifest", T + "/r.clip"], check=True,
                     capture_output=True).stdout.decode("utf-8", "surrogateescape")
files = []
for line in out.splitlines():
    parts = line.split("\t")
    # manifest line: PATH TYPE MODE UID GID SIZE ... (scripts/tree-manifest); escaped
    # paths (with a backslash) are skipped rather than unescaped.
    if len(parts) > 5 and parts[1] == "f" and "\\" not in parts[0]:
        size = int(parts[5])
        if size >= 8192:
            files.append((parts[0], size))
info = subprocess.run([clip, "info", T + "/r.clip"], check=True, capture_output=True,
                      text=True).stdout
span = int(re.search(r"span setting:\s+(\d+)", info).group(1))
largest = max(int(m) for m in re.findall(r"largest span \d+ bytes \((\d+) compressed\)", info))
rng = random.Random(7)
pairs = []
for _ in range(reads):
    path, size = rng.choice(files)
    pairs.append((path, rng.randrange(0, size - 4096)))

def run(archive, extra):
    lat, fetched, requests = [], [], []
    for path, off in pairs:
        t0 = time.perf_counter()
        p = subprocess.run([clip, "cat", "--stats", "--offset", str(off), "--length", "4096",
                            archive, path] + extra, capture_output=True)
        lat.append((time.perf_counter() - t0) * 1000)
        if p.returncode != 0 or len(p.stdout) != 4096:
            sys.exit(f"clip cat {path} at {off} failed: {p.stderr.decode()}")
        st = p.stderr.decode()
        fetched.append(int(re.search(r"source bytes: (\d+)", st).group(1)))
        requests.append(int(re.search(r"source requests: (\d+)", st).group(1)))
    return lat, fetched, requests

reg = run(T + "/r.clip", [])
loc = run(T + "/l.clip", [])
def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]
print(f"### {reads} cold 4 KiB reads at random offsets, a fresh `clip cat` process each\n")
print("| source | p50 ms | p99 ms | mean compressed bytes fetched | max | mean requests |")
print("|---|---:|---:|---:|---:|---:|")
for name, (lat, fetched, req) in (("registry (HTTP Range)", reg), ("local OCI layout", loc)):
    print(f"| {name} | {statistics.median(lat):.2f} | {pct(lat, 0.99):.2f} | "
          f"{statistics.mean(fetched):.0f} | {max(fetched)} | {statistics.mean(req):.2f} |")
print()
print(f"Registry p50 / local p50: {statistics.median(reg[0]) / statistics.median(loc[0]):.2f}. "
      f"The largest compressed span of the archive is {largest} bytes (span setting {span} "
      f"uncompressed), so 2 spans are at most {2 * largest} bytes: the largest fetch was "
      f"{max(reg[1])} bytes ({max(reg[1]) / largest:.2f} of the largest span).")
PY
