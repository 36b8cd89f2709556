# Shared helpers for clip's bats integration tests; loaded with `load helpers`.
#
# Environment:
#   CLIP              the clip binary (meson sets it; default: $CLIP_SOURCE_ROOT/build/clip)
#   CLIP_SOURCE_ROOT  the source tree (meson sets it; default: two levels above this file)
#   CLIP_TEST_CACHE   where scripts/build-test-image keeps the debootstrap tarball
#                     (default: ~/.cache/clip-test)
#   CLIP_TEST_IMAGE   an already built test image layout to use instead of building one
#   CLIP_TEST_SEED    seed of the random part of the stat sample (default: 1)
#   CLIP_TEST_KEEP    if set, temp dirs are left behind and their path is printed

bats_require_minimum_version 1.5.0

CLIP_SOURCE_ROOT=${CLIP_SOURCE_ROOT:-$(cd "$BATS_TEST_DIRNAME/../.." && pwd)}
CLIP=${CLIP:-$CLIP_SOURCE_ROOT/build/clip}
export CLIP CLIP_SOURCE_ROOT

# require_env TOOL...: print why the tests cannot run here (not root, a tool missing), or
# nothing. The pseudo-tool /dev/fuse asks for FUSE. bats 1.8 cannot skip from setup_file, so
# setup_file stores this reason and every test's setup() skips with it.
require_env() {
	local tool
	if [ "$(id -u)" != 0 ]; then
		echo "needs root: umoci unpack must keep owners, device nodes and trusted.* xattrs"
		return
	fi
	for tool in "$@"; do
		if [ "$tool" = /dev/fuse ]; then
			[ -c /dev/fuse ] || { echo "no /dev/fuse: FUSE is not available here"; return; }
		elif ! command -v "$tool" >/dev/null; then
			echo "$tool not installed (see scripts/install-deps)"
			return
		fi
	done
}

# test_image DIR: print the test image's OCI layout: $CLIP_TEST_IMAGE when set (one built
# before, reused), else one built into DIR by scripts/build-test-image (its log shown on failure).
test_image() {
	if [ -n "${CLIP_TEST_IMAGE:-}" ]; then
		echo "$CLIP_TEST_IMAGE"
		return 0
	fi
	if ! "$CLIP_SOURCE_ROOT/scripts/build-test-image" "$1" >/dev/null 2>"$1.build.log"; then
		cat "$1.build.log" >&2
		return 1
	fi
	echo "$1"
}

# make_workdir: a fresh temp dir for this file's tests, removed by remove_workdir.
make_workdir() {
	mktemp -d "${TMPDIR:-/tmp}/clip-bats.XXXXXX"
}

remove_workdir() {
	local dir=$1
	[ -n "$dir" ] && [ -d "$dir" ] || return 0
	if [ -n "${CLIP_TEST_KEEP:-}" ]; then
		echo "# kept $dir" >&3
		return 0
	fi
	rm -rf --one-file-system "$dir"
}

# layer_digests LAYOUT[:TAG]: the layer digests of the image's manifest, bottom first.
# Follows index.json to the tagged manifest (tag "latest" by default); no image index.
layer_digests() {
	python3 - "$1" <<'PY'
import json, sys
spec = sys.argv[1]
layout, _, tag = spec.partition(":")
tag = tag or "latest"
index = json.load(open(layout + "/index.json"))
for desc in index["manifests"]:
    if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
        algo, hexd = desc["digest"].split(":")
        manifest = json.load(open("%s/blobs/%s/%s" % (layout, algo, hexd)))
        for layer in manifest["layers"]:
            print(layer["digest"])
        break
else:
    sys.exit("no tag %s in %s/index.json" % (tag, layout))
PY
}

# blob_path LAYOUT DIGEST
blob_path() {
	echo "$1/blobs/${2%%:*}/${2#*:}"
}

# largest_layer LAYOUT[:TAG]: the digest of the layer with the largest blob.
largest_layer() {
	local layout=${1%%:*} d best='' best_size=-1 size
	for d in $(layer_digests "$1"); do
		size=$(stat -c %s "$(blob_path "$layout" "$d")")
		if [ "$size" -gt "$best_size" ]; then
			best=$d
			best_size=$size
		fi
	done
	echo "$best"
}

