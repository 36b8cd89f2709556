#!/bin/bash
# bench/random-read.sh: cold random reads through gzip checkpoints, next to gztool.
#
# usage: bench/random-read.sh [--image LAYOUT] [--reads N] [--big-mib M]
#
#   --image LAYOUT  the Debian test image (scripts/build-test-image); default: $CLIP_BENCH_IMAGE,
#                   else it is built into a temp dir (needs root)
#   --reads N       random reads per layer (default 200)
#   --big-mib M     size of the synthetic layer's tar in MiB (default 1024)
#
# First the time to index the synthetic layer next to `gztool -i -s 2` on the same blob. Then:
# two single-gzip-layer images: the Debian image's largest layer, and a synthetic layer of
# M MiB (copies of the Debian rootfs tar plus incompressible data, gzip -6 by pigz).
# For each, in the same run and on the same (file, offset) pairs, every read a fresh process
# with the blob in the page cache:
#   clip      clip cat --offset O --length 4096 ARCHIVE PATH
#   gztool    gztool -W -b TAROFFSET -r 4096 COPY.gz      (index built with -s 2 beforehand)
# reporting p50/p99 latency and the clip/gztool ratio of the medians; then on the synthetic
# layer the last 4 KiB of the layer's last large file with and without checkpoints
# (--no-checkpoints), and for every file > 512 KiB the mean bytes inflated to read its first
# 4 KiB, with the before-large-file checkpoints and without (--large-file-threshold none).
# Prints markdown tables on stdout; progress on stderr.
#
# Needs: gztool, pigz, hyperfine, python3, umoci, the clip binary ($CLIP, default build/clip).

set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
CLIP=${CLIP:-$here/build/clip}
image=${CLIP_BENCH_IMAGE:-}
reads=200
big_mib=1024
while [ $# -gt 0 ]; do
	case $1 in
	--image) image=$2; shift 2 ;;
	--reads) reads=$2; shift 2 ;;
	--big-mib) big_mib=$2; shift 2 ;;
	*) sed -n '3,9s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
	esac
done
die() { printf 'random-read.sh: %s\n' "$*" >&2; exit 1; }
for tool in gztool pigz hyperfine python3 umoci; do
	command -v "$tool" >/dev/null || die "$tool not found (apt-get install $tool)"
done
[ -x "$CLIP" ] || die "no clip binary at $CLIP (build it, or set CLIP)"

T=$(mktemp -d "${TMPDIR:-/tmp}/clip-bench-read.XXXXXX")
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM

if [ -z "$image" ]; then
	echo "random-read.sh: building the test image" >&2
	image=$("$here/scripts/build-test-image" "$T/image")
fi

