#!/usr/bin/env bats
# Integration test of `clip bundle` / `clip unbundle` with runc: the Debian test image's python3
# runs from an OCI runtime bundle whose rootfs is overlayfs over a real clip mount, as root and as
# the image's USER 1000; exit codes and signals come back, writes land in the upper dir, the
# image's whiteouts hold inside the container, the lower stays read-only, and nothing is left
# mounted after unbundle. Also: a mount by root is allow_other, so that other users read what the
# image's modes allow them (and no more), and bad input fails cleanly.
#
# How to run (as root, with /dev/fuse and overlayfs):
#   meson test -C build integration-bundle -v
#   CLIP=$PWD/build/clip bats tests/integration/bundle.bats
# Needs: root, /dev/fuse, runc, umoci, debootstrap, python3, setpriv; podman for one test.
# CLIP_TEST_IMAGE=DIR reuses a test image, CLIP_TEST_KEEP=1 keeps the temp dir.

load helpers

setup_file() {
	CLIP_SKIP_REASON=$(require_env /dev/fuse umoci debootstrap python3 runc setpriv findmnt fusermount3)
	export CLIP_SKIP_REASON
	[ -z "$CLIP_SKIP_REASON" ] || return 0

	W=$(make_workdir)
	export W
	local base
	base=$(test_image "$W/base") || return 1
	# The same layers with an image config that says USER 1000 and has a label, a working
	# directory and an exposed port: what a runtime spec is made from. umoci only adds a
	# config and a manifest, so a copy of the layout is cheap.
	export IMAGE=$W/image
	cp -r "$base" "$IMAGE"
	umoci config --image "$IMAGE:latest" --tag user --config.user 1000 \
		--config.label org.example.team=ml --config.workingdir /tmp \
		--config.exposedports 8080/tcp
	# umoci's own bundle of it: the reference tree and the reference config.json.
	umoci unpack --image "$IMAGE:user" "$W/reference" >/dev/null
	python3 - "$W/reference/rootfs" >"$W/expected.paths" <<<"$LIST_TREE"

	export ARCHIVE=$W/test.clip USER_ARCHIVE=$W/user.clip
	"$CLIP" index "oci:$IMAGE:latest" -o "$ARCHIVE" --quiet
	"$CLIP" index "oci:$IMAGE:user" -o "$USER_ARCHIVE" --quiet
}

teardown_file() {
	[ -n "${W:-}" ] || return 0
	unmount_under "$W"
	remove_workdir "$W"
}

setup() {
	[ -z "${CLIP_SKIP_REASON:-}" ] || skip "$CLIP_SKIP_REASON"
	T=$(mktemp -d "$W/test.XXXXXX")
	B=$T/bundle
	ID=clip-bats-$$-$BATS_TEST_NUMBER
}

teardown() {
	[ -n "${T:-}" ] || return 0
	runc delete -f "$ID" >/dev/null 2>&1 || true
	unmount_under "$T"
	rm -rf --one-file-system "$T"
}

# Every path under a root (argv[1]) but the API filesystems a runtime mounts over, sorted.
LIST_TREE='
import os, sys
root = sys.argv[1] if len(sys.argv) > 1 else "/"
skip = {"proc", "sys", "dev"}
out = []
for d, dirs, files in os.walk(root):
    rel = os.path.relpath(d, root)
    if rel == ".":
        dirs[:] = [x for x in dirs if x not in skip]
    for name in dirs + files:
        out.append(os.path.normpath(os.path.join("/", rel, name)))
print("\n".join(sorted(out)))
'
export LIST_TREE

# bundle ARGS...: `clip bundle` with a disk cache in $T/cache (bats' fd 3 closed: the daemon
# must not hold it).
bundle() {
	"$CLIP" bundle --cache-dir "$T/cache" "$@" 3>&-
}

@test "python3 runs under runc as root: output, exit code and SIGKILL come back" {
	bundle "$ARCHIVE" "$B" -- python3 -c 'import sys; print("hello", sys.version_info[0]); sys.exit(7)'
	run runc run -b "$B" "$ID"
	[ "$status" -eq 7 ]
	[ "$output" = "hello 3" ]

	# A signal that ends the container comes back as 128 + its number.
	python3 - "$B/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["args"] = ["python3", "-c", "import time; print('up', flush=True); time.sleep(60)"]
json.dump(c, open(sys.argv[1], "w"))
PY
	runc run -b "$B" "$ID" >"$T/out" 2>&1 3>&- &
	local runner=$! tries=0
	until grep -q up "$T/out" || [ $((tries += 1)) -gt 100 ]; do sleep 0.1; done
	runc kill "$ID" KILL
	local rc=0
	wait "$runner" || rc=$?
	[ "$rc" -eq 137 ]
}

