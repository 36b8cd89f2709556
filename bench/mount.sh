#!/bin/bash
# bench/mount.sh: clip mount next to pulling and unpacking, and next to squashfuse.
#
# usage: bench/mount.sh [--image LAYOUT] [--runs N] [--no-wan]
#
#   --image LAYOUT  the Debian test image (scripts/build-test-image); default: $CLIP_BENCH_IMAGE,
#                   else it is built into a temp dir (needs root)
#   --runs N        runs of each timed case (default 3); medians are reported
#   --no-wan        skip the simulated WAN link (it needs network namespaces and tc)
#
# The image is pushed to a docker-registry on 127.0.0.1 and indexed from there once. Then, in
# one run, medians of N runs:
#   1. time to first program: `clip mount` (empty disk cache) + `chroot MNT /usr/bin/python3
#      -c 'print(1)'`, next to `skopeo copy` + `umoci unpack` + the same chroot command, both
#      from the registry; on loopback, and with the registry in a network namespace behind a
#      veth pair shaped with `tc tbf rate 200mbit` on both ends plus a TCP proxy that adds
#      10 ms to each request (a round trip); target <= 0.1x;
#   2. reading every regular file (cat > /dev/null) through a fresh mount with a warm clip disk
#      cache, next to squashfuse on a squashfs (gzip) image of the same tree, the squashfs in the
#      page cache; throughput, target >= 1.2x squashfuse; and cold (empty cache, loopback
#      registry) for reference;
#   3. `find MNT -printf '%s %m\n'` on fresh mounts, clip next to squashfuse; target >= 1.0x;
#   4. (with the WAN link) a second node's time to first program when a first node has filled
#      a Redis on 127.0.0.1: node B (empty disk cache) reads from Redis, next to the same node
#      reading from the registry over the WAN link; target >= 5x faster, 0 registry bytes.
# Prints markdown tables on stdout; progress on stderr. Needs root.
#
# Needs: docker-registry, skopeo, umoci, squashfuse, mksquashfs, python3, curl, ip, tc, the
# clip binary ($CLIP).

set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
CLIP=${CLIP:-$here/build/clip}
image=${CLIP_BENCH_IMAGE:-}
runs=3
wan=1
while [ $# -gt 0 ]; do
	case $1 in
	--image) image=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--no-wan) wan=0; shift ;;
	*) sed -n '3,9s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
	esac
done
. "$here/bench/common.bash"
bench_init mount
die() { bench_die "$@"; }
[ "$(id -u)" = 0 ] || die "needs root (FUSE mounts, chroot, network namespaces)"
for tool in docker-registry skopeo umoci squashfuse mksquashfs python3 curl redis-server redis-cli; do
	command -v "$tool" >/dev/null || die "$tool not found (scripts/install-deps)"
done
[ -x "$CLIP" ] || die "no clip binary at $CLIP (build it, or set CLIP)"

if [ -z "$image" ]; then
	echo "mount.sh: building the test image" >&2
	image=$("$here/scripts/build-test-image" "$T/image")
fi

bench_registry
port=$REG_PORT
ref=127.0.0.1:$port/bench/debian:latest
skopeo copy -q --dest-tls-verify=false "oci:$image:latest" "docker://$ref" >&2
"$CLIP" index -q "$ref" -o "$T/image.clip"

# A registry behind a slow link: the same storage served from a network namespace.
wan_ref=
if [ "$wan" = 1 ]; then
	bench_wan
	wan_ref=127.0.0.1:$WAN_PORT/bench/debian:latest
fi
bench_redis
redis_port=$REDIS_PORT

umoci unpack --image "$image:latest" "$T/bundle" >/dev/null
mksquashfs "$T/bundle/rootfs" "$T/rootfs.sqfs" -comp gzip -quiet -no-progress >/dev/null

python3 - "$CLIP" "$T" "$runs" "$ref" "$wan_ref" "$redis_port" <<'PY'
import json, os, shutil, statistics, subprocess, sys, time

clip, T, runs, ref, wan_ref = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
redis = "redis://127.0.0.1:" + sys.argv[6]
os.makedirs(T + "/mnt", exist_ok=True)
os.makedirs(T + "/mnt-sq", exist_ok=True)

def sh(*args, **kw):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)

def drop_caches():
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")

def clip_first_program(source, extra=()):
    shutil.rmtree(T + "/cache", ignore_errors=True)
    drop_caches()
    t0 = time.perf_counter()
    sh(clip, "mount", T + "/image.clip", T + "/mnt", "--cache-dir", T + "/cache",
       *(["--source", source] if source else []), *extra)
    out = sh("chroot", T + "/mnt", "/usr/bin/python3", "-c", "print(1)").stdout
    t = time.perf_counter() - t0
    st = sh(clip, "stats", "--json", T + "/mnt").stdout
    sh(clip, "umount", T + "/mnt")
    assert out == b"1\n", out
    return t, json.loads(st)["source_bytes"]

def pull_first_program(src_ref):
    for d in ("oci", "bundle2"):
        shutil.rmtree(T + "/" + d, ignore_errors=True)
    drop_caches()
    t0 = time.perf_counter()
    sh("skopeo", "copy", "-q", "--src-tls-verify=false", "docker://" + src_ref, "oci:" + T + "/oci:latest")
    sh("umoci", "unpack", "--image", T + "/oci:latest", T + "/bundle2")
    out = sh("chroot", T + "/bundle2/rootfs", "/usr/bin/python3", "-c", "print(1)").stdout
    t = time.perf_counter() - t0
    assert out == b"1\n", out
    return t