# layout_of_tar TAR DIR: a one-layer OCI layout whose layer is TAR compressed by pigz -6.
layout_of_tar() {
	local tar=$1 dir=$2
	umoci init --layout "$dir" >/dev/null
	pigz -6 -c "$tar" >"$T/layer.tar.gz"
	# umoci's own layer commands recompress; keep this gzip stream by writing the
	# manifest with python (digests computed here).
	python3 - "$dir" "$tar" "$T/layer.tar.gz" <<'PY'
import hashlib, json, os, sys
d, tar, gz = sys.argv[1:]
def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return "sha256:" + h.hexdigest()
def put_file(path):
    dg = sha(path)
    os.replace(path, "%s/blobs/sha256/%s" % (d, dg[7:]))
    return dg
def put(data):
    dg = "sha256:" + hashlib.sha256(data).hexdigest()
    open("%s/blobs/sha256/%s" % (d, dg[7:]), "wb").write(data)
    return dg
diff_id = sha(tar)
size = os.path.getsize(gz)
layer = put_file(gz)
config = json.dumps({"architecture": "amd64", "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {}}).encode()
cd = put(config)
manifest = json.dumps({"schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd,
               "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer,
                "size": size}]}).encode()
md = put(manifest)
json.dump({"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
    "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]},
    open(d + "/index.json", "w"))
print(layer)
PY
}

# The Debian image's largest layer as its own tar.
largest=$(python3 - "$image" <<'PY'
import json, sys
d = sys.argv[1]
def load(dg): return json.load(open("%s/blobs/sha256/%s" % (d, dg[7:])))
idx = json.load(open(d + "/index.json"))
desc = [m for m in idx["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "latest"][0]
layers = load(desc["digest"])["layers"]
print(max(layers, key=lambda l: l["size"])["digest"])
PY
)
blob="$image/blobs/sha256/${largest#sha256:}"
gzip -dc "$blob" >"$T/debian.tar"

echo "random-read.sh: building the synthetic ${big_mib} MiB layer" >&2
python3 - "$T/debian.tar" "$T/big.tar" "$big_mib" <<'PY'
# Copies of the Debian tree under d0/, d1/, ... plus a few incompressible files, as one tar.
import io, os, random, sys, tarfile
src, dst, mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
target = mib << 20
rnd = random.Random(7)
with tarfile.open(src) as t:
    members = [(m, t.extractfile(m).read() if m.isreg() else None) for m in t.getmembers()]
with tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as out:
    copy = 0
    while True:
        for m, data in members:
            m2 = tarfile.TarInfo("d%d/%s" % (copy, m.name))
            for k in ("mode", "uid", "gid", "mtime", "type", "linkname", "size"):
                setattr(m2, k, getattr(m, k))
            if m.islnk():
                m2.linkname = "d%d/%s" % (copy, m.linkname)
            if m.isdev():
                m2.devmajor, m2.devminor = m.devmajor, m.devminor
            out.addfile(m2, io.BytesIO(data) if data is not None else None)
        noise = tarfile.TarInfo("d%d/noise.bin" % copy)
        noise.size = 16 << 20
        out.addfile(noise, io.BytesIO(rnd.randbytes(noise.size)))
        copy += 1
        if out.fileobj.tell() >= target:
            break
PY
mkdir -p "$T/deb" "$T/big"
layout_of_tar "$T/debian.tar" "$T/deb/layout" >/dev/null
layout_of_tar "$T/big.tar" "$T/big/layout" >/dev/null
rm -f "$T/big.tar" "$T/debian.tar"

for name in deb big; do
	"$CLIP" index "oci:$T/$name/layout:latest" -o "$T/$name/a.clip" --quiet
	"$CLIP" index "oci:$T/$name/layout:latest" -o "$T/$name/nolarge.clip" --quiet \
		--large-file-threshold none
	b=$(ls -S "$T/$name/layout/blobs/sha256/" | head -n 1)
	cp "$T/$name/layout/blobs/sha256/$b" "$T/$name/copy.gz"
	gztool -i -s 2 "$T/$name/copy.gz" >/dev/null 2>&1
done

# Index time on the synthetic layer, next to gztool building its index of the same blob.
echo "random-read.sh: timing the index of the synthetic layer" >&2
hyperfine --style basic --warmup 1 --runs 3 --export-json "$T/index.json" \
	--command-name "clip index" --prepare "rm -f $T/big/t.clip" \
	"$CLIP index oci:$T/big/layout:latest -o $T/big/t.clip --quiet" \
	--command-name "gztool -i -s 2" --prepare "rm -f $T/big/copy.gzi" \
	"gztool -i -s 2 $T/big/copy.gz" >&2
gztool -i -s 2 "$T/big/copy.gz" >/dev/null 2>&1

python3 - "$CLIP" "$T" "$reads" <<'PY'
import os, random, re, statistics, subprocess, sys, time
clip, T, nreads = sys.argv[1], sys.argv[2], int(sys.argv[3])

def run(cmd):
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit("failed: %s: %s" % (" ".join(cmd), p.stderr.decode()))
    return dt, p.stdout, p.stderr

def files(archive):
    out = subprocess.run([clip, "ls", "-R", "--manifest", archive], check=True,
                         stdout=subprocess.PIPE).stdout.decode("utf-8", "surrogateescape")
    res = []
    for line in out.splitlines():
        f = line.split("\t")
        if f[1] == "f" and int(f[5]) >= 4096 and "\\" not in f[0]:
            res.append((f[0], int(f[5])))
    return res

def tar_offset(archive, path):
    out = subprocess.run([clip, "stat", archive, path], check=True,
                         stdout=subprocess.PIPE).stdout.decode()
    return int(re.search(r"Offset: (\d+)", out).group(1))

def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]

rows, extra = [], []
for name, label in (("deb", "Debian largest layer"), ("big", "synthetic layer")):
    archive = "%s/%s/a.clip" % (T, name)
    copy = "%s/%s/copy.gz" % (T, name)
    fl = files(archive)
    rnd = random.Random(42)
    weights = [s for _, s in fl]
    picks = []
    for path, size in rnd.choices(fl, weights=weights, k=nreads):
        off = rnd.randrange(0, size - 4096 + 1)
        picks.append((path, off, tar_offset(archive, path) + off))
    # Warm the page cache for both tools' inputs.
    run(["cat", archive, copy, copy + "i"])
    ct, gt, inflated = [], [], []
    for path, off, toff in picks:
        dt, data, err = run([clip, "cat", "--stats", "--offset", str(off), "--length", "4096",
                             archive, path])
        ct.append(dt)
        inflated.append(int(re.search(rb"bytes inflated: (\d+)", err).group(1)))
        dt2, data2, _ = run(["gztool", "-W", "-v", "0", "-b", str(toff), "-r", "4096", copy])
        gt.append(dt2)
        if data != data2:
            sys.exit("clip and gztool disagree at %s+%d" % (path, off))
    rows.append("| %s | clip cat | %.2f | %.2f | %.0f | %.2f |" % (
        label, 1e3 * pct(ct, 50), 1e3 * pct(ct, 99), statistics.mean(inflated),
        pct(ct, 50) / pct(gt, 50)))
    rows.append("| %s | gztool -b -r 4096 | %.2f | %.2f | | 1.00 |" % (
        label, 1e3 * pct(gt, 50), 1e3 * pct(gt, 99)))

    # First 4 KiB of every large file, with and without the before-large-file checkpoints.
    big = [(p, s) for p, s in fl if s > 512 * 1024]
    for variant, arch in (("with", archive), ("without", "%s/%s/nolarge.clip" % (T, name))):
        inf = []
        for path, _ in big:
            _, _, err = run([clip, "cat", "--stats", "--length", "4096", arch, path])
            inf.append(int(re.search(rb"bytes inflated: (\d+)", err).group(1)))
        extra.append("| %s | %d files > 512 KiB | %s large-file checkpoints | %.0f |" % (
            label, len(big), variant, statistics.mean(inf)))

    if name == "big":
        # The end of the layer: the last large file's last 4 KiB.
        path, size = max(fl, key=lambda f: tar_offset(archive, f[0]))
        off = size - 4096
        fast = [run([clip, "cat", "--offset", str(off), "--length", "4096", archive, path])[0]
                for _ in range(5)]
        slow = [run([clip, "cat", "--no-checkpoints", "--offset", str(off), "--length", "4096",
                     archive, path])[0] for _ in range(3)]
        end_row = "| %s | %.2f ms | %.0f ms | %.0f× |" % (
            path, 1e3 * statistics.median(fast), 1e3 * statistics.median(slow),
            statistics.median(slow) / statistics.median(fast))

import json
res = {r["command"]: r for r in json.load(open(T + "/index.json"))["results"]}
ci, gi = res["clip index"]["median"], res["gztool -i -s 2"]["median"]
print("### Index time on the synthetic layer (median of 3)")
print()
print("| tool | median s | ratio vs gztool |")
print("|---|---:|---:|")
print("| clip index | %.2f | %.2f |" % (ci, ci / gi))
print("| gztool -i -s 2 | %.2f | 1.00 |" % gi)
print()
print("### Cold random 4 KiB reads (%d per layer, a fresh process each)" % nreads)
print()
print("| layer | reader | p50 ms | p99 ms | mean bytes inflated | p50 ratio vs gztool |")
print("|---|---|---:|---:|---:|---:|")
print("\n".join(rows))
floor = [run(["true"])[0] for _ in range(nreads)]
print("| (process start floor) | `true`, spawned the same way | %.2f | %.2f | | |" % (
    1e3 * pct(floor, 50), 1e3 * pct(floor, 99)))
print()
print("### The end of the synthetic layer: checkpoints vs inflating from the start")
print()
print("| file | with checkpoints (median of 5) | --no-checkpoints (median of 3) | speed-up |")
print("|---|---:|---:|---:|")
print(end_row)
print()
print("### First 4 KiB of every large file: bytes inflated per read")
print()
print("| layer | files | checkpoints | mean bytes inflated |")
print("|---|---|---|---:|")
print("\n".join(extra))
PY
for name in deb big; do
	s=$(stat -c %s "$T/$name/layout/blobs/sha256/$(ls -S "$T/$name/layout/blobs/sha256/" | head -n 1)")
	a=$(stat -c %s "$T/$name/a.clip")
	echo
	k=$("$CLIP" info "$T/$name/a.clip" |
		awk '/^checkpoints:/ { n = $2 } /^windows:/ { w = $2 } /^pieces:/ { d = $2 + 0 }
			END { print 72 * n + w + 32 * d }')
	echo "Archive size, $name: $a B for a $s B layer ($(python3 -c "print('%.2f' % (100.0*$a/$s))") %);" \
		"of which checkpoints (records + windows + piece digests): $k B ($(python3 -c "print('%.2f' % (100.0*$k/$s))") %)."
done
