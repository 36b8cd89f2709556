#!/bin/bash
# bench/large-image.sh: a cold start of a large AI image through clip, next to podman pull and to
# skopeo copy + umoci unpack, on loopback and over a slow link.
#
# usage: bench/large-image.sh [--image LAYOUT] [--runs N] [--no-wan] [--no-podman]
#
#   --image LAYOUT  the image of scripts/build-ml-image (Debian minbase + python3-torch,
#                   -sklearn, -pandas; 3 layers); default: $CLIP_BENCH_ML_IMAGE, else built
#   --runs N        runs of each timed case (default 3); medians are reported
#   --no-wan        skip the simulated link (200 Mbit/s + 10 ms per request, bench/common.bash)
#   --no-podman     skip podman (it is the slowest reference)
#
# The image is pushed to a docker-registry on 127.0.0.1 and indexed from there once. Then, every
# case from empty caches (and dropped page caches):
#   1. `python3 /app/start.py` (imports torch, sklearn and pandas) in a chroot of a fresh clip
#      mount, next to `podman pull` (empty storage root) and `podman run` of the same command,
#      and to skopeo copy + umoci unpack + the chroot; time, compressed bytes fetched, bytes
#      inflated, spans, requests, and the clip daemon's CPU seconds;
#      plus clip with a startup profile (recorded once on loopback with --record-profile, then
#      --profile on every cold run), the archive `clip optimize` made for that profile, another
#      program (import json) on the plain and the optimized archive, and the warm floor (every byte in the disk cache already, page
#      cache dropped: what no fetching can beat);
#   2. node B: a second mount (empty disk cache) reading from a Redis on 127.0.0.1 that node A's
#      mount filled, without and with the profile; its time next to node A's, and the bytes it
#      still took from the registry;
#   3. hydration: `clip mount --prefetch` until the largest layer is all in the disk cache, next
#      to `curl BLOB | igzip -dc >/dev/null` of that layer.
# Prints markdown tables on stdout; progress on stderr. Needs root.
#
# Needs: docker-registry, skopeo, umoci, podman, runc, redis-server, curl, igzip (isal), ip, tc,
# python3, and the clip binary ($CLIP).

set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
CLIP=${CLIP:-$here/build/clip}
image=${CLIP_BENCH_ML_IMAGE:-}
runs=3
wan=1
podman=1
while [ $# -gt 0 ]; do
	case $1 in
	--image) image=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--no-wan) wan=0; shift ;;
	--no-podman) podman=0; shift ;;
	*) sed -n '3,12s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
	esac
done
. "$here/bench/common.bash"
bench_init large-image
[ "$(id -u)" = 0 ] || bench_die "needs root (FUSE mounts, chroot, network namespaces)"
for tool in docker-registry skopeo umoci redis-server curl igzip python3; do
	command -v "$tool" >/dev/null || bench_die "$tool not found (scripts/install-deps)"
done
[ "$podman" = 0 ] || command -v podman >/dev/null || bench_die "podman not found"
[ -x "$CLIP" ] || bench_die "no clip binary at $CLIP (build it, or set CLIP)"

if [ -z "$image" ]; then
	bench_note "building the large image (scripts/build-ml-image; cached afterwards)"
	image=$("$here/scripts/build-ml-image" "$T/image")
fi

bench_registry
ref=127.0.0.1:$REG_PORT/bench/ml:latest
bench_note "pushing the image"
skopeo copy -q --dest-tls-verify=false "oci:$image:latest" "docker://$ref" >&2
"$CLIP" index -q "$ref" -o "$T/ml.clip"
wan_ref=
if [ "$wan" = 1 ]; then
	bench_wan
	wan_ref=127.0.0.1:$WAN_PORT/bench/ml:latest
fi
bench_redis

python3 - "$CLIP" "$T" "$runs" "$ref" "$wan_ref" "$REDIS_PORT" "$podman" <<'PY'
import json, os, resource, shutil, statistics, subprocess, sys, time

