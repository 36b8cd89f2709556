#!/usr/bin/env bats
# The read tiers behind `clip cat --cache-dir`: chunks produced from checkpoint spans, from
# whole layers (zstd, plain tar, --no-checkpoints) and from the disk cache, checked against the
# unpacked images; a corrupted or truncated cache chunk is refetched, never served; an archive
# of format version 1 (no chunk hashes) still opens and reads; a mount whose cache directory is
# on a full disk still inflates each span about once.

load helpers

setup_file() {
	CLIP_SKIP_REASON=$(require_env umoci python3 tar zstd)
	export CLIP_SKIP_REASON
	[ -z "$CLIP_SKIP_REASON" ] || return 0
	W=$(make_workdir)
	export W
	"$CLIP_SOURCE_ROOT/scripts/build-sample-image" "$W/sample" >/dev/null
	umoci unpack --image "$W/sample:latest" "$W/bundle" >/dev/null
	"$CLIP_SOURCE_ROOT/scripts/tree-manifest" "$W/bundle/rootfs" >"$W/expected"
	"$CLIP" index -q "oci:$W/sample" -o "$W/sample.clip"
}

teardown_file() {
	remove_workdir "${W:-}"
}

setup() {
	[ -z "${CLIP_SKIP_REASON:-}" ] || skip "$CLIP_SKIP_REASON"
	T=$(mktemp -d "$W/test.XXXXXX")
	# `clip cat` through a disk cache, for manifest_tool cat-check.
	cat >"$T/clip-cached" <<EOF
#!/bin/sh
exec "$CLIP" "\$@" --cache-dir "$T/cache"
EOF
	chmod +x "$T/clip-cached"
}

teardown() {
	[ -n "${T:-}" ] || return 0
	# A mount below $T (a FUSE mount, then the tmpfs under its cache) is undone first, newest
	# first, so that rm stays on this filesystem.
	local m
	for m in $(findmnt -rn -o TARGET | grep "^$T/" | tac || true); do
		fusermount3 -u "$m" 2>/dev/null || umount "$m" 2>/dev/null || umount -l "$m" || true
	done
	rm -rf --one-file-system "$T"
}

# stat_of ARCHIVE PATH [cat options]: the JSON counters `clip cat --stats` prints last.
stats_of() {
	"$CLIP" cat --stats "$@" 2>&1 >/dev/null | tail -n 1
}

# json_field JSON EXPR: a python expression over the parsed JSON `s`.
json_field() {
	python3 -c 'import json, sys; s = json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"
}

@test "every file read through a cold and then a warm disk cache equals the unpacked bytes" {
	run manifest_tool cat-check "$T/clip-cached" "$W/sample.clip" "$W/bundle/rootfs" \
		"$W/expected"
	echo "$output"
	[ "$status" -eq 0 ]
	[ -n "$(find "$T/cache" -type f)" ]
	# Warm: everything from disk, nothing fetched.
	local s
	s=$(stats_of "$W/sample.clip" /etc/os-release --cache-dir "$T/cache")
	echo "$s"
	[ "$(json_field "$s" 's["tiers"]["disk"]["hits"] > 0')" = True ]
	[ "$(json_field "$s" 's["tiers"]["span"]["hits"] + s["tiers"]["layer"]["hits"]')" = 0 ]
	[ "$(json_field "$s" 's["source_bytes"]')" = 0 ]
	run manifest_tool cat-check "$T/clip-cached" "$W/sample.clip" "$W/bundle/rootfs" \
		"$W/expected"
	[ "$status" -eq 0 ]
}

