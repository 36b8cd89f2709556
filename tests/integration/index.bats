#!/usr/bin/env bats
# Integration test of `clip index` and the read side (info, ls, stat, cat) on real images:
# whatever clip reports must equal what `umoci unpack` extracts from the same OCI layout.
#
# How to run (as root):
#   meson test -C build integration-index -v         # meson sets CLIP and CLIP_SOURCE_ROOT
#   CLIP=$PWD/build/clip bats tests/integration/index.bats
# Needs: root, umoci, debootstrap, python3, GNU tar, findmnt; the first run debootstraps Debian
# from the mirror apt uses (~30 s) and caches the rootfs tarball in ~/.cache/clip-test
# (CLIP_TEST_CACHE overrides); later runs build the image from that cache in ~15 s.
# CLIP_TEST_IMAGE=DIR uses a layout already built by scripts/build-test-image; CLIP_TEST_KEEP=1
# keeps the temp dir; CLIP_TEST_SEED changes the random part of the stat sample.
# Without root or a tool every test is skipped with the reason.

load helpers

# Where umoci's unpack is not what the image says, for these entries only, the mtime is not
# compared (every other field still is):
# - /clip-test/implicit and /clip-test/implicit/sub have no tar entry of their own: their mtime
#   is not defined by the image, and umoci gives them the time of the unpack.
# - /clip-test has a tar entry, but umoci creates the implicit directories above after it and
#   does not restore its mtime afterwards (it does for entries it extracts itself), so the
#   unpacked mtime is the time of the unpack: a umoci bug. The test "directory mtimes follow
#   their tar entry" checks clip's value against the layer's tar entry instead.
UMOCI_MTIME_PATHS=(/clip-test /clip-test/implicit /clip-test/implicit/sub)

setup_file() {
	CLIP_SKIP_REASON=$(require_env umoci debootstrap python3 tar findmnt truncate)
	export CLIP_SKIP_REASON
	[ -z "$CLIP_SKIP_REASON" ] || return 0

	W=$(make_workdir)
	export W
	local t0=$SECONDS
	IMAGE=$(test_image "$W/image") || return 1
	export IMAGE
	echo "# test image ready in $((SECONDS - t0)) s" >&3

	umoci unpack --image "$IMAGE:latest" "$W/bundle" >/dev/null
	export ROOTFS=$W/bundle/rootfs
	"$CLIP_SOURCE_ROOT/scripts/tree-manifest" "$ROOTFS" >"$W/expected.manifest"
	manifest_tool normalise "$W/expected.manifest" "${UMOCI_MTIME_PATHS[@]}"

	"$CLIP_SOURCE_ROOT/scripts/build-sample-image" "$W/sample" >/dev/null
	umoci unpack --image "$W/sample:latest" "$W/sample-bundle" >/dev/null

	# Index once here; the first test reports how it went, the others need its archive.
	export ARCHIVE=$W/test.clip
	local start end
	start=$(date +%s.%N)
	set +e
	"$CLIP" index "oci:$IMAGE:latest" -o "$ARCHIVE" --quiet >"$W/index.out" 2>"$W/index.err"
	echo $? >"$W/index.status"
	set -e
	end=$(date +%s.%N)
	echo "# clip index of the test image: $(awk "BEGIN { print $end - $start }") s" >&3
}

teardown_file() {
	remove_workdir "${W:-}"
}

setup() {
	[ -z "${CLIP_SKIP_REASON:-}" ] || skip "$CLIP_SKIP_REASON"
	T=$(mktemp -d "$W/test.XXXXXX")
}

teardown() {
	[ -z "${T:-}" ] || rm -rf "$T"
}

need_archive() {
	if [ ! -s "$ARCHIVE" ]; then
		echo "no archive: clip index of the test image failed (see the first test)"
		return 1
	fi
}

@test "clip index writes an archive of the test image" {
	echo "exit status: $(cat "$W/index.status")"
	echo "stdout: $(cat "$W/index.out")"
	echo "stderr: $(cat "$W/index.err")"
	[ "$(cat "$W/index.status")" -eq 0 ]
	[ -s "$ARCHIVE" ]
	# --quiet: nothing on either stream when all goes well.
	[ ! -s "$W/index.err" ]
	[ ! -s "$W/index.out" ]
	echo "# archive: $(stat -c %s "$ARCHIVE") bytes" >&3
}

