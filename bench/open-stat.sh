#!/bin/bash
# bench/open-stat.sh: how long opening an archive and stat-ing every path takes.
#
# usage: bench/open-stat.sh [--image LAYOUT] [--runs N] [--files N]
#
#   --image LAYOUT  the Debian test image (scripts/build-test-image); default: $CLIP_BENCH_IMAGE,
#                   else it is built into a temp dir (needs root; cached base, ~15 s)
#   --runs N        timed runs per command after one warm-up (default: 10); medians reported
#   --files N       regular files in the synthetic image (default: 100000)
#
# Two images, each indexed once first:
#   - the Debian test image;
#   - a synthetic one-layer image of N small files (1000 per directory) made with umoci.
# Timed for each (hyperfine, same run):
#   clip info A                          open the archive, print the summary
#   clip ls -R --manifest A > /dev/null  open it and stat every path
#   tar -tvzf BLOB... > /dev/null        the reference: list the same layers from the blobs
# and, for the synthetic image, clip index itself.
# Prints a markdown table on stdout; progress on stderr.
#
# Needs: hyperfine, umoci, GNU tar, gzip, python3, the clip binary ($CLIP, default build/clip).
# On Debian: apt-get install hyperfine umoci tar gzip python3

set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
CLIP=${CLIP:-$here/build/clip}
image=${CLIP_BENCH_IMAGE:-}
runs=10
nfiles=100000
while [ $# -gt 0 ]; do
	case $1 in
	--image) image=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--files) nfiles=$2; shift 2 ;;
	*) sed -n '3,9s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
	esac
done

die() { printf 'open-stat.sh: %s\n' "$*" >&2; exit 1; }
for tool in hyperfine umoci tar gzip python3; do
	command -v "$tool" >/dev/null ||
		die "$tool not found (on Debian: apt-get install hyperfine umoci tar gzip python3)"
done
[ -x "$CLIP" ] || die "no clip binary at $CLIP (build it, or set CLIP)"

T=$(mktemp -d "${TMPDIR:-/tmp}/clip-bench-open.XXXXXX")
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM

if [ -z "$image" ]; then
	echo "open-stat.sh: building the test image" >&2
	image=$("$here/scripts/build-test-image" "$T/image")
fi

# layer_blobs LAYOUT: the blob paths of the layers of "latest", bottom first.
layer_blobs() {
	python3 - "$1" <<'PY'
import json, sys
layout = sys.argv[1]
def path(digest):
    algo, hexd = digest.split(":")
    return "%s/blobs/%s/%s" % (layout, algo, hexd)
index = json.load(open(layout + "/index.json"))
desc = [d for d in index["manifests"]
        if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == "latest"][0]
for layer in json.load(open(path(desc["digest"])))["layers"]:
    print(path(layer["digest"]))
PY
}

echo "open-stat.sh: building the synthetic image ($nfiles files)" >&2
python3 - "$T/synthetic.tar" "$nfiles" <<'PY'
import io, sys, tarfile
out, n = sys.argv[1], int(sys.argv[2])
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
    for i in range(n):
        if i % 1000 == 0:
            d = tarfile.TarInfo("data/d%04d" % (i // 1000))
            d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            tar.addfile(d)
        data = b"file %d\n" % i
        f = tarfile.TarInfo("data/d%04d/f%06d" % (i // 1000, i))
        f.size, f.mode, f.mtime = len(data), 0o644, 1700000000
        tar.addfile(f, io.BytesIO(data))
PY
synthetic=$T/synthetic
umoci init --layout "$synthetic"
umoci new --image "$synthetic:latest"
umoci raw add-layer --image "$synthetic:latest" "$T/synthetic.tar"
rm "$T/synthetic.tar"

: >"$T/rows"
# bench NAME LAYOUT ARCHIVE EXTRA-HYPERFINE-ARGS...: time info, ls -R and tar -tvzf; append rows.
bench() {
	local name=$1 layout=$2 archive=$3
	shift 3
	local blobs
	blobs=$(layer_blobs "$layout" | tr '\n' ' ')
	echo "open-stat.sh: timing $name ($runs runs each)" >&2
	hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$T/h.json" \
		--command-name "clip info" "$CLIP info $archive" \
		--command-name "clip ls -R --manifest" "$CLIP ls -R --manifest $archive > /dev/null" \
		--command-name "tar -tvzf (reference)" \
		"for b in $blobs; do tar -tvzf \$b || exit 1; done > /dev/null" \
		"$@" >&2
	local entries
	entries=$("$CLIP" ls -R --manifest "$archive" | wc -l)
	python3 - "$T/h.json" "$name" "$entries" "$(stat -c %s "$archive")" <<'PY' >>"$T/rows"
import json, sys
path, name, entries, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
results = json.load(open(path))["results"]
ref = [r for r in results if r["command"] == "tar -tvzf (reference)"][0]["median"]
for r in results:
    print("| %s | %s | %.4f | %.4f–%.4f | %.3f |" % (
        name, r["command"], r["median"], r["min"], r["max"], r["median"] / ref))
print("| %s | %d paths, archive %d B | | | |" % (name, entries, size))
PY
}

"$CLIP" index "oci:$image:latest" -o "$T/debian.clip" --quiet
bench "Debian test image" "$image" "$T/debian.clip"
"$CLIP" index "oci:$synthetic:latest" -o "$T/synthetic.clip" --quiet
bench "synthetic, $nfiles files" "$synthetic" "$T/synthetic.clip" \
	--command-name "clip index" \
	"$CLIP index oci:$synthetic:latest -o $T/synthetic-again.clip --quiet"

echo "### open and stat (median of $runs runs, seconds)"
echo
echo "Ratio: the command's median time over the reference's, \`tar -tvzf\` of the same layer blobs."
echo
echo "| image | command | median s | min–max s | ratio vs tar -tvzf |"
echo "|---|---|---:|---:|---:|"
cat "$T/rows"
