#!/bin/bash
# bench/artifact.sh: a fresh node mounting an image by reference when its archive is in the
# registry (clip push), next to the node indexing the image itself, on loopback and over a slow
# link.
#
# usage: bench/artifact.sh [--image LAYOUT]... [--runs N] [--no-wan] [--path PATH]
#
#   --image LAYOUT  an OCI layout (its 'latest' tag); repeat for several images. Default: the
#                   image of scripts/build-ml-image ($CLIP_BENCH_ML_IMAGE, else built)
#   --runs N        runs of each timed case (default 3); medians are reported
#   --no-wan        skip the simulated link (200 Mbit/s + 10 ms per request, bench/common.bash)
#   --path PATH     the file whose stat means "the mount serves" (default usr/bin/python3;
#                   an image without it: a listing of the root)
#
# Each image is pushed (skopeo) to a docker-registry 2.8 on 127.0.0.1, which has no referrers
# API, so clip keeps the sha256-<hex> referrers tag. Then, for each link, every run with dropped
# page caches:
#   1. `clip index REF -o X.clip`: the node indexing the image itself (full download + inflate);
#   2. `clip push X.clip --to LINK/REPO` of the archive indexed on loopback (the same artifact
#      every time, so pushing again only checks and re-tags): timed once per link;
#   3. a fresh node: `clip mount REF MNT --cache-dir EMPTY --no-index` from an empty cache dir,
#      until stat MNT/PATH succeeds ("serves"), then until the first 4 KiB of PATH are read
#      (one span fetched and inflated from the registry); the archive's origin, bytes and
#      seconds from `clip stats --json`; `clip umount` after each run. Then the same without
#      dropping page caches (the clip binary, its libraries and the registry's files in memory:
#      what the node's clip itself costs; still an empty cache dir).
# The ratio is mount-by-reference / index (target <= 0.05 on both links).
# Prints markdown tables on stdout; progress on stderr. Needs root.
#
# Needs: docker-registry, skopeo, curl, python3, ip, tc, and the clip binary ($CLIP).

set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
CLIP=${CLIP:-$here/build/clip}
images=()
runs=3
wan=1
path=usr/bin/python3
while [ $# -gt 0 ]; do
	case $1 in
	--image) images+=("$2"); shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--no-wan) wan=0; shift ;;
	--path) path=$2; shift 2 ;;
	*) sed -n '6,13s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
	esac
done
# shellcheck source-path=SCRIPTDIR source=common.bash disable=SC1091
. "$here/bench/common.bash"
bench_init artifact
[ "$(id -u)" = 0 ] || bench_die "needs root (FUSE mounts, dropping caches, network namespaces)"
for tool in docker-registry skopeo curl python3 ip tc; do
	command -v "$tool" >/dev/null || bench_die "$tool not found (scripts/install-deps)"
done
[ -x "$CLIP" ] || bench_die "no clip binary at $CLIP (build it, or set CLIP)"
# Nothing of this machine's own clip caches is read or written.
export XDG_CACHE_HOME=$T/xdg