@test "clip info counts the image's layers" {
	need_archive
	run --separate-stderr "$CLIP" info "$ARCHIVE"
	echo "$output"
	[ "$status" -eq 0 ]
	local layers
	layers=$(layer_digests "$IMAGE:latest" | wc -l)
	grep -Eq "^ *layers: +$layers\$" <<<"$output"
	grep -Eq '^ *files: +[0-9]+$' <<<"$output"
	grep -Eq '^ *checkpoints: +[0-9]+$' <<<"$output"
}

@test "clip ls -R --manifest equals tree-manifest of the unpacked rootfs" {
	need_archive
	"$CLIP" ls -R --manifest "$ARCHIVE" >"$T/clip.manifest" 2>"$T/stderr"
	if [ -s "$T/stderr" ]; then
		echo "stderr of a successful clip ls:"
		head -n 50 "$T/stderr"
		return 1
	fi
	manifest_tool normalise "$T/clip.manifest" "${UMOCI_MTIME_PATHS[@]}"
	if ! diff -u --label expected "$W/expected.manifest" --label clip "$T/clip.manifest" \
		>"$T/diff"; then
		head -n 300 "$T/diff"
		echo "($(grep -c '^[-+][^-+]' "$T/diff") differing lines in all)"
		if cmp -s <(LC_ALL=C sort "$W/expected.manifest") \
			<(LC_ALL=C sort "$T/clip.manifest"); then
			echo "the lines are the same, only their order differs"
		fi
		return 1
	fi
}

@test "clip ls -R --manifest is sorted bytewise" {
	need_archive
	"$CLIP" ls -R --manifest "$ARCHIVE" >"$T/clip.manifest"
	[ -s "$T/clip.manifest" ]
	LC_ALL=C sort -c "$T/clip.manifest"
}