print("### Time to first program: `chroot ROOT /usr/bin/python3 -c 'print(1)'` from nothing\n")
print("| link | clip mount + run (s) | bytes fetched | skopeo copy + umoci unpack + run (s) | ratio |")
print("|---|---:|---:|---:|---:|")
links = [("loopback", ref, None)]
if wan_ref:
    links.append(("200 Mbit/s + 10 ms per request", wan_ref, wan_ref.rsplit(":", 1)[0]))
for name, r, source in links:
    c = [clip_first_program(source) for _ in range(runs)]
    p = [pull_first_program(r) for _ in range(runs)]
    ct = statistics.median(t for t, _ in c)
    pt = statistics.median(p)
    print(f"| {name} | {ct:.3f} | {statistics.median(b for _, b in c) / 1e6:.1f} MB | {pt:.3f} | "
          f"{ct / pt:.3f} (target <= 0.1) |")
    if source:
        wan_clip = ct
print()

if wan_ref:
    # Node A fills Redis (its unmount waits for the queued stores); node B starts from an
    # empty disk cache each run.
    source = wan_ref.rsplit(":", 1)[0]
    clip_first_program(source, ["--remote-cache", redis])
    b = [clip_first_program(source, ["--remote-cache", redis]) for _ in range(runs)]
    bt = statistics.median(t for t, _ in b)
    print("### Node B's time to first program, registry over the WAN link, a first node having filled Redis\n")
    print("| node B reads from | s | registry bytes | speed-up |")
    print("|---|---:|---:|---:|")
    print(f"| the registry (no remote cache) | {wan_clip:.3f} | (as above) | 1.00 |")
    print(f"| Redis on 127.0.0.1 | {bt:.3f} | {max(x for _, x in b)} | {wan_clip / bt:.1f}x (target >= 5x, 0 bytes) |")
    print()

# Every regular file, read through fresh mounts.
files = []
root = T + "/bundle/rootfs"
for d, _, names in os.walk(root):
    for n in names:
        p = os.path.join(d, n)
        if os.path.isfile(p) and not os.path.islink(p):
            files.append(os.path.relpath(p, root))
total = sum(os.path.getsize(os.path.join(root, f)) for f in files)

def read_all(mnt):
    t0 = time.perf_counter()
    n = 0
    for f in files:
        with open(os.path.join(mnt, f), "rb") as fh:
            while True:
                b = fh.read(1 << 20)
                if not b:
                    break
                n += len(b)
    assert n == total, (n, total)
    return time.perf_counter() - t0

def clip_read(warm):
    if not warm:
        shutil.rmtree(T + "/cache", ignore_errors=True)
    sh(clip, "mount", T + "/image.clip", T + "/mnt", "--cache-dir", T + "/cache")
    drop_caches()
    t = read_all(T + "/mnt")
    sh(clip, "umount", T + "/mnt")
    return t

def squash_read():
    sh("squashfuse", T + "/rootfs.sqfs", T + "/mnt-sq")
    drop_caches()
    with open(T + "/rootfs.sqfs", "rb") as f:   # the image itself warm, as clip's cache is
        while f.read(1 << 20):
            pass
    t = read_all(T + "/mnt-sq")
    sh("umount", T + "/mnt-sq")
    return t

clip_read(False)  # fill the disk cache
cw = statistics.median(clip_read(True) for _ in range(runs))
sq = statistics.median(squash_read() for _ in range(runs))
cc = statistics.median(clip_read(False) for _ in range(runs))
print(f"### Reading all {len(files)} regular files ({total / 1e6:.1f} MB), fresh mounts\n")
print("| reader | s | MB/s | vs squashfuse |")
print("|---|---:|---:|---:|")
print(f"| squashfuse, gzip squashfs in the page cache | {sq:.3f} | {total / 1e6 / sq:.0f} | 1.00 |")
print(f"| clip, warm disk cache | {cw:.3f} | {total / 1e6 / cw:.0f} | {sq / cw:.2f} (target >= 1.2) |")
print(f"| clip, cold: empty cache, loopback registry | {cc:.3f} | {total / 1e6 / cc:.0f} | {sq / cc:.2f} |")
print()

def find_time(mount_cmd, mnt):
    sh(*mount_cmd)
    drop_caches()
    t0 = time.perf_counter()
    out = sh("find", mnt, "-printf", "%s %m\n").stdout
    t = time.perf_counter() - t0
    sh("umount", mnt)
    return t, out.count(b"\n")

cf = [find_time([clip, "mount", T + "/image.clip", T + "/mnt", "--cache-dir", T + "/cache"], T + "/mnt") for _ in range(runs)]
sf = [find_time(["squashfuse", T + "/rootfs.sqfs", T + "/mnt-sq"], T + "/mnt-sq") for _ in range(runs)]
ct, sqt = statistics.median(t for t, _ in cf), statistics.median(t for t, _ in sf)
print(f"### `find MNT -printf '%s %m\\n'` over {cf[0][1]} entries, fresh mounts\n")
print("| reader | s | vs squashfuse |")
print("|---|---:|---:|")
print(f"| squashfuse | {sqt:.3f} | 1.00 |")
print(f"| clip | {ct:.3f} | {sqt / ct:.2f} (target >= 1.0) |")
PY
