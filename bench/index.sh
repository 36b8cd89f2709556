#!/bin/bash
# bench/index.sh: how long `clip index` takes next to plain decompression and gztool's index.
#
# usage: bench/index.sh [--image LAYOUT] [--runs N]
#
#   --image LAYOUT  the Debian test image (scripts/build-test-image); default: $CLIP_BENCH_IMAGE,
#                   else it is built into a temp dir (needs root; cached base, ~15 s)
#   --runs N        timed runs per command, after one warm-up (default: 5); medians are reported
#
# Two targets: the image's largest layer alone (a one-layer copy of the layout that shares the
# blob) and the whole image. For each, in the same run:
#   clip index        clip index oci:LAYOUT -o OUT.clip --quiet
#   gzip -dc          gzip -dc BLOB... > /dev/null            (the floor: inflate only)
#   pigz -dc          pigz -dc BLOB... > /dev/null            (if installed)
#   gztool -i -s 2    gztool -i -s 2 COPY                     (on copies of the blobs, since gztool
#                                                              writes COPY.gzi next to them)
# then the archive's size next to the compressed size of what it indexes.
# Prints a markdown table on stdout; progress on stderr.
#
# Needs: hyperfine, gzip, gztool, python3, the clip binary ($CLIP, default build/clip).
# On Debian: apt-get install hyperfine gzip gztool python3 (pigz optional).

set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
CLIP=${CLIP:-$here/build/clip}
image=${CLIP_BENCH_IMAGE:-}
runs=5
while [ $# -gt 0 ]; do
	case $1 in
	--image) image=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	*) sed -n '3,9s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
	esac
done

die() { printf 'index.sh: %s\n' "$*" >&2; exit 1; }
for tool in hyperfine gzip gztool python3; do
	command -v "$tool" >/dev/null ||
		die "$tool not found (on Debian: apt-get install hyperfine gzip gztool python3)"
done
[ -x "$CLIP" ] || die "no clip binary at $CLIP (build it, or set CLIP)"

T=$(mktemp -d "${TMPDIR:-/tmp}/clip-bench-index.XXXXXX")
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM

if [ -z "$image" ]; then
	echo "index.sh: building the test image" >&2
	image=$("$here/scripts/build-test-image" "$T/image")
fi

# Layer digests of "latest", bottom first, and a one-layer layout of the largest one
# (blobs hard-linked when possible).
python3 - "$image" "$T/one" <<'PY' >"$T/layers"
import hashlib, json, os, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
def blob_path(layout, digest):
    algo, hexd = digest.split(":")
    return "%s/blobs/%s/%s" % (layout, algo, hexd)
def load(digest):
    return json.load(open(blob_path(src, digest)))
index = json.load(open(src + "/index.json"))
desc = [d for d in index["manifests"]
        if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == "latest"][0]
manifest = load(desc["digest"])
config = load(manifest["config"]["digest"])
layers = manifest["layers"]
for l in layers:
    print(l["digest"], l["size"])
i = max(range(len(layers)), key=lambda k: layers[k]["size"])
os.makedirs(dst + "/blobs/sha256")
shutil.copy(src + "/oci-layout", dst + "/oci-layout")
def put(data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    open(blob_path(dst, digest), "wb").write(data)
    return digest
config["rootfs"]["diff_ids"] = [config["rootfs"]["diff_ids"][i]]
config.pop("history", None)
cbytes = json.dumps(config).encode()
manifest["config"] = dict(manifest["config"], digest=put(cbytes), size=len(cbytes))
manifest["layers"] = [layers[i]]
try:
    os.link(blob_path(src, layers[i]["digest"]), blob_path(dst, layers[i]["digest"]))
except OSError:
    shutil.copy(blob_path(src, layers[i]["digest"]), blob_path(dst, layers[i]["digest"]))
mbytes = json.dumps(manifest).encode()
json.dump({"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(mbytes),
    "size": len(mbytes), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]},
    open(dst + "/index.json", "w"))
PY