@test "a flipped byte or a truncated chunk in the cache is refetched, never served" {
	local f
	f=$(python3 - "$W/expected" <<'PY'
import sys
# the largest regular file
best = max((l.split("\t") for l in open(sys.argv[1])), key=lambda f: int(f[5]) if f[1] == "f" else -1)
print(best[0])
PY
	)
	"$CLIP" cat "$W/sample.clip" "$f" --cache-dir "$T/cache" >"$T/first"
	cmp "$T/first" "$W/bundle/rootfs$f"
	# Flip one byte near the end of every other chunk file, cut the others short.
	local chunks c i=0
	mapfile -t chunks < <(find "$T/cache" -type f -size +4k | sort)
	[ "${#chunks[@]}" -ge 2 ]
	for c in "${chunks[@]}"; do
		if [ $((i++ % 2)) = 0 ]; then
			python3 - "$c" <<'PY'
import os, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(-100, os.SEEK_END)
    b = f.read(1)
    f.seek(-100, os.SEEK_END)
    f.write(bytes([b[0] ^ 0x55]))
PY
		else
			truncate -s -1000 "$c"
		fi
	done
	local s
	s=$(stats_of "$W/sample.clip" "$f" --cache-dir "$T/cache")
	echo "$s"
	[ "$(json_field "$s" 's["disk_cache"]["corrupt"]')" -ge 1 ]
	"$CLIP" cat "$W/sample.clip" "$f" --cache-dir "$T/cache" >"$T/second"
	cmp "$T/second" "$W/bundle/rootfs$f"
	# Every damaged chunk is gone or whole again: reading all files finds no more damage
	# than what was left in chunks this file did not touch.
	run manifest_tool cat-check "$T/clip-cached" "$W/sample.clip" "$W/bundle/rootfs" \
		"$W/expected"
	echo "$output"
	[ "$status" -eq 0 ]
	s=$(stats_of "$W/sample.clip" "$f" --cache-dir "$T/cache")
	[ "$(json_field "$s" 's["disk_cache"]["corrupt"]')" = 0 ]
	[ "$(json_field "$s" 's["source_bytes"]')" = 0 ]
}

@test "zstd, plain tar and --no-checkpoints layers fill the cache from whole layers" {
	cp -a "$W/sample" "$T/recomp"
	python3 - "$T/recomp" <<'PY'
import hashlib, json, subprocess, sys
d = sys.argv[1]
def path(dg): return "%s/blobs/sha256/%s" % (d, dg[7:])
def put(data):
    dg = "sha256:" + hashlib.sha256(data).hexdigest()
    open(path(dg), "wb").write(data)
    return dg, len(data)
idx = json.load(open(d + "/index.json"))
desc = idx["manifests"][0]
man = json.load(open(path(desc["digest"])))
kinds = [("application/vnd.oci.image.layer.v1.tar+zstd", ["zstd", "-q", "-c", "-19"]),
         ("application/vnd.oci.image.layer.v1.tar", ["cat"])]
for layer, (mt, cmd) in zip(man["layers"], kinds):
    tar = subprocess.run(["gzip", "-dc", path(layer["digest"])], check=True,
                         stdout=subprocess.PIPE).stdout
    blob = subprocess.run(cmd, input=tar, check=True, stdout=subprocess.PIPE).stdout
    layer["digest"], layer["size"] = put(blob)
    layer["mediaType"] = mt
desc["digest"], desc["size"] = put(json.dumps(man).encode())
json.dump(idx, open(d + "/index.json", "w"))
PY
	"$CLIP" index -q "oci:$T/recomp" -o "$T/recomp.clip"
	run manifest_tool cat-check "$T/clip-cached" "$T/recomp.clip" "$W/bundle/rootfs" \
		"$W/expected"
	echo "$output"
	[ "$status" -eq 0 ]
	# The zstd layer was fetched whole once, however many files came from it.
	local s
	rm -rf "$T/cache"
	s=$(stats_of "$T/recomp.clip" /etc/os-release --cache-dir "$T/cache")
	echo "$s"
	[ "$(json_field "$s" 's["tiers"]["layer"]["hits"] + s["tiers"]["span"]["hits"]')" -ge 1 ]

	# gzip layers read with --no-checkpoints go through the whole-layer tier too.
	cat >"$T/clip-nocp" <<EOF
#!/bin/sh
exec "$CLIP" "\$@" --cache-dir "$T/cache-nocp" --no-checkpoints
EOF
	chmod +x "$T/clip-nocp"
	run manifest_tool cat-check "$T/clip-nocp" "$W/sample.clip" "$W/bundle/rootfs" \
		"$W/expected"
	echo "$output"
	[ "$status" -eq 0 ]
	s=$(stats_of "$W/sample.clip" /etc/os-release --cache-dir "$T/cache-nocp2" \
		--no-checkpoints)
	echo "$s"
	[ "$(json_field "$s" 's["tiers"]["layer"]["hits"]')" -ge 1 ]
	[ "$(json_field "$s" 's["tiers"]["span"]["hits"]')" = 0 ]
}

