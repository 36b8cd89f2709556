#!/usr/bin/env bats
# The command line's documentation: the man pages (docs/man/*.scd) say what `clip --help` and
# `clip COMMAND --help` say (tests/check-docs), and they render.
#
# How to run (no root, no network):
#   meson test -C build integration-cli -v
#   CLIP=$PWD/build/clip bats tests/integration/cli.bats
# CLIP_BUILD_ROOT (meson sets it; default: the directory of $CLIP) holds the built pages.

load helpers

setup() {
	T=$(make_workdir)
	BUILD_ROOT=${CLIP_BUILD_ROOT:-$(dirname "$CLIP")}
}

teardown() {
	remove_workdir "${T:-}"
}

@test "every command has a man page, and each page's options are its --help's" {
	run "$CLIP_SOURCE_ROOT/tests/check-docs" "$CLIP"
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "check-docs fails when a page or --help has an option the other lacks" {
	cp -r "$CLIP_SOURCE_ROOT/docs/man" "$T/man"
	# A page gains one.
	sed -i 's/^# OPTIONS$/# OPTIONS\n\n*--bogus*\n\tNothing./' "$T/man/clip-mount.1.scd"
	run "$CLIP_SOURCE_ROOT/tests/check-docs" "$CLIP" "$T/man"
	echo "$output"
	[ "$status" -eq 1 ]
	grep -qx 'clip mount: --bogus is in clip-mount.1.scd, not in --help' <<<"$output"
	# --help gains one (the page loses it: the same difference seen from the other side).
	cp "$CLIP_SOURCE_ROOT/docs/man/clip-mount.1.scd" "$T/man/"
	sed -i '/^\*--prefetch\*$/,+2d' "$T/man/clip-mount.1.scd"
	run "$CLIP_SOURCE_ROOT/tests/check-docs" "$CLIP" "$T/man"
	echo "$output"
	[ "$status" -eq 1 ]
	grep -qx 'clip mount: --prefetch is in --help, not in clip-mount.1.scd' <<<"$output"
	# A command without a page.
	cp "$CLIP_SOURCE_ROOT/docs/man/clip-mount.1.scd" "$T/man/"
	rm "$T/man/clip-umount.1.scd"
	run "$CLIP_SOURCE_ROOT/tests/check-docs" "$CLIP" "$T/man"
	echo "$output"
	[ "$status" -eq 1 ]
	grep -q 'clip-umount.1.scd: No such file' <<<"$output"
}

@test "the built man pages render without warnings" {
	[ -f "$BUILD_ROOT/docs/man/clip.1" ] || skip "no man pages in $BUILD_ROOT (scdoc not found)"
	command -v man >/dev/null || skip "man not installed"
	local page
	for page in "$CLIP_SOURCE_ROOT"/docs/man/*.scd; do
		page=$BUILD_ROOT/docs/man/$(basename "$page" .scd)
		run --separate-stderr env MANWIDTH=80 man --warnings -l "$page"
		echo "$page: $stderr"
		[ "$status" -eq 0 ]
		[ -z "$stderr" ]
		grep -q '^NAME' <<<"$output"
	done
	run env MANWIDTH=80 man -l "$BUILD_ROOT/docs/man/clip-mount.1"
	grep -Eq '^ +--no-checkpoints$' <<<"$output"
	run env MANWIDTH=80 man -l "$BUILD_ROOT/docs/man/clip-archive.5"
	grep -q 'clip-archive(5)' <<<"$output"
}
