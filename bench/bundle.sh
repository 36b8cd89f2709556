#!/bin/bash
# bench/bundle.sh: time to first program under runc from nothing, clip bundle next to pulling and
# unpacking.
#
# usage: bench/bundle.sh [--image LAYOUT] [--ml-image LAYOUT] [--no-ml] [--runs N]
#
#   --image LAYOUT     the Debian test image (scripts/build-test-image); default:
#                      $CLIP_BENCH_IMAGE, else built into a temp dir
#   --ml-image LAYOUT  the large AI image (scripts/build-ml-image); default: $CLIP_BENCH_ML_IMAGE,
#                      else built (cached by the script afterwards)
#   --no-ml            only the Debian image
#   --runs N           runs of each timed case (default 3); medians are reported
#
# Each image is pushed to a docker-registry on 127.0.0.1 and indexed from there once (the
# archive is what a node is given). Then, in one run, with empty caches each time (the clip disk
# cache removed, the page cache dropped):
#   - clip bundle ARCHIVE BUNDLE -- PROGRAM + runc run (then runc's exit, clip unbundle not timed);
#   - clip mount + chroot MNT PROGRAM: the chroot figure of bench/mount.sh and large-image.sh;
#   - skopeo copy + umoci unpack + runc run of the same PROGRAM, from the same registry;
#   - clip bundle + runc run again with the archive `clip optimize` made from the profile of one
#     recorded start (recorded once before the timed runs).
# PROGRAM: `python3 -c 'print(1)'` on the Debian image, `python3 /app/start.py` (imports torch,
# sklearn and pandas) on the large one. Targets: bundle + runc <= 0.12x the reference, and within
# 10 % of clip's chroot time. Prints a markdown table on stdout; progress on stderr. Needs root.

set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
CLIP=${CLIP:-$here/build/clip}
image=${CLIP_BENCH_IMAGE:-}
ml_image=${CLIP_BENCH_ML_IMAGE:-}
ml=1
runs=3
while [ $# -gt 0 ]; do
	case $1 in
	--image) image=$2; shift 2 ;;
	--ml-image) ml_image=$2; shift 2 ;;
	--no-ml) ml=0; shift ;;
	--runs) runs=$2; shift 2 ;;
	*) sed -n '3,12s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
	esac
done
. "$here/bench/common.bash"
bench_init bundle
[ "$(id -u)" = 0 ] || bench_die "needs root (FUSE mounts, overlayfs, runc)"
for tool in docker-registry skopeo umoci runc python3 curl; do
	command -v "$tool" >/dev/null || bench_die "$tool not found (scripts/install-deps)"
done
[ -x "$CLIP" ] || bench_die "no clip binary at $CLIP (build it, or set CLIP)"

if [ -z "$image" ]; then
	bench_note "building the test image"
	image=$("$here/scripts/build-test-image" "$T/image")
fi
if [ "$ml" = 1 ] && [ -z "$ml_image" ]; then
	bench_note "building the large image (scripts/build-ml-image; cached afterwards)"
	ml_image=$("$here/scripts/build-ml-image" "$T/ml-image")
fi

bench_registry
cases=()
push() { # NAME LAYOUT
	local ref=127.0.0.1:$REG_PORT/bench/$1:latest
	bench_note "pushing and indexing $1"
	skopeo copy -q --dest-tls-verify=false "oci:$2:latest" "docker://$ref" >&2
	"$CLIP" index -q "$ref" -o "$T/$1.clip"
	cases+=("$1" "$ref")
}
push debian "$image"
[ "$ml" = 0 ] || push ml "$ml_image"

python3 - "$CLIP" "$T" "$runs" "${cases[@]}" <<'PY'
import json, os, shutil, statistics, subprocess, sys, time

clip, T, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
cases = list(zip(sys.argv[4::2], sys.argv[5::2]))
PROGRAMS = {
    "debian": ["/usr/bin/python3", "-c", "print(1)"],
    "ml": ["python3", "/app/start.py"],
}
LABELS = {"debian": "Debian test image, `python3 -c 'print(1)'`",
          "ml": "large AI image, `python3 /app/start.py`"}

def sh(*args, **kw):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)

def fresh():
    for d in ("cache", "oci", "ref-bundle", "bundle"):
        path = os.path.join(T, d)
        if os.path.ismount(os.path.join(path, "rootfs")) or os.path.ismount(os.path.join(path, "lower")):
            sh(clip, "unbundle", path)
        shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")