# flip_byte FILE OFFSET: invert every bit of one byte in place.
flip_byte() {
	python3 - "$1" "$2" <<'PY'
import sys
path, off = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(off)
    b = f.read(1)
    f.seek(off)
    f.write(bytes([b[0] ^ 0xFF]))
PY
}

# make_multiplatform LAYOUT OS/ARCH[/VARIANT]...: turn the "latest" tag of LAYOUT into an OCI
# image index listing its manifest once per given platform (all entries point to the same
# manifest; only platform selection is being tested).
make_multiplatform() {
	python3 - "$@" <<'PY'
import hashlib, json, sys
layout, platforms = sys.argv[1], sys.argv[2:]
index_path = layout + "/index.json"
index = json.load(open(index_path))
latest = [d for d in index["manifests"]
          if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == "latest"]
assert len(latest) == 1, "expected one 'latest' tag"
base = {k: v for k, v in latest[0].items() if k != "annotations"}
entries = []
for p in platforms:
    parts = p.split("/")
    plat = {"architecture": parts[1], "os": parts[0]}
    if len(parts) > 2:
        plat["variant"] = parts[2]
    entries.append(dict(base, platform=plat))
blob = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                   "manifests": entries}, sort_keys=True).encode()
digest = hashlib.sha256(blob).hexdigest()
open("%s/blobs/sha256/%s" % (layout, digest), "wb").write(blob)
index["manifests"] = [{"mediaType": "application/vnd.oci.image.index.v1+json",
                       "digest": "sha256:" + digest, "size": len(blob),
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}]
json.dump(index, open(index_path, "w"))
PY
}

# image_platform LAYOUT: "os/arch[/variant]" from the config of the "latest" manifest.
image_platform() {
	python3 - "$1" <<'PY'
import json, sys
layout = sys.argv[1]
index = json.load(open(layout + "/index.json"))
desc = [d for d in index["manifests"]
        if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == "latest"][0]
def blob(d):
    algo, hexd = d["digest"].split(":")
    return json.load(open("%s/blobs/%s/%s" % (layout, algo, hexd)))
config = blob(blob(desc)["config"])
print("/".join(filter(None, [config["os"], config["architecture"], config.get("variant")])))
PY
}