# cat_numbers ARCHIVE [cat options]: the old-format archives' numbers.txt (tests/data/v1) reads
# whole and right; leaves the expected bytes in $T/numbers.
cat_numbers() {
	local archive=$1
	shift
	python3 -c 'import sys; sys.stdout.write("".join("%d\n" % i for i in range(1, 100001)))' \
		>"$T/numbers"
	"$CLIP" cat "$archive" /usr/share/doc/numbers.txt "$@" >"$T/a"
	cmp "$T/a" "$T/numbers"
}

@test "an archive of format version 2 reads through its whole-span digests, and refuses a damaged blob" {
	local v1=$CLIP_SOURCE_ROOT/tests/data/v1 v2=$CLIP_SOURCE_ROOT/tests/data/v2/v2.clip
	"$CLIP" info "$v2" | grep -q '^format: *2$'
	"$CLIP" info "$v2" | grep -q '^pieces: .*spans are verified whole'
	cat_numbers "$v2" --source "$v1/img"
	# Every span on its own, and across span edges.
	for off in 0 100000 262143 262144 300000 524287 524288 588000; do
		"$CLIP" cat "$v2" /usr/share/doc/numbers.txt --source "$v1/img" --offset "$off" \
			--length 1000 >"$T/part"
		tail -c "+$((off + 1))" "$T/numbers" | head -c 1000 | cmp - "$T/part"
	done
	"$CLIP" cat "$v2" /usr/share/doc/numbers.txt --source "$v1/img" --cache-dir "$T/cache" \
		>"$T/b"
	cmp "$T/b" "$T/numbers"
	# A flipped byte in the middle of the blob: the span holding it is refused.
	cp -r "$v1/img" "$T/img"
	local blob
	blob=$(ls -S "$T/img/blobs/sha256/" | head -n 1)
	chmod u+w "$T/img/blobs/sha256/$blob"
	python3 - "$T/img/blobs/sha256/$blob" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
b[len(b) // 2] ^= 0x20
open(sys.argv[1], "wb").write(b)
PY
	run "$CLIP" cat "$v2" /usr/share/doc/numbers.txt --source "$T/img"
	[ "$status" -ne 0 ]
	[[ "$output" == *"digest mismatch"* ]]
}

@test "an archive of format version 1 opens and reads, with and without a disk cache" {
	local v1=$CLIP_SOURCE_ROOT/tests/data/v1
	"$CLIP" info "$v1/v1.clip" | grep -q '^format: *1$'
	"$CLIP" info "$v1/v1.clip" | grep -q 'none recorded'
	cat_numbers "$v1/v1.clip" --source "$v1/img"
	"$CLIP" cat "$v1/v1.clip" /usr/share/doc/numbers.txt --source "$v1/img" \
		--cache-dir "$T/cache" >"$T/b"
	cmp "$T/b" "$T/numbers"
	"$CLIP" cat "$v1/v1.clip" /usr/share/doc/numbers.txt --source "oci:$v1/img" \
		--cache-dir "$T/cache" >"$T/c"
	cmp "$T/c" "$T/numbers"
	[ "$("$CLIP" cat "$v1/v1.clip" /hello.txt --source "$v1/img")" = \
		"hello from a version 1 archive" ]
}

# big_image: $W/big.clip, the sample image with a layer holding /big/64mib-text, 64 MiB of
# text (random bytes in base64: it compresses, and its gzip spans hold about 2 MiB of it each),
# which is also at $W/64mib-text. Built on first use.
big_image() {
	[ ! -f "$W/big.clip" ] || return 0
	mkdir -p "$W/big-layer/big"
	python3 -c '
import base64, random, sys
sys.stdout.buffer.write(base64.b64encode(random.Random(64).randbytes(48 << 20)))' \
		>"$W/big-layer/big/64mib-text"
	tar --create --file="$W/big-layer.tar" --directory="$W/big-layer" --owner=0 --group=0 \
		--numeric-owner --mtime=@1700000000 --format=gnu .
	cp -a "$W/sample" "$W/big"
	umoci raw add-layer --image "$W/big:latest" "$W/big-layer.tar"
	"$CLIP" index -q "oci:$W/big" -o "$W/big.clip"
	ln "$W/big-layer/big/64mib-text" "$W/64mib-text"
}

# small_disk_mount ARGS...: $W/big.clip mounted at $T/mnt with its disk cache on a 10 MB
# tmpfs at $T/small-disk (both undone by teardown); skips without FUSE.
small_disk_mount() {
	[ -c /dev/fuse ] || skip "no /dev/fuse: FUSE is not available here"
	command -v fusermount3 >/dev/null || skip "fusermount3 not installed (see scripts/install-deps)"
	big_image
	mkdir -p "$T/small-disk" "$T/mnt"
	mountpoint -q "$T/small-disk" || mount -t tmpfs -o size=10m tmpfs "$T/small-disk"
	# fd 3 closed: bats waits for every holder of it, the daemon included.
	"$CLIP" mount "$W/big.clip" "$T/mnt" --cache-dir "$T/small-disk/cache" "$@" 3>&-
}

@test "a disk cache on a full 10 MB tmpfs evicts for room, and a 64 MiB file inflates about once" {
	small_disk_mount
	cmp "$T/mnt/big/64mib-text" "$W/64mib-text"
	local s size=$((64 << 20))
	s=$("$CLIP" stats --json "$T/mnt")
	echo "$s"
	# Each span inflated about once, however full the disk: before, every 128 KiB read
	# inflated its whole span again (30 times the file).
	[ "$(json_field "$s" 's["inflated_bytes"]')" -lt $((2 * size)) ]
	[ "$(json_field "$s" 's["tiers"]["span"]["errors"]')" = 0 ]
	# The disk cache made room by evicting, within what the tmpfs holds.
	[ "$(json_field "$s" 's["disk_cache"]["evicted"] > 0')" = True ]
	[ "$(json_field "$s" 's["disk_cache"]["usage"] <= 10 << 20')" = True ]
	[ "$(json_field "$s" 's["memory_cache"]["usage"] <= s["memory_cache"]["max"]')" = True ]
}

@test "a disk cache with no room at all declines chunks, and the memory tier serves them" {
	small_disk_mount
	"$CLIP" umount "$T/mnt"
	# Another file takes the whole tmpfs: the cache has nothing left to evict.
	rm -rf "$T/small-disk/cache/chunks"
	dd if=/dev/zero of="$T/small-disk/other" bs=64k 2>/dev/null || true
	local other_size
	other_size=$(stat -c %s "$T/small-disk/other")
	small_disk_mount
	cmp "$T/mnt/big/64mib-text" "$W/64mib-text"
	local s size=$((64 << 20))
	s=$("$CLIP" stats --json "$T/mnt")
	echo "$s"
	[ "$(json_field "$s" 's["inflated_bytes"]')" -lt $((2 * size)) ]
	[ "$(json_field "$s" 's["disk_cache"]["declined"] > 0')" = True ]
	[ "$(json_field "$s" 's["tiers"]["memory"]["hits"] > 0')" = True ]
	[ "$(json_field "$s" 's["memory_cache"]["stores"] > 0')" = True ]
	[ "$(stat -c %s "$T/small-disk/other")" = "$other_size" ]
	# The same without the memory tier: the first 16 MiB alone cost several times their size,
	# so the check above can fail.
	"$CLIP" umount "$T/mnt"
	small_disk_mount --memory-cache 0
	head -c $((16 << 20)) "$T/mnt/big/64mib-text" | cmp - <(head -c $((16 << 20)) "$W/64mib-text")
	s=$("$CLIP" stats --json "$T/mnt")
	echo "$s"
	[ "$(json_field "$s" '"memory_cache" in s')" = False ]
	[ "$(json_field "$s" 's["inflated_bytes"]')" -gt $((4 * (16 << 20))) ]
}

@test "an empty --remote-cache is no remote cache (clip-mount@.service leaves it empty)" {
	run -0 "$CLIP" cat --remote-cache '' --cache-dir "$T/cache" "$W/sample.clip" /hello.txt
	[ "$output" = "$(cat "$W/bundle/rootfs/hello.txt")" ]
	run -1 "$CLIP" cat --remote-cache 'nosuch://x' "$W/sample.clip" /hello.txt
}