def bundle_run(name, program, archive=None):
    fresh()
    t0 = time.perf_counter()
    sh(clip, "bundle", "--cache-dir", T + "/cache", archive or f"{T}/{name}.clip", T + "/bundle",
       "--", *program)
    r = subprocess.run(["runc", "run", "-b", T + "/bundle", "bench-" + name],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t = time.perf_counter() - t0
    stats = json.loads(sh(clip, "stats", "--json", T + "/bundle/lower").stdout)
    sh(clip, "unbundle", T + "/bundle")
    assert r.returncode == 0, r.stderr
    return t, stats["source_bytes"]

def chroot_run(name, program, record=None):
    fresh()
    mnt = T + "/mnt"
    os.makedirs(mnt, exist_ok=True)
    t0 = time.perf_counter()
    sh(clip, "mount", f"{T}/{name}.clip", mnt, "--cache-dir", T + "/cache",
       *(["--record-profile", record] if record else []))
    # /proc and /dev, as a runtime gives them (and as large-image.sh does)
    sh("mount", "-t", "proc", "proc", mnt + "/proc")
    sh("mount", "--bind", "/dev", mnt + "/dev")
    r = subprocess.run(["chroot", mnt, *program], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t = time.perf_counter() - t0
    sh("umount", mnt + "/dev")
    sh("umount", mnt + "/proc")
    sh(clip, "umount", mnt)
    assert r.returncode == 0, r.stderr
    return t

def reference_run(name, ref, program):
    fresh()
    t0 = time.perf_counter()
    sh("skopeo", "copy", "-q", "--src-tls-verify=false", "docker://" + ref, f"oci:{T}/oci:latest")
    sh("umoci", "unpack", "--image", T + "/oci:latest", T + "/ref-bundle")
    config = T + "/ref-bundle/config.json"
    spec = json.load(open(config))
    spec["process"]["args"] = program
    spec["process"]["terminal"] = False
    json.dump(spec, open(config, "w"))
    r = subprocess.run(["runc", "run", "-b", T + "/ref-bundle", "bench-ref-" + name],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    return t

def optimized(name, program):
    """The archive as a user would publish it after one recorded start: `clip optimize` with
    the profile of that start (checkpoints around what it reads, the profile embedded, so
    that every mount replays it in parallel)."""
    profile = f"{T}/{name}.profile"
    chroot_run(name, program, record=profile)
    out = f"{T}/{name}-opt.clip"
    sh(clip, "optimize", f"{T}/{name}.clip", "--profile", profile, "-o", out)
    return out

print("### Time to first program under runc from nothing (loopback registry)\n")
print("| image | clip bundle + runc run (s) | MB fetched | clip mount + chroot (s) | "
      "skopeo + umoci unpack + runc run (s) | ratio (target <= 0.12) | bundle / chroot (target <= 1.10) "
      "| bundle, optimized archive (s) | its MB fetched | its ratio |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, ref in cases:
    program = PROGRAMS[name]
    opt = optimized(name, program)
    b, c, p, o = [], [], [], []
    for _ in range(runs):  # interleaved, so that drift on this shared machine hits all of them
        b.append(bundle_run(name, program))
        c.append(chroot_run(name, program))
        p.append(reference_run(name, ref, program))
        o.append(bundle_run(name, program, archive=opt))
        print(f"bundle.sh: {name}: bundle {b[-1][0]:.2f} s, chroot {c[-1]:.2f} s, "
              f"reference {p[-1]:.2f} s, bundle optimized {o[-1][0]:.2f} s", file=sys.stderr)
    bt = statistics.median(t for t, _ in b)
    mb = statistics.median(x for _, x in b) / 1e6
    ot = statistics.median(t for t, _ in o)
    omb = statistics.median(x for _, x in o) / 1e6
    ct, pt = statistics.median(c), statistics.median(p)
    print(f"| {LABELS[name]} | {bt:.3f} | {mb:.1f} | {ct:.3f} | {pt:.3f} | {bt / pt:.3f} | "
          f"{bt / ct:.3f} | {ot:.3f} | {omb:.1f} | {ot / pt:.3f} |")
print(f"\nMedians of {runs} runs, each from empty caches. The optimized archive is the plain one "
      "after `clip optimize` with the profile of one recorded start (`clip mount "
      "--record-profile`): what a user publishes with `clip push` once.")
PY