@test "the image's USER 1000, WorkingDir, labels: config.json as umoci makes it" {
	bundle "$USER_ARCHIVE" "$B"
	# What the image decides must be what umoci decides: program, working directory, user,
	# and the annotations (labels and the image's own). umoci's env differs only by the
	# TERM=xterm its terminal gets; clip's bundle has no terminal.
	python3 - "$B/config.json" "$W/reference/config.json" <<'PY'
import json, sys
ours, theirs = (json.load(open(p)) for p in sys.argv[1:])
for key in ("args", "cwd"):
    assert ours["process"][key] == theirs["process"][key], (key, ours["process"][key], theirs["process"][key])
for key in ("uid", "gid"):
    assert ours["process"]["user"][key] == theirs["process"]["user"][key], key
assert ours["annotations"] == theirs["annotations"], (ours["annotations"], theirs["annotations"])
assert ours["annotations"]["org.example.team"] == "ml"
assert ours["annotations"]["org.opencontainers.image.exposedPorts"] == "8080/tcp"
env = [e for e in theirs["process"]["env"] if not e.startswith("TERM=")]
assert ours["process"]["env"] == env, (ours["process"]["env"], env)
assert ours["process"]["terminal"] is False
PY
	# And runc runs it as that user.
	python3 - "$B/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["args"] = ["python3", "-c", "import os; print(os.getuid(), os.getgid(), os.getcwd())"]
json.dump(c, open(sys.argv[1], "w"))
PY
	run runc run -b "$B" "$ID"
	[ "$status" -eq 0 ]
	[ "$output" = "1000 0 /tmp" ]
}

@test "a user other than root reads a 0644 file and is refused a 0600 one, mount and container" {
	# On the plain mount, as nobody: root's mount is allow_other, and the kernel checks the
	# image's modes (default_permissions).
	chmod o+x "$W" "$T" # mktemp's 0700 would stop nobody on the way to the mount
	mkdir "$T/mnt"
	"$CLIP" mount --cache-dir "$T/cache" "$ARCHIVE" "$T/mnt" 3>&-
	findmnt -rn -o OPTIONS --mountpoint "$T/mnt" | grep -q allow_other
	local as_nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
	run "${as_nobody[@]}" cat "$T/mnt/etc/debian_version"
	[ "$status" -eq 0 ]
	[ "$output" = "$(cat "$W/reference/rootfs/etc/debian_version")" ]
	run "${as_nobody[@]}" cat "$T/mnt/etc/shells"
	[ "$status" -ne 0 ]
	[[ $output == *"Permission denied"* ]]
	"$CLIP" umount "$T/mnt"

	# -o noallow_other: only root gets in.
	"$CLIP" mount --cache-dir "$T/cache" -o noallow_other "$ARCHIVE" "$T/mnt" 3>&-
	run "${as_nobody[@]}" cat "$T/mnt/etc/debian_version"
	[ "$status" -ne 0 ]
	"$CLIP" umount "$T/mnt"

	# In the container, as the image's user 1000.
	bundle "$USER_ARCHIVE" "$B" -- sh -c 'cat /etc/debian_version && ! cat /etc/shells 2>/dev/null'
	run runc run -b "$B" "$ID"
	[ "$status" -eq 0 ]
	[ "$output" = "$(cat "$W/reference/rootfs/etc/debian_version")" ]
}

@test "writes land in the upper dir, whiteouts hold, the lower stays read-only" {
	bundle "$ARCHIVE" "$B" -- sh -c 'echo written >/root/new && rm /etc/debian_version'
	runc run -b "$B" "$ID"
	[ "$(cat "$B/upper/root/new")" = written ]
	# The deletion is a whiteout in the upper dir; the clip mount still has the file.
	[ -c "$B/upper/etc/debian_version" ]
	[ -f "$B/lower/etc/debian_version" ]
	[ ! -e "$B/rootfs/etc/debian_version" ]
	run touch "$B/lower/new"
	[ "$status" -ne 0 ]
	[[ $output == *"Read-only file system"* ]]

	# Inside a fresh container the tree is exactly umoci's: what the image's layers deleted
	# (whiteouts, opaque directories) is absent, nothing else is.
	"$CLIP" unbundle "$B"
	bundle "$ARCHIVE" "$B" -- python3 -c "$LIST_TREE"
	runc run -b "$B" "$ID" >"$T/container.paths"
	diff "$W/expected.paths" "$T/container.paths"
}

@test "unbundle unmounts and removes what bundle made; --keep-upper keeps the writes" {
	bundle "$ARCHIVE" "$B" -- true
	local lower=$B/lower
	runc run -b "$B" "$ID"
	# While the container exists its rootfs is busy: unbundle refuses and keeps everything.
	# (runc init holds the container's stdio until it starts: not bats' pipes)
	runc create -b "$B" "$ID-2" </dev/null >/dev/null 2>&1 3>&-
	run --separate-stderr "$CLIP" unbundle "$B"
	[ "$status" -eq 1 ]
	[[ $stderr == *"runc delete"* ]]
	is_mounted "$B/rootfs"
	runc delete -f "$ID-2"

	"$CLIP" unbundle "$B"
	no_mount_under "$B"
	[ ! -e "$B" ]
	wait_for_no_daemon "$lower"

	bundle "$ARCHIVE" "$B" -- sh -c 'echo kept >/kept'
	runc run -b "$B" "$ID"
	"$CLIP" unbundle --keep-upper "$B"
	no_mount_under "$B"
	[ "$(ls "$B")" = upper ]
	[ "$(cat "$B/upper/kept")" = kept ]
}