clip, T, runs, ref, wan_ref = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
redis, use_podman = "redis://127.0.0.1:" + sys.argv[6], sys.argv[7] == "1"
archive, mnt = T + "/ml.clip", T + "/mnt"
os.makedirs(mnt, exist_ok=True)
CMD = ["python3", "/app/start.py"]


def note(*a):
    print("large-image:", *a, file=sys.stderr, flush=True)


def sh(*args, **kw):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def drop_caches():
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


# Another program of the same image, for "a profile must not slow other programs".
OTHER = ["python3", "-c", "import json, email.parser; print('other')"]


def chroot_run(root, cmd=None):
    # /proc and /dev for the program, as a runtime would give them.
    sh("mount", "-t", "proc", "proc", root + "/proc")
    sh("mount", "--bind", "/dev", root + "/dev")
    try:
        out = sh("chroot", root, "/usr/bin/env", "PATH=/usr/bin:/bin", *(cmd or CMD)).stdout
    finally:
        sh("umount", root + "/dev")
        sh("umount", root + "/proc")
    assert out.startswith(b"other" if cmd else b"torch"), out
    return out


class Mount:
    """clip mount -f as a child, so that its CPU time is known when it exits."""

    def __init__(self, cache, source=None, extra=(), arch=None):
        args = [clip, "mount", "-f", arch or archive, mnt, "--cache-dir", cache]
        if source:
            args += ["--source", source]
        self.p = subprocess.Popen(args + list(extra), stdout=subprocess.DEVNULL,
                                  stderr=open(T + "/mount.log", "a"))
        for _ in range(1000):
            if os.path.ismount(mnt):
                return
            if self.p.poll() is not None:
                raise SystemExit("clip mount failed, see " + T + "/mount.log")
            time.sleep(0.005)
        raise SystemExit("clip mount did not come up")

    def stats(self):
        return json.loads(sh(clip, "stats", "--json", mnt).stdout)

    def close(self):
        sh(clip, "umount", mnt)
        _, status, ru = os.wait4(self.p.pid, 0)
        self.p.returncode = status
        return ru.ru_utime + ru.ru_stime


def clip_cold(source=None, extra=(), cache=None, keep=False, arch=None, cmd=None):
    if cache is None:
        cache = T + "/cache"
        if not keep:
            shutil.rmtree(cache, ignore_errors=True)
    drop_caches()
    t0 = time.perf_counter()
    m = Mount(cache, source, extra, arch)
    chroot_run(mnt, cmd)
    t = time.perf_counter() - t0
    st = m.stats()
    cpu = m.close()
    return {"s": t, "fetched": st["source_bytes"], "inflated": st["inflated_bytes"],
            "spans": st["spans_inflated"], "requests": st["source_requests"], "cpu": cpu}


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def podman_cold(r):
    root = T + "/podman"
    sh("rm", "-rf", root)
    drop_caches()
    base = ["podman", "--root", root + "/root", "--runroot", root + "/run",
            "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs",
            "--events-backend", "file"]
    c0 = children_cpu()
    t0 = time.perf_counter()
    sh(*base, "pull", "-q", "--tls-verify=false", r)
    pull = time.perf_counter() - t0
    out = sh(*base, "run", "--rm", "--runtime", "runc", "--network", "none",
             "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", r, *CMD).stdout
    t = time.perf_counter() - t0
    assert out.startswith(b"torch"), out
    cpu = children_cpu() - c0
    sh(*base, "rmi", "-af")
    sh("rm", "-rf", root)
    return {"pull": pull, "s": t, "cpu": cpu}


def skopeo_cold(r):
    for d in ("oci", "bundle"):
        shutil.rmtree(T + "/" + d, ignore_errors=True)
    drop_caches()
    c0 = children_cpu()
    t0 = time.perf_counter()
    sh("skopeo", "copy", "-q", "--src-tls-verify=false", "docker://" + r, "oci:" + T + "/oci:latest")
    sh("umoci", "unpack", "--image", T + "/oci:latest", T + "/bundle")
    chroot_run(T + "/bundle/rootfs")
    t = time.perf_counter() - t0
    cpu = children_cpu() - c0
    shutil.rmtree(T + "/oci")
    shutil.rmtree(T + "/bundle")
    return {"s": t, "cpu": cpu}


