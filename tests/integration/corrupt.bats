#!/usr/bin/env bats
# Never a wrong byte: a layer blob damaged after indexing (one byte flipped, or replaced by a
# valid blob of other bytes) is read through `clip cat` and through real FUSE mounts, with the
# cache chunk size of the archive and another one, through checkpoints and --no-checkpoints,
# twice over one shared disk cache. Every file read either fails cleanly or returns exactly the
# image's bytes; once the blob is repaired, every file reads right through that same cache.
#
# Layers: gzip level 0 (stored blocks, so a flipped byte inflates to a wrong byte instead of
# breaking the deflate stream), zstd and plain tar, each made from the sample image's layer.
#
# Needs: root, /dev/fuse, umoci, python3, GNU tar, gzip, zstd, findmnt and fusermount3.

load helpers

setup_file() {
	CLIP_SKIP_REASON=$(require_env /dev/fuse umoci python3 tar zstd findmnt fusermount3)
	export CLIP_SKIP_REASON
	[ -z "$CLIP_SKIP_REASON" ] || return 0
	W=$(make_workdir)
	export W
	"$CLIP_SOURCE_ROOT/scripts/build-sample-image" "$W/sample" >/dev/null
	umoci unpack --image "$W/sample:latest" "$W/bundle" >/dev/null
	"$CLIP_SOURCE_ROOT/scripts/tree-manifest" "$W/bundle/rootfs" >"$W/expected"
}

teardown_file() {
	[ -n "${W:-}" ] || return 0
	unmount_all "$W"
	remove_workdir "$W"
}

setup() {
	[ -z "${CLIP_SKIP_REASON:-}" ] || skip "$CLIP_SKIP_REASON"
	T=$(mktemp -d "$W/test.XXXXXX")
}

teardown() {
	[ -n "${T:-}" ] || return 0
	unmount_all "$T"
	rm -rf "$T"
}

unmount_all() {
	local m
	for m in $(findmnt -rn -o TARGET | grep "^$1/" || true); do
		fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
}