@test "clip stat --manifest matches for every special path and random ones" {
	need_archive
	run manifest_tool stat-check "$CLIP" "$ARCHIVE" "$W/expected.manifest" 300 \
		"${CLIP_TEST_SEED:-1}" "${UMOCI_MTIME_PATHS[@]}"
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "directory mtimes follow their tar entry where umoci's do not" {
	need_archive
	# The expected value comes from the layer itself (the last one holds /clip-test).
	local top want
	top=$(layer_digests "$IMAGE:latest" | tail -n 1)
	want=$(python3 - "$(blob_path "$IMAGE" "$top")" <<'PY'
import sys, tarfile
with tarfile.open(sys.argv[1], "r:gz") as tar:
    member = tar.getmember("clip-test")
    sec, _, frac = member.pax_headers["mtime"].partition(".")
    print("%s.%s" % (sec, frac.ljust(9, "0")))
PY
	)
	run --separate-stderr "$CLIP" stat --manifest "$ARCHIVE" /clip-test
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$(printf '%s\n' "$output" | cut -f7)" = "$want" ]
}

@test "clip stat of a missing path fails cleanly" {
	need_archive
	run --separate-stderr "$CLIP" stat "$ARCHIVE" /no/such/file
	echo "status $status, stderr: $stderr"
	[ "$status" -ne 0 ]
	[[ $stderr == "clip: "*"/no/such/file"* ]]
}

@test "clip ls lists a directory" {
	need_archive
	run --separate-stderr "$CLIP" ls "$ARCHIVE" /clip-test
	echo "$output"
	[ "$status" -eq 0 ]
	local name
	for name in sizes big links special xattr perm owner long unicode weird time implicit dup
	do
		grep -q " $name\$" <<<"$output" || { echo "no line ends with '$name'"; return 1; }
	done
}

@test "clip cat of every file <= 64 KiB and > 512 KiB equals the unpacked bytes" {
	need_archive
	run manifest_tool cat-check "$CLIP" "$ARCHIVE" "$ROOTFS" "$W/expected.manifest"
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "clip cat --offset --length reads spans of the large files" {
	need_archive
	local path size off len fails=0
	while IFS= read -r -d '' path; do
		size=$(stat -c %s "$ROOTFS$path")
		for span in "0 1" "1 4095" "65535 2" "$((size / 2)) 100000" "$((size - 1)) 1" \
			"$((size - 10)) 1000" "$((1 << 20)) $((1 << 20))"; do
			read -r off len <<<"$span"
			[ "$off" -lt "$size" ] || continue
			# Past the end a read is cut short at the end of the file.
			if ! cmp -s <("$CLIP" cat "$ARCHIVE" "$path" --offset "$off" --length "$len") \
				<(tail -c +"$((off + 1))" "$ROOTFS$path" | head -c "$len"); then
				echo "cat $path --offset $off --length $len differs"
				fails=$((fails + 1))
			fi
		done
	done < <(manifest_tool paths "$W/expected.manifest" big-files)
	[ "$fails" -eq 0 ]
}

@test "1000 random ranges of the large files equal the unpacked bytes" {
	# The layers here come from umoci (Go's parallel gzip) and GNU tar + gzip: each read
	# resumes at a checkpoint of a real producer's stream, across span boundaries too.
	need_archive
	manifest_tool paths "$W/expected.manifest" big-files >"$T/big"
	run python3 - "$CLIP" "$ARCHIVE" "$ROOTFS" "$T/big" <<'PY'
import os, random, subprocess, sys
clip, archive, rootfs, listing = sys.argv[1:]
paths = [p for p in open(listing, "rb").read().split(b"\0") if p]
rnd = random.Random(int(os.environ.get("CLIP_TEST_SEED", "1")))
bad = 0
for i in range(1000):
    path = rnd.choice(paths)
    size = os.path.getsize(rootfs.encode() + path)
    off = rnd.randrange(0, size + 10)
    length = rnd.choice([1, 4096, 65536, 1 << 20, 3 << 20])
    got = subprocess.run([clip, "cat", "--offset", str(off), "--length", str(length),
                          archive, path], stdout=subprocess.PIPE, check=True).stdout
    with open(rootfs.encode() + path, "rb") as f:
        f.seek(off)
        want = f.read(length)
    if got != want:
        bad += 1
        print("differs: %r --offset %d --length %d" % (path, off, length))
print("%d of 1000 reads differ" % bad)
sys.exit(1 if bad else 0)
PY
	echo "$output"
	[ "$status" -eq 0 ]
}

# same_as_unpacked ARCHIVE ROOTFS: clip's manifest of ARCHIVE is tree-manifest's of the unpacked
# ROOTFS, line for line, and every file reads back the same bytes.
same_as_unpacked() {
	"$CLIP_SOURCE_ROOT/scripts/tree-manifest" "$2" >"$T/expected"
	"$CLIP" ls -R --manifest "$1" >"$T/got"
	diff -u "$T/expected" "$T/got"
	run manifest_tool cat-check "$CLIP" "$1" "$2" "$T/expected"
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "sample image: the whole manifest and every file match" {
	run --separate-stderr "$CLIP" index "oci:$W/sample" -o "$T/sample.clip"
	echo "index: status $status, stderr: $stderr"
	[ "$status" -eq 0 ]
	same_as_unpacked "$T/sample.clip" "$W/sample-bundle/rootfs"
}

@test "index of a missing layout directory fails cleanly" {
	run --separate-stderr "$CLIP" index "oci:$T/no-such-layout:latest" -o "$T/out.clip"
	expect_clean_failure "$T/out.clip"
	[[ $stderr == *"$T/no-such-layout"* ]]
}

@test "zstd and uncompressed layers index and read like gzip ones" {
	# The sample image again, its first layer recompressed with zstd and its second stored
	# as a plain tar, each with the media type that says so (and their digests).
	cp -a "$W/sample" "$T/recomp"
	run python3 - "$T/recomp" <<'PY'
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
	echo "$output"
	[ "$status" -eq 0 ]
	run --separate-stderr "$CLIP" index "oci:$T/recomp" -o "$T/recomp.clip"
	echo "index: status $status, stderr: $stderr"
	[ "$status" -eq 0 ]
	"$CLIP" info "$T/recomp.clip" | grep -q "zstd"
	"$CLIP" info "$T/recomp.clip" | grep -q " none "
	same_as_unpacked "$T/recomp.clip" "$W/sample-bundle/rootfs"
	# A truncated zstd blob is refused with the layer named.
	local zdigest
	zdigest=$(python3 -c 'import json,sys; d=sys.argv[1]; i=json.load(open(d+"/index.json")); m=json.load(open(d+"/blobs/sha256/"+i["manifests"][0]["digest"][7:])); print(m["layers"][0]["digest"])' "$T/recomp")
	truncate -s -100 "$T/recomp/blobs/sha256/${zdigest#sha256:}"
	run --separate-stderr "$CLIP" index "oci:$T/recomp" -o "$T/bad.clip"
	echo "status $status, stderr: $stderr"
	[ "$status" -ne 0 ]
	[[ $stderr == "clip: layer ${zdigest}"* ]]
	[ ! -e "$T/bad.clip" ]
}

@test "members under symlinked directories land where umoci unpack puts them" {
	# A usrmerged lower layer (bin -> usr/bin) and links that are absolute, climb past the
	# root, or chain; the upper layer writes, whites out and hard-links through them.
	python3 - "$T" <<'PY'
import io, sys, tarfile
T = sys.argv[1]
def tar(name, members):
    with tarfile.open("%s/%s" % (T, name), "w", format=tarfile.PAX_FORMAT) as t:
        for path, kind, arg in members:
            ti = tarfile.TarInfo(path)
            ti.mtime, ti.mode = 1700000000, 0o755 if kind in "d" else 0o644
            if kind == "d":
                ti.type = tarfile.DIRTYPE
                t.addfile(ti)
            elif kind == "l":
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, arg, 0o777
                t.addfile(ti)
            elif kind == "h":
                ti.type, ti.linkname = tarfile.LNKTYPE, arg
                t.addfile(ti)
            else:
                ti.size = len(arg)
                t.addfile(ti, io.BytesIO(arg))
tar("l1.tar", [("usr", "d", None), ("usr/bin", "d", None), ("usr/lib", "d", None),
               ("usr/bin/a", "f", b"a\n"), ("usr/bin/b", "f", b"b\n"),
               ("bin", "l", "usr/bin"), ("lib", "l", "/usr/lib"), ("etc", "d", None),
               ("etc/up", "l", "../../usr"), ("sbin", "l", "bin")])
tar("l2.tar", [("bin/foo", "f", b"foo\n"), ("lib/libx.so", "f", b"x\n"),
               ("etc/up/bin/z", "f", b"z\n"), ("sbin/chained", "f", b"c\n"),
               ("bin/.wh.a", "f", b""), ("hard", "h", "bin/foo")])
PY
	umoci init --layout "$T/img" >/dev/null
	umoci new --image "$T/img:t" >/dev/null
	umoci raw add-layer --image "$T/img:t" "$T/l1.tar" >/dev/null
	umoci raw add-layer --image "$T/img:t" "$T/l2.tar" >/dev/null
	umoci unpack --image "$T/img:t" "$T/bundle" >/dev/null
	[ -f "$T/bundle/rootfs/usr/bin/foo" ] && [ ! -e "$T/bundle/rootfs/usr/bin/a" ]
	run --separate-stderr "$CLIP" index "oci:$T/img:t" -o "$T/a.clip"
	echo "index: status $status, stderr: $stderr"
	[ "$status" -eq 0 ]
	same_as_unpacked "$T/a.clip" "$T/bundle/rootfs"
}

# tampered_layout: a copy of the sample layout in $T/layout; sets DIGEST and BLOB to its
# largest layer.
tampered_layout() {
	cp -a "$W/sample" "$T/layout"
	DIGEST=$(largest_layer "$T/layout:latest")
	BLOB=$(blob_path "$T/layout" "$DIGEST")
	chmod u+w "$BLOB"
}

@test "index of a layer whose digest does not match fails with 'digest mismatch'" {
	tampered_layout
	# Byte 4 is the gzip header's MTIME: the layer still decompresses to the same tar, so
	# only the digest check can notice.
	flip_byte "$BLOB" 4
	gzip -t <"$BLOB"
	run --separate-stderr "$CLIP" index "oci:$T/layout:latest" -o "$T/out.clip"
	expect_clean_failure "$T/out.clip"
	local hex=${DIGEST#sha256:}
	[[ $stderr == *"${hex:0:12}"* ]] || { echo "stderr does not name $DIGEST"; return 1; }
	[[ $stderr == *"digest mismatch"* ]]
}

@test "index of a layer with corrupt compressed data fails cleanly" {
	tampered_layout
	flip_byte "$BLOB" $(($(stat -c %s "$BLOB") / 2))
	run --separate-stderr "$CLIP" index "oci:$T/layout:latest" -o "$T/out.clip"
	expect_clean_failure "$T/out.clip"
	local hex=${DIGEST#sha256:}
	[[ $stderr == *"${hex:0:12}"* ]] || { echo "stderr does not name $DIGEST"; return 1; }
}

@test "index of a truncated layer blob fails cleanly" {
	tampered_layout
	truncate -s $(($(stat -c %s "$BLOB") / 2)) "$BLOB"
	run --separate-stderr "$CLIP" index "oci:$T/layout:latest" -o "$T/out.clip"
	expect_clean_failure "$T/out.clip"
	local hex=${DIGEST#sha256:}
	[[ $stderr == *"${hex:0:12}"* ]] || { echo "stderr does not name $DIGEST"; return 1; }
}

# cat_all ARCHIVE MESSAGE: cat every regular file of ARCHIVE; each either comes out equal to the
# unpacked sample image's file, or fails with MESSAGE on stderr having printed no more than a
# correct prefix of it (never a wrong byte). Prints how many failed.
cat_all() {
	local archive=$1 message=$2 failed=0 path type size
	while IFS=$'\t' read -r path type _ _ _ size _; do
		[ "$type" = f ] && [ "$size" -gt 0 ] && [[ $path != *\\* ]] || continue
		local want=$W/sample-bundle/rootfs$path
		if "$CLIP" cat "$archive" "$path" >"$T/out" 2>"$T/err"; then
			cmp -s "$T/out" "$want" || { echo "wrong bytes for $path" >&2; return 1; }
		else
			grep -q "$message" "$T/err" || { cat "$T/err" >&2; return 1; }
			cmp -s "$T/out" <(head -c "$(stat -c %s "$T/out")" "$want") ||
				{ echo "$path: wrong bytes before the error" >&2; return 1; }
			failed=$((failed + 1))
		fi
	done < <("$CLIP" ls -R --manifest "$archive")
	echo "$failed"
}

@test "cat of a blob changed after indexing: an error, never a wrong byte" {
	tampered_layout
	"$CLIP" index -q "oci:$T/layout:latest" -o "$T/a.clip"
	# A flipped byte in the middle of the largest layer: the files in its span fail.
	flip_byte "$BLOB" $(($(stat -c %s "$BLOB") / 2))
	local n
	n=$(cat_all "$T/a.clip" "digest mismatch")
	echo "flipped byte: $n files refused"
	[ "$n" -gt 0 ]
	# The blob cut to a third: every file of that layer fails, naming the sizes.
	truncate -s $(($(stat -c %s "$BLOB") / 3)) "$BLOB"
	n=$(cat_all "$T/a.clip" "bytes, expected")
	echo "truncated blob: $n files refused"
	[ "$n" -gt 0 ]
}

@test "index --platform of a platform the image lacks lists the available ones" {
	cp -a "$W/sample" "$T/layout"
	local host others
	host=$(image_platform "$T/layout")
	make_multiplatform "$T/layout" "$host" linux/ppc64le linux/riscv64
	run --separate-stderr "$CLIP" index --platform linux/s390x "oci:$T/layout:latest" \
		-o "$T/out.clip"
	expect_clean_failure "$T/out.clip"
	for p in "$host" linux/ppc64le linux/riscv64; do
		[[ $stderr == *"$p"* ]] || { echo "stderr does not list $p"; return 1; }
	done
	# The same index with a platform it has works.
	run --separate-stderr "$CLIP" index --platform "$host" "oci:$T/layout:latest" \
		-o "$T/out.clip"
	echo "with --platform $host: status $status, stderr: $stderr"
	[ "$status" -eq 0 ]
	[ -s "$T/out.clip" ]
}