blob() { echo "$1/blobs/${2%%:*}/${2#*:}"; }
largest=$(sort -k2,2n "$T/layers" | tail -n 1)
largest_digest=${largest%% *}
largest_size=${largest##* }

# bench DIR NAME LAYOUT COMPRESSED-BYTES BLOB...: time the tools on these blobs (scratch files in
# $T/DIR), append table rows.
bench() {
	local dir=$1 name=$2 layout=$3 csize=$4
	shift 4
	local copies=() b n=0 gzis=()
	mkdir -p "$T/$dir"
	for b in "$@"; do
		n=$((n + 1))
		cp "$b" "$T/$dir/layer$n.gz"
		copies+=("$T/$dir/layer$n.gz")
		gzis+=("$T/$dir/layer$n.gzi")
	done
	local -a cmds=(
		--command-name "clip index" --prepare "rm -f $T/$dir/out.clip"
		"$CLIP index oci:$layout:latest -o $T/$dir/out.clip --quiet"
		--command-name "gzip -dc" --prepare true "gzip -dc $* > /dev/null"
	)
	if command -v pigz >/dev/null; then
		cmds+=(--command-name "pigz -dc" --prepare true "pigz -dc $* > /dev/null")
	fi
	local gz="for f in ${copies[*]}; do gztool -i -s 2 \$f || exit 1; done"
	cmds+=(--command-name "gztool -i -s 2" --prepare "rm -f ${gzis[*]}" "$gz")
	echo "index.sh: timing $name ($runs runs each)" >&2
	hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$T/$dir.json" \
		"${cmds[@]}" >&2
	# The checkpoints' share of the archive (what gztool's .gzi holds): 72-byte records
	# (docs/FORMAT.md) plus the stored windows, as `clip info` counts them, plus the 32-byte
	# piece digests that reads verify the compressed bytes against.
	local ckpt
	ckpt=$("$CLIP" info "$T/$dir/out.clip" |
		awk '/^checkpoints:/ { n = $2 } /^windows:/ { w = $2 } /^pieces:/ { d = $2 + 0 }
			END { print 72 * n + w + 32 * d }')
	python3 - "$T/$dir.json" "$name" "$csize" "$(stat -c %s "$T/$dir/out.clip")" \
		"$(cat "${gzis[@]}" | wc -c)" "$ckpt" <<'PY' >>"$T/rows"
import json, sys
path, name, csize, archive, gzi, ckpt = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
results = json.load(open(path))["results"]
clip = [r for r in results if r["command"] == "clip index"][0]["median"]
for r in results:
    print("| %s | %s | %.3f | %.3f–%.3f | %.2f |" % (
        name, r["command"], r["median"], r["min"], r["max"], r["median"] / clip))
print("| %s | archive size vs compressed layers | %d B vs %d B | | %.2f %% |" % (
    name, archive, csize, 100.0 * archive / csize))
print("| %s | of which checkpoints (records + windows + piece digests) | %d B | | %.2f %% |" % (
    name, ckpt, 100.0 * ckpt / csize))
print("| %s | gztool index size (.gzi, -s 2) | %d B | | %.2f %% |" % (
    name, gzi, 100.0 * gzi / csize))
PY
}

: >"$T/rows"
bench largest "largest layer" "$T/one" "$largest_size" "$(blob "$image" "$largest_digest")"
all_blobs=()
total=0
while read -r d s; do
	all_blobs+=("$(blob "$image" "$d")")
	total=$((total + s))
done <"$T/layers"
bench whole "whole image ($(wc -l <"$T/layers") layers)" "$image" "$total" "${all_blobs[@]}"

echo "### clip index vs decompression (median of $runs runs, seconds)"
echo
echo "Largest layer: $largest_digest, $largest_size bytes compressed."
echo "Ratio: the tool's median time over clip index's (< 1: faster than clip)."
echo
echo "| target | tool | median s | min–max s | ratio vs clip |"
echo "|---|---|---:|---:|---:|"
cat "$T/rows"