# recompress KIND: $T/img, the sample image with its first (largest) layer as KIND (stored-gzip,
# zstd or plain); prints that layer's blob path.
recompress() {
	cp -a "$W/sample" "$T/img"
	python3 - "$T/img" "$1" <<'PY'
import gzip, hashlib, json, subprocess, sys
d, kind = sys.argv[1], sys.argv[2]
def path(dg): return "%s/blobs/sha256/%s" % (d, dg[7:])
def put(data):
    dg = "sha256:" + hashlib.sha256(data).hexdigest()
    open(path(dg), "wb").write(data)
    return dg, len(data)
idx = json.load(open(d + "/index.json"))
desc = idx["manifests"][0]
man = json.load(open(path(desc["digest"])))
layer = man["layers"][0]
tar = gzip.decompress(open(path(layer["digest"]), "rb").read())
if kind == "stored-gzip":
    blob, mt = gzip.compress(tar, compresslevel=0, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
elif kind == "zstd":
    blob = subprocess.run(["zstd", "-q", "-c", "-3"], input=tar, check=True,
                          stdout=subprocess.PIPE).stdout
    mt = "application/vnd.oci.image.layer.v1.tar+zstd"
else:
    blob, mt = tar, "application/vnd.oci.image.layer.v1.tar"
layer["digest"], layer["size"] = put(blob)
layer["mediaType"] = mt
desc["digest"], desc["size"] = put(json.dumps(man).encode())
json.dump(idx, open(d + "/index.json", "w"))
print(path(layer["digest"]))
PY
}

# check_tree DIR: every regular file of the image read from DIR (a mount) equals the unpacked
# one or fails to read; prints "ok N failed M", and exits non-zero on any wrong byte.
check_tree() {
	python3 - "$1" "$W/bundle/rootfs" "$W/expected" <<'PY'
import os, sys
mnt, rootfs, manifest = sys.argv[1:]
ok = failed = 0
wrong = []
for line in open(manifest, "rb"):
    f = line.rstrip(b"\n").split(b"\t")
    if f[1] != b"f":
        continue
    p = f[0].decode()
    want = open(rootfs + p, "rb").read()
    try:
        got = open(mnt + p, "rb").read()
    except OSError:
        failed += 1
        continue
    if got == want:
        ok += 1
    else:
        wrong.append(p)
print("ok %d failed %d" % (ok, failed))
if wrong:
    print("WRONG BYTES: " + " ".join(wrong))
    sys.exit(1)
PY
}

# check_cat ARCHIVE: the same through `clip cat` (no cache), each file its own process.
check_cat() {
	local ok=0 failed=0 p
	while IFS=$'\t' read -r p type _; do
		[ "$type" = f ] || continue
		if "$CLIP" cat "$1" "$p" >"$T/out" 2>"$T/err"; then
			cmp -s "$T/out" "$W/bundle/rootfs$p" || {
				echo "WRONG BYTES: $p"
				return 1
			}
			ok=$((ok + 1))
		else
			# A clean failure: one "clip: ..." line.
			[ "$(wc -l <"$T/err")" -eq 1 ] && grep -q '^clip: ' "$T/err" || {
				cat "$T/err"
				return 1
			}
			failed=$((failed + 1))
		fi
	done <"$W/expected"
	echo "ok $ok failed $failed"
}

# read_twice ARCHIVE CACHE [mount options]: mount, read everything, unmount, twice over CACHE;
# prints the two check_tree lines.
read_twice() {
	local archive=$1 cache=$2 pass
	shift 2
	for pass in 1 2; do
		mkdir -p "$T/mnt"
		"$CLIP" mount "$archive" "$T/mnt" --cache-dir "$cache" "$@"
		check_tree "$T/mnt" || {
			"$CLIP" umount "$T/mnt"
			return 1
		}
		"$CLIP" umount "$T/mnt"
	done
}

# damaged KIND HOW: index the KIND image, damage its layer (HOW: flip or substitute), and read
# it every way; then repair it and read it right through the same caches.
damaged() {
	local kind=$1 how=$2 blob out
	blob=$(recompress "$kind")
	"$CLIP" index -q "oci:$T/img" -o "$T/a.clip"
	cp "$blob" "$T/good"
	if [ "$how" = flip ]; then
		flip_byte "$blob" $(($(stat -c %s "$blob") / 2))
	else
		# A valid blob of the same kind whose tar has one byte changed: it decodes cleanly.
		python3 - "$blob" "$kind" <<'PY'
import gzip, subprocess, sys
path, kind = sys.argv[1:]
raw = open(path, "rb").read()
if kind == "zstd":
    tar = subprocess.run(["zstd", "-dc"], input=raw, check=True, stdout=subprocess.PIPE).stdout
elif kind == "stored-gzip":
    tar = gzip.decompress(raw)
else:
    tar = raw
tar = bytearray(tar)
tar[len(tar) // 2] ^= 1
if kind == "zstd":
    out = subprocess.run(["zstd", "-q", "-c", "-3"], input=bytes(tar), check=True,
                         stdout=subprocess.PIPE).stdout
elif kind == "stored-gzip":
    out = gzip.compress(bytes(tar), compresslevel=0, mtime=0)
else:
    out = bytes(tar)
open(path, "wb").write(out)
PY
	fi
	local failures=0 opts line
	for opts in "" "--chunk-size 64K" "--no-checkpoints" "--no-checkpoints --chunk-size 96K"; do
		# shellcheck disable=SC2086
		out=$(read_twice "$T/a.clip" "$T/cache" $opts) || {
			echo "$kind/$how $opts: $out"
			return 1
		}
		echo "# $kind/$how ${opts:-(defaults)}: $(echo $out)" >&3
		while read -r line; do
			if [ "$(echo "$line" | cut -d' ' -f4)" -gt 0 ]; then
				failures=$((failures + 1))
			fi
		done <<<"$out"
	done
	out=$(check_cat "$T/a.clip") || {
		echo "$out"
		return 1
	}
	echo "# $kind/$how clip cat: $out" >&3
	[ "$(echo "$out" | cut -d' ' -f4)" -gt 0 ]
	# The damage was noticed on every pass of every mount.
	[ "$failures" -eq 8 ]
	# Repaired: everything right through the caches the damaged reads used.
	cp "$T/good" "$blob"
	for opts in "--chunk-size 64K" "--no-checkpoints --chunk-size 96K"; do
		# shellcheck disable=SC2086
		out=$(read_twice "$T/a.clip" "$T/cache" $opts)
		if [[ "$out" != *"failed 0"*"failed 0"* ]]; then
			echo "repaired $kind $opts: $out"
			return 1
		fi
	done
	check_cat "$T/a.clip" | grep -q 'failed 0$'
}

@test "a flipped byte in a stored-gzip layer: never a wrong byte, in any tier or chunk size" {
	damaged stored-gzip flip
}

@test "a flipped byte in a zstd layer: never a wrong byte, in any tier or chunk size" {
	damaged zstd flip
}

@test "a flipped byte in a plain tar layer: never a wrong byte, in any tier or chunk size" {
	damaged plain flip
}

# (A flipped byte in a plain tar is already a substitution.)
@test "a substituted gzip or zstd layer that decodes cleanly: never a wrong byte" {
	local kind
	for kind in stored-gzip zstd; do
		damaged "$kind" substitute
		unmount_all "$T"
		rm -rf "$T"/*
	done
}
