#!/usr/bin/env bats
# The command line's documentation: the man pages (docs/man/*.scd) say what `clip --help` and
# `clip COMMAND --help` say (tests/check-docs), they render, and the bash completion
# (completions/clip.bash) completes commands and options from the same --help text.
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
	# clip(1) lists every command, from the pages.
	run env MANWIDTH=200 man -l "$BUILD_ROOT/docs/man/clip.1"
	local command
	for command in $("$CLIP" --help | awk '/^commands:/ { i = 1; next } i && !NF { exit } i { print $1 }'); do
		grep -Eq "^ +$command\$" <<<"$output"
		grep -q "See clip-$command(1)" <<<"$output"
	done
	run env MANWIDTH=80 man -l "$BUILD_ROOT/docs/man/clip-mount.1"
	grep -Eq '^ +--no-checkpoints$' <<<"$output"
	run env MANWIDTH=80 man -l "$BUILD_ROOT/docs/man/clip-archive.5"
	grep -q 'clip-archive(5)' <<<"$output"
}

# complete WORD...: COMPREPLY, sorted, one a line, for the command line "WORD... <TAB>" (the
# last word the one being completed), with clip found on PATH as a user would have it.
complete_line() {
	mkdir -p "$T/bin"
	ln -sf "$CLIP" "$T/bin/clip"
	PATH=$T/bin:$PATH bash -c '
		source "$1"
		shift
		COMP_WORDS=("$@")
		COMP_CWORD=$(($# - 1))
		complete -p clip >/dev/null || exit 3
		_clip
		printf "%s\n" "${COMPREPLY[@]}" | sort' complete "$CLIP_SOURCE_ROOT/completions/clip.bash" "$@"
}

@test "bash completion: commands, from clip --help" {
	run complete_line clip mo
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$output" = mount ]
	run complete_line clip ''
	[ "$status" -eq 0 ]
	[ "$output" = "$("$CLIP" --help | awk '/^commands:/ { i = 1; next } i && !NF { exit } i { print $1 }' | sort)" ]
	[ "$(wc -l <<<"$output")" -ge 10 ]
	run complete_line clip --v
	[ "$output" = --version ]
}

@test "bash completion: a command's options, from its --help" {
	run complete_line clip mount --no-
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$output" = "$(printf '%s\n' --no-cache --no-checkpoints --no-index --no-profile)" ]
	run complete_line clip mount app.clip --rec
	echo "$output"
	[ "$output" = "$(printf '%s\n' --record-profile --record-seconds)" ]
	run complete_line clip stats --p
	[ "$output" = --prometheus ]
	# Every long option of a command's man page completes.
	run complete_line clip index --
	local opt
	for opt in $(sed -n '/^# OPTIONS$/,/^# /p' "$CLIP_SOURCE_ROOT/docs/man/clip-index.1.scd" |
		grep -o '^\*--[a-z-]*' | tr -d '*'); do
		grep -qx -- "$opt" <<<"$output"
	done
	# Operands and option arguments: nothing, so that bash completes file names.
	run complete_line clip mount --cache-dir ''
	[ -z "$output" ]
}