if [ ${#images[@]} = 0 ]; then
	if [ -n "${CLIP_BENCH_ML_IMAGE:-}" ]; then
		images=("$CLIP_BENCH_ML_IMAGE")
	else
		bench_note "building the large image (scripts/build-ml-image; cached afterwards)"
		images=("$("$here/scripts/build-ml-image" "$T/image")")
	fi
fi

bench_registry
repos=()
for image in "${images[@]}"; do
	[ -f "$image/index.json" ] || bench_die "$image: not an OCI layout"
	name=$(basename "$image" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9\n' '-')
	repos+=("bench/$name")
	bench_note "pushing $image as bench/$name:latest"
	skopeo copy -q --dest-tls-verify=false "oci:$image:latest" \
		"docker://127.0.0.1:$REG_PORT/bench/$name:latest" >&2
done
wan_host=
if [ "$wan" = 1 ]; then
	bench_wan
	wan_host=127.0.0.1:$WAN_PORT
fi

python3 - "$CLIP" "$T" "$runs" "127.0.0.1:$REG_PORT" "$wan_host" "$path" "${repos[@]}" <<'PY'
import json, os, statistics, subprocess, sys, time

clip, T, runs, loop_host, wan_host, path = sys.argv[1:7]
runs, repos = int(runs), sys.argv[7:]
mnt = T + "/mnt"
os.makedirs(mnt, exist_ok=True)


def note(*a):
    print("artifact:", *a, file=sys.stderr, flush=True)


def sh(*args):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def drop_caches():
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def index(ref, out):
    drop_caches()
    t0 = time.perf_counter()
    sh(clip, "index", "-q", ref, "-o", out)
    return time.perf_counter() - t0


def push(archive, repo):
    drop_caches()
    t0 = time.perf_counter()
    sh(clip, "push", "-q", archive, "--to", repo)
    return time.perf_counter() - t0


def mount_by_ref(ref, run, cold=True):
    cache = f"{T}/node-{run}"
    subprocess.run(["rm", "-rf", cache], check=True)
    if cold:
        drop_caches()
    t0 = time.perf_counter()
    p = subprocess.run([clip, "mount", ref, mnt, "--cache-dir", cache, "--no-index"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise SystemExit(f"clip mount {ref} failed ({p.returncode}): {p.stderr.decode().strip()}")
    try:
        target = os.path.join(mnt, path)
        has_path = os.path.lexists(target)
        if has_path:
            os.stat(target)
        else:
            os.listdir(mnt)
        serves = time.perf_counter() - t0
        first = None
        if has_path:
            with open(target, "rb") as f:
                assert len(f.read(4096)) > 0
            first = time.perf_counter() - t0
        st = json.loads(sh(clip, "stats", "--json", mnt).stdout)
    finally:
        sh(clip, "umount", mnt)
    subprocess.run(["rm", "-rf", cache], check=True)
    return {"serves": serves, "first": first, "origin": st.get("archive_origin"),
            "fetched": st.get("archive_fetched_bytes"), "archive_s": st.get("archive_seconds"),
            "requests": st.get("archive_registry_requests"), "source": st.get("source_bytes")}


def med(rows, key):
    vals = [r[key] for r in rows if r[key] is not None]
    return statistics.median(vals) if vals else None


def fmt(v, spec):
    return "" if v is None else format(v, spec)


links = [("loopback", loop_host)]
if wan_host:
    links.append(("200 Mbit/s + 10 ms/request", wan_host))
rows, details, notes = [], [], []
for repo in repos:
    manifest = json.loads(sh("skopeo", "inspect", "--raw", "--tls-verify=false",
                             f"docker://{loop_host}/{repo}:latest").stdout)
    image_mb = sum(l["size"] for l in manifest["layers"]) / 1e6
    nlayers = len(manifest["layers"])
    archive = f"{T}/{repo.replace('/', '-')}.clip"
    for link, host in links:
        ref = f"{host}/{repo}:latest"
        note(repo, link, "clip index")
        idx = [index(ref, f"{T}/index-out.clip") for _ in range(runs)]
        if link == "loopback":
            os.replace(f"{T}/index-out.clip", archive)
        note(repo, link, "clip push")
        push_s = push(archive, f"{host}/{repo}")
        note(repo, link, "fresh node: clip mount by reference")
        m = [mount_by_ref(ref, i) for i in range(runs)]
        note(repo, link, "the same, page caches warm")
        w = [mount_by_ref(ref, i, cold=False) for i in range(runs)]
        origins = sorted({r["origin"] for r in m + w})
        if origins != ["registry"]:
            notes.append(f"{repo} over {link}: archive origin {', '.join(map(str, origins))}, "
                         "not registry")
        i_s, serves, first = statistics.median(idx), med(m, "serves"), med(m, "first")
        fetched = med(m, "fetched")
        name = f"{repo} ({nlayers} layers, {image_mb:.0f} MB)"
        rows.append(f"| {name} | {link} | {i_s:.2f} | {serves:.3f} | {serves / i_s:.4f} | "
                    f"{os.path.getsize(archive) / 1e6:.2f} | "
                    f"{fmt(fetched and fetched / 1e6, '.2f')} | {push_s:.2f} |")
        details.append(f"| {name} | {link} | {fmt(first, '.3f')} | "
                       f"{fmt(first and first / i_s, '.4f')} | {med(w, 'serves'):.3f} | "
                       f"{med(w, 'serves') / i_s:.4f} | {fmt(med(m, 'archive_s'), '.3f')} / "
                       f"{fmt(med(w, 'archive_s'), '.3f')} | {fmt(med(m, 'requests'), '.0f')} |")

print(f"Medians of {runs} runs; every mount from an empty cache dir, page caches dropped before "
      "each run unless said.\n")
print("| image | link | clip index s | mount by ref, serves s | ratio (target <= 0.05) | "
      "archive MB | archive MB fetched | clip push s |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(r)
print()
print(f"| image | link | + first 4 KiB of {path} s | ratio | serves, page caches warm s | "
      "ratio | archive s in the daemon (cold / warm) | archive registry requests |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for r in details:
    print(r)
print()
for n in notes:
    print(f"- {n}")
PY