# manifest_tool SUBCOMMAND ARGS...: checks over manifest files, in python because paths are
# arbitrary bytes (newlines included) and there are thousands of them.
#   normalise FILE PATH...        replace the mtime field of the lines for these (escaped) paths
#                                 with "(not compared)", in place
#   stat-check CLIP ARCHIVE MANIFEST COUNT SEED NORMALISED-PATH...
#                                 `clip stat --manifest` of every special entry plus random
#                                 ones (COUNT in all) must print the manifest's line
#   cat-check CLIP ARCHIVE ROOTFS MANIFEST
#                                 `clip cat` of every regular file <= 64 KiB and > 512 KiB
#                                 must give the bytes of ROOTFS/PATH (sha256 compared)
#   paths MANIFEST PRED           print raw paths (NUL-terminated) of lines matching PRED:
#                                 "big-files" (regular, > 512 KiB)
manifest_tool() {
	python3 - "$@" <<'PY'
import concurrent.futures
import hashlib
import os
import random
import re
import subprocess
import sys

UNCHECKED = b"(not compared)"


def unescape(field: bytes) -> bytes:
    def repl(m):
        s = m.group(0)
        return {b"\\\\": b"\\", b"\\t": b"\t", b"\\n": b"\n"}.get(s) or bytes([int(s[2:], 16)])
    return re.sub(rb"\\\\|\\t|\\n|\\x[0-9a-f]{2}", repl, field)


def read_lines(path):
    with open(path, "rb") as f:
        return f.read().split(b"\n")[:-1]


def normalise_line(line: bytes, paths) -> bytes:
    fields = line.split(b"\t")
    if len(fields) == 11 and fields[0] in paths:
        fields[6] = UNCHECKED
    return b"\t".join(fields)


def cmd_normalise(args):
    path, paths = args[0], {os.fsencode(p) for p in args[1:]}
    lines = read_lines(path)
    with open(path, "wb") as f:
        f.write(b"".join(normalise_line(l, paths) + b"\n" for l in lines))
    return 0


def run_clip(argv):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return p.returncode, p.stdout, p.stderr


def show(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def cmd_stat_check(args):
    clip, archive, manifest, count, seed = args[0], args[1], args[2], int(args[3]), args[4]
    normalised = {os.fsencode(p) for p in args[5:]}
    lines = read_lines(manifest)
    special, plain = [], []
    for line in lines:
        f = line.split(b"\t")
        path = f[0]
        is_special = (
            f[1] in (b"c", b"b", b"p", b"s")    # devices, fifos, sockets
            or f[2][:1] != b"0"                 # setuid, setgid, sticky
            or f[10] != b"-"                    # xattrs
            or int(f[7]) > 1 and f[1] == b"f"   # hard links
            or len(path) > 100
            or re.search(rb"[\\\x80-\xff]", path) is not None
            or path.startswith(b"/clip-test")
            or f[3] != b"0" or f[4] != b"0"
            or path.count(b"/") <= 1)           # the root and its children
        (special if is_special else plain).append(line)
    rng = random.Random(seed)
    sample = special + rng.sample(plain, max(0, min(len(plain), count - len(special))))
    print("# %d special + %d random paths (seed %s)" % (
        len(special), len(sample) - len(special), seed))

    def check(line):
        path = unescape(line.split(b"\t")[0])
        rc, out, err = run_clip([clip, "stat", "--manifest", archive, path])
        got = normalise_line(out.rstrip(b"\n"), normalised) if rc == 0 else None
        # Anything on stderr after a success is a fault too (sanitizer reports included).
        if rc != 0 or got != line or out.count(b"\n") != 1 or err:
            return "stat %s\n  expected: %s\n  got:      %s%s" % (
                show(path), show(line), show(out.rstrip(b"\n")) if rc == 0 else "(exit %d)" % rc,
                ("\n  stderr: " + show(err.strip())) if err else "")
        return None

    return report(map_parallel(check, sample), len(sample), "paths")


def map_parallel(fn, items):
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return [r for r in pool.map(fn, items) if r is not None]


def report(failures, total, what):
    for f in failures[:30]:
        print(f)
    if len(failures) > 30:
        print("... and %d more" % (len(failures) - 30))
    print("# %d of %d %s differ" % (len(failures), total, what))
    return 1 if failures else 0


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cmd_cat_check(args):
    clip, archive, rootfs, manifest = args
    rootfs = os.fsencode(rootfs)
    todo = []
    for line in read_lines(manifest):
        f = line.split(b"\t")
        if f[1] == b"f" and (int(f[5]) <= 64 * 1024 or int(f[5]) > 512 * 1024):
            todo.append(unescape(f[0]))

    def check(path):
        want = sha256_file(rootfs + path)
        rc, out, err = run_clip([clip, "cat", archive, path])
        got = hashlib.sha256(out).hexdigest()
        if rc != 0 or got != want or err:
            return "cat %s: exit %d, %d bytes, sha256 %s, want %s%s" % (
                show(path), rc, len(out), got[:16], want[:16],
                ("\n  stderr: " + show(err.strip())) if err else "")
        return None

    print("# %d files" % len(todo))
    return report(map_parallel(check, todo), len(todo), "files")


def cmd_paths(args):
    manifest, pred = args
    for line in read_lines(manifest):
        f = line.split(b"\t")
        if pred == "big-files" and f[1] == b"f" and int(f[5]) > 512 * 1024:
            sys.stdout.buffer.write(unescape(f[0]) + b"\0")
    return 0


commands = {"normalise": cmd_normalise, "stat-check": cmd_stat_check,
            "cat-check": cmd_cat_check, "paths": cmd_paths}
sys.exit(commands[sys.argv[1]](sys.argv[2:]))
PY
}

# expect_clean_failure OUTFILE: after `run --separate-stderr $CLIP ...`, check that the command
# failed the way the CLI promises: non-zero exit, one "clip: <what>: <why>" line on stderr, and no
# OUTFILE left behind.
expect_clean_failure() {
	local out=$1
	if [ "$status" -eq 0 ]; then
		echo "expected a failure, got exit 0; stderr: $stderr"
		return 1
	fi
	if ! [[ $stderr =~ ^clip:\ .+:\ .+ ]]; then
		echo "stderr is not 'clip: <what>: <why>': $stderr"
		return 1
	fi
	if [ "$(printf '%s\n' "$stderr" | wc -l)" -ne 1 ]; then
		echo "stderr has more than one line:"
		printf '%s\n' "$stderr"
		return 1
	fi
	if [ -e "$out" ]; then
		echo "$out was left behind"
		return 1
	fi
}

# ---- mounts ----------------------------------------------------------------------------------

# unmount_under DIR: unmount everything mounted below DIR, newest first (an overlay before the
# clip mount under it), lazily if a mount is busy.
unmount_under() {
	local m
	awk '{ print $5 }' /proc/self/mountinfo | grep -F "$1/" | tac | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
}

# is_mounted DIR: DIR is the target of a mount.
is_mounted() {
	findmnt -rn --mountpoint "$1" >/dev/null
}

# not_mounted DIR: fail if DIR is the target of a mount (`! is_mounted` would not fail a test).
not_mounted() {
	if is_mounted "$1"; then
		echo "$1 is still mounted"
		return 1
	fi
}

# no_daemon MNT: fail if a `clip mount` process serving MNT is still running.
no_daemon() {
	local pids
	pids=$(daemon_pids "$1") || return 1
	if [ -n "$pids" ]; then
		echo "a daemon for $1 is still running: $pids"
		return 1
	fi
}

# no_mount_under DIR: fail if anything is mounted at or below DIR (`unmount_under` unmounts them).
no_mount_under() {
	local left
	left=$(awk '{ print $5 }' /proc/self/mountinfo | grep -F "$1" || true)
	if [ -n "$left" ]; then
		echo "still mounted: $left"
		return 1
	fi
}

# wait_for_no_daemon MNT: the daemon of an unmounted MNT exits within 10 s.
wait_for_no_daemon() {
	local tries=0
	while [ -n "$(daemon_pids "$1")" ]; do
		[ $((tries += 1)) -le 200 ] || {
			echo "the daemon of $1 is still running"
			return 1
		}
		sleep 0.05
	done
}

# daemon_pid MNT: the live `clip mount` process serving MNT (exactly one, or fail).
daemon_pid() {
	local pids
	pids=$(daemon_pids "$1") || return 1
	if [ -z "$pids" ] || [ "$(wc -l <<<"$pids")" -ne 1 ]; then
		echo "expected one daemon serving $1, found: ${pids:-none}" >&2
		return 1
	fi
	echo "$pids"
}

# daemon_pids MNT: the live `clip mount` processes serving MNT, one a line.
daemon_pids() {
	python3 - "$CLIP" "$1" <<'PY'
import os, sys
clip, mnt = sys.argv[1], sys.argv[2]
found = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open("/proc/%s/cmdline" % pid, "rb").read().split(b"\0")
        state = [l for l in open("/proc/%s/status" % pid) if l.startswith("State:")][0]
    except OSError:
        continue
    if argv[:2] == [os.fsencode(clip), b"mount"] and os.fsencode(mnt) in argv and " Z " not in state:
        found.append(pid)
for pid in found:
    print(pid)
PY
}

# wait_gone PID: wait up to 10 s for PID to exit (a zombie counts: init may reap it late).
wait_gone() {
	local tries
	for ((tries = 0; tries < 200; tries++)); do
		if [ ! -e "/proc/$1" ] || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	echo "process $1 still running"
	return 1
}

# stats_field MNT KEY[.KEY...]: one number of the mount's stats JSON ("reads",
# "disk_cache.evicted").
stats_field() {
	local json
	json=$("$CLIP" stats --json "$1") || return 1
	python3 - "$json" "$2" <<'PY'
import json, sys
value = json.loads(sys.argv[1])
for key in sys.argv[2].split("."):
    value = value[key]
print(value)
PY
}

# metrics FILE SELECTOR...: the value of each Prometheus sample that SELECTOR names, one a line.
# A selector is NAME or NAME{label="value",...} (labels in any order, a subset of the sample's),
# and sums every matching sample; no match is an error.
metrics() {
	python3 - "$@" <<'PY'
import re, sys
samples = []
for line in open(sys.argv[1]):
    if line.startswith("#") or not line.strip():
        continue
    m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line.rstrip("\n"))
    assert m, "not a sample line: %r" % line
    labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
    samples.append((m.group(1), labels, float(m.group(3))))
for sel in sys.argv[2:]:
    m = re.match(r'([^{]+)(?:\{(.*)\})?$', sel)
    want = dict(re.findall(r'([a-zA-Z_]+)="([^"]*)"', m.group(2) or ""))
    found = [v for n, l, v in samples if n == m.group(1) and all(l.get(k) == x for k, x in want.items())]
    if not found:
        sys.exit("no sample %s" % sel)
    print("%d" % sum(found) if all(v == int(v) for v in found) else sum(found))
PY
}