@test "--lower uses an existing clip mount and unbundle leaves it mounted" {
	mkdir "$T/mnt"
	"$CLIP" mount --cache-dir "$T/cache" "$USER_ARCHIVE" "$T/mnt" 3>&-
	"$CLIP" bundle --lower "$T/mnt" "$B" -- id -u
	run runc run -b "$B" "$ID"
	[ "$status" -eq 0 ]
	[ "$output" = 1000 ]
	"$CLIP" unbundle "$B"
	[ ! -e "$B" ]
	is_mounted "$T/mnt"
	"$CLIP" umount "$T/mnt"
}

@test "--rootless: a user-namespace spec that runc runs" {
	bundle --rootless --user 0 "$USER_ARCHIVE" "$B" -- python3 -c 'print(open("/proc/self/uid_map").read().split())'
	run runc run -b "$B" "$ID"
	[ "$status" -eq 0 ]
	[ "$output" = "['0', '$(id -u)', '1']" ]
	# The image's user 1000 has no id to map to: refused, nothing left.
	run --separate-stderr "$CLIP" bundle --rootless --cache-dir "$T/cache" "$USER_ARCHIVE" "$T/b2" 3>&-
	expect_clean_failure "$T/b2"
	[[ $stderr == *rootless* ]]
	no_mount_under "$T/b2"
}

@test "bad input fails with one line and leaves nothing behind" {
	# Image configs a bundle must refuse, each as its own tag of the test image: a user the
	# image does not have, a relative WorkingDir (Docker refuses it too), neither Entrypoint
	# nor Cmd (fine once the command line gives the program).
	cp -r "$IMAGE" "$T/image"
	umoci config --image "$T/image:latest" --tag ghost --config.user ghost
	umoci config --image "$T/image:latest" --tag relative --config.workingdir srv
	umoci config --image "$T/image:latest" --tag nocmd --clear=config.cmd \
		--clear=config.entrypoint
	local tag
	for tag in ghost relative nocmd; do
		"$CLIP" index "oci:$T/image:$tag" -o "$T/$tag.clip" --quiet
	done
	run --separate-stderr bundle "$T/ghost.clip" "$B"
	expect_clean_failure "$B"
	[[ $stderr == *'user "ghost": no such user in the image'"'"'s /etc/passwd'* ]]
	no_mount_under "$B"
	run --separate-stderr bundle "$T/relative.clip" "$B"
	expect_clean_failure "$B"
	[[ $stderr == *'WorkingDir "srv" is not an absolute path'* ]]
	run --separate-stderr bundle "$T/nocmd.clip" "$B"
	expect_clean_failure "$B"
	[[ $stderr == *'no Entrypoint or Cmd: give the program to run after --'* ]]
	bundle "$T/nocmd.clip" "$B" -- true
	runc run -b "$B" "$ID"
	"$CLIP" unbundle "$B"
	# --user and --env are checked the same way
	run --separate-stderr bundle --user ghost "$ARCHIVE" "$B"
	expect_clean_failure "$B"
	run --separate-stderr bundle --env NOVALUE "$ARCHIVE" "$B"
	expect_clean_failure "$B"
	[[ $stderr == *'--env "NOVALUE": expected KEY=VALUE'* ]]
	no_mount_under "$B"
	# a bundle directory that is not empty
	mkdir "$B" && touch "$B/precious"
	run --separate-stderr bundle "$ARCHIVE" "$B"
	[ "$status" -eq 1 ]
	[[ $stderr == *"not empty"* ]]
	[ "$(ls "$B")" = precious ]
	no_mount_under "$B"
	# unbundle of something clip bundle did not make
	run --separate-stderr "$CLIP" unbundle "$B"
	[ "$status" -eq 1 ]
	[[ $stderr == *"not a bundle made by clip bundle"* ]]
	[ -e "$B/precious" ]
	# an archive that is not one: the mount's own error, nothing left
	echo junk >"$T/junk.clip"
	run --separate-stderr bundle "$T/junk.clip" "$T/b3"
	[ "$status" -eq 1 ]
	[ ! -e "$T/b3" ]
}

@test "podman run --rootfs runs the bundle's rootfs" {
	command -v podman >/dev/null || skip "podman not installed (see scripts/install-deps)"
	bundle "$ARCHIVE" "$B"
	local podman=(podman --root "$T/podman" --runroot "$T/podman-run" --cgroup-manager cgroupfs
		--events-backend file)
	run "${podman[@]}" run --rm --runtime runc --ulimit nofile=1024:1024 \
		--ulimit nproc=1024:1024 --rootfs "$B/rootfs" python3 -c 'print("from podman")'
	[ "$status" -eq 0 ]
	[[ $output == *"from podman"* ]]
	"${podman[@]}" system reset -f >/dev/null 2>&1 || true
	unmount_under "$T/podman-run"
	unmount_under "$T/podman"
}