def med(rows, key):
    return statistics.median(r[key] for r in rows)


print(f"Image: {ref.rsplit('/', 2)[1]}/ml, medians of {runs} runs, every run from empty caches.\n")
print("### Cold `python3 /app/start.py` (import torch, sklearn, pandas)\n")
print("| link | case | s | vs reference | MB fetched | MB inflated | spans | requests | CPU s |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
links = [("loopback", ref, None)]
if wan_ref:
    links.append(("200 Mbit/s + 10 ms/request", wan_ref, wan_ref.rsplit(":", 1)[0]))
node_a = {}
profile = T + "/ml.profile"
note("recording a startup profile")
clip_cold(None, ["--record-profile", profile])
note(sh(clip, "profile", "show", profile).stdout.decode().strip())
optimized = T + "/ml-opt.clip"
t0 = time.perf_counter()
opt_report = sh(clip, "optimize", archive, "--profile", profile, "-o", optimized).stdout.decode()
opt_s = time.perf_counter() - t0
note(opt_report.strip())
note("warm floor")
clip_cold()
warm = [clip_cold(keep=True) for _ in range(runs)]
row = lambda name, case, c, ref_s, ref_name: print(
    f"| {name} | {case} | {med(c, 's'):.2f} | "
    f"{med(c, 's') / ref_s:.3f}x {ref_name} | {med(c, 'fetched') / 1e6:.0f} | "
    f"{med(c, 'inflated') / 1e6:.0f} | {med(c, 'spans'):.0f} | {med(c, 'requests'):.0f} | "
    f"{med(c, 'cpu'):.1f} |")
for name, r, source in links:
    note(name, "clip")
    c = [clip_cold(source) for _ in range(runs)]
    node_a[name] = med(c, "s")
    note(name, "clip --profile")
    cp = [clip_cold(source, ["--profile", profile]) for _ in range(runs)]
    note(name, "clip, optimized archive")
    co = [clip_cold(source, arch=optimized) for _ in range(runs)]
    note(name, "another program, plain and optimized archive")
    other = [clip_cold(source, cmd=OTHER) for _ in range(runs)]
    other_o = [clip_cold(source, arch=optimized, cmd=OTHER) for _ in range(runs)]
    note(name, "skopeo + umoci")
    s = [skopeo_cold(r) for _ in range(runs)]
    p = []
    if use_podman:
        note(name, "podman")
        p = [podman_cold(r) for _ in range(runs)]
    ref_s = med(p, "pull") if p else med(s, "s")
    ref_name = "podman pull" if p else "skopeo+umoci"
    row(name, "clip mount + run", c, ref_s, ref_name)
    print(f"| {name} | clip mount + run vs skopeo+umoci | | {med(c, 's') / med(s, 's'):.3f}x "
          f"skopeo+umoci | | | | | |")
    row(name, "clip mount --profile + run", cp, ref_s, ref_name)
    print(f"| {name} | clip mount --profile + run vs skopeo+umoci | | "
          f"{med(cp, 's') / med(s, 's'):.3f}x skopeo+umoci | | | | | |")
    row(name, "clip optimized archive + run", co, ref_s, ref_name)
    print(f"| {name} | clip optimized archive + run vs skopeo+umoci | | "
          f"{med(co, 's') / med(s, 's'):.3f}x skopeo+umoci | | | | | |")
    row(name, "another program (import json), plain archive", other, ref_s, ref_name)
    row(name, "another program (import json), optimized archive", other_o, ref_s, ref_name)
    if name == "loopback":
        row(name, "clip, warm floor (all in the disk cache)", warm, ref_s, ref_name)
    if p:
        print(f"| {name} | podman pull | {med(p, 'pull'):.2f} | 1.000 | | | | | |")
        print(f"| {name} | podman pull + run | {med(p, 's'):.2f} | "
              f"{med(p, 's') / ref_s:.3f} | | | | | {med(p, 'cpu'):.1f} |")
    print(f"| {name} | skopeo copy + umoci unpack + run | {med(s, 's'):.2f} | "
          f"{med(s, 's') / ref_s:.3f} | | | | | {med(s, 'cpu'):.1f} |")
print()
print("Targets: loopback clip <= 0.2x podman pull; 200 Mbit/s clip <= 0.3x skopeo+umoci; "
      "optimized: loopback <= 0.1x podman pull, 200 Mbit/s <= 0.08x skopeo+umoci.\n")
print(f"`clip optimize` of the archive for the recorded profile ({opt_s:.1f} s):\n")
print("```")
print(opt_report.strip())
print("```\n")

# Node B: Redis filled by node A (whose unmount waits for its queued stores).
name, r, source = links[-1]
note("node B from Redis")
redis_cache = T + "/cache-a"
shutil.rmtree(redis_cache, ignore_errors=True)
sh("redis-cli", "-u", redis, "flushall")
a = clip_cold(source, ["--remote-cache", redis], cache=redis_cache)
b = []
for _ in range(runs):
    b.append(clip_cold(source, ["--remote-cache", redis]))
bp = [clip_cold(source, ["--remote-cache", redis, "--profile", profile]) for _ in range(runs)]
print(f"### Node B over the {name} link, with a Redis on 127.0.0.1 that node A filled\n")
print("| node | s | vs node A on loopback | registry MB |")
print("|---|---:|---:|---:|")
print(f"| node A (registry + filling Redis) | {a['s']:.2f} | "
      f"{a['s'] / node_a['loopback']:.2f} | {a['fetched'] / 1e6:.0f} |")
print(f"| node B (Redis) | {med(b, 's'):.2f} | {med(b, 's') / node_a['loopback']:.3f} "
      f"(target <= 0.1) | {max(x['fetched'] for x in b) / 1e6:.1f} (target 0) |")
print(f"| node B (Redis) --profile | {med(bp, 's'):.2f} | {med(bp, 's') / node_a['loopback']:.3f} "
      f"| {max(x['fetched'] for x in bp) / 1e6:.1f} |")
print(f"| warm floor, loopback | {med(warm, 's'):.2f} | {med(warm, 's') / node_a['loopback']:.3f} "
      f"| 0 |")
print()

# Hydration of the largest layer.
note("hydration")
manifest = json.loads(sh("skopeo", "inspect", "--raw", "--tls-verify=false", "docker://" + ref).stdout)
big = max(manifest["layers"], key=lambda l: l["size"])
idx = manifest["layers"].index(big)
url = f"http://{ref.split('/')[0]}/v2/bench/ml/blobs/{big['digest']}"


def hydrate():
    cache = T + "/cache"
    shutil.rmtree(cache, ignore_errors=True)
    drop_caches()
    t0 = time.perf_counter()
    m = Mount(cache, None, ["--prefetch"])
    while not m.stats()["layers"][idx]["hydrated"]:
        time.sleep(0.02)
    t = time.perf_counter() - t0
    return {"s": t, "cpu": m.close()}


def curl_igzip():
    drop_caches()
    c0 = children_cpu()
    t0 = time.perf_counter()
    subprocess.run(f"curl -fs {url} | igzip -dc >/dev/null", shell=True, check=True)
    return {"s": time.perf_counter() - t0, "cpu": children_cpu() - c0}


hs = [hydrate() for _ in range(runs)]
cis = [curl_igzip() for _ in range(runs)]
h, ci = med(hs, "s"), med(cis, "s")
print(f"### Hydrating the largest layer ({big['size'] / 1e6:.0f} MB) into the disk cache, loopback\n")
print("| case | s | ratio | CPU s |")
print("|---|---:|---:|---:|")
print(f"| `curl BLOB \\| igzip -dc >/dev/null` | {ci:.2f} | 1.00 | {med(cis, 'cpu'):.1f} |")
print(f"| clip mount --prefetch until the layer is cached | {h:.2f} | {h / ci:.2f} (target <= 1.0) "
      f"| {med(hs, 'cpu'):.1f} |")
PY
