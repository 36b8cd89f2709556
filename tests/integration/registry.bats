#!/usr/bin/env bats
# Integration test of `clip index REF` and lazy `clip cat` against real registries on 127.0.0.1:
# Debian's docker-registry (distribution 2.8) anonymous, with htpasswd Basic auth, with Bearer
# tokens from tools/token_server.py and over TLS with a test CA, plus tools/fault_proxy.py in
# front of them to cut connections, answer 500/429, corrupt bytes, delay, throttle and redirect.
# An archive indexed from a registry must equal the one indexed from the same image as an OCI
# layout (`clip ls -R --manifest` and the digests of `clip info`), and files read lazily with
# `clip cat` must equal what `umoci unpack` extracts. Mounts with `--prefetch` read through the
# fault proxy too: the span engine's hydration under resets, 5xx, stalls and wrong bytes, beside
# many readers, must give only right bytes, keep only right chunks, stop at once on unmount and
# stay within its memory bound.
#
# How to run (as root):
#   meson test -C build integration-registry -v       # meson sets CLIP and CLIP_SOURCE_ROOT
#   CLIP=$PWD/build/clip bats tests/integration/registry.bats
# Needs: root, umoci, debootstrap, python3, docker-registry, skopeo, openssl, htpasswd
# (apache2-utils), curl, coreutils' timeout; the TLS tests also unshare and mount (util-linux):
# clients talk plain HTTP to 127.0.0.1, so they reach the TLS registry as registry.clip.test,
# which only their private mount namespace's /etc/hosts knows (see with_test_hosts). The mount
# tests also need /dev/fuse and fusermount3 (they skip without).
# The test image is built as for index.bats (CLIP_TEST_IMAGE=DIR reuses a built one;
# CLIP_TEST_KEEP=1 keeps the temp dir with the servers' logs and request logs). All registries
# share one storage directory, so the images are pushed once; ~2.5 min with a cached image.

load helpers
load registry

setup_file() {
	CLIP_SKIP_REASON=$(require_env umoci debootstrap python3 tar findmnt docker-registry skopeo \
		openssl htpasswd curl timeout getent)
	export CLIP_SKIP_REASON
	[ -z "$CLIP_SKIP_REASON" ] || return 0

	W=$(make_workdir)
	export W REG_DIR=$W/servers
	local t0=$SECONDS
	IMAGE=$(test_image "$W/image") || return 1
	export IMAGE
	IMAGE_DIGEST=$(layout_manifest_digest "$IMAGE")
	export IMAGE_DIGEST

	umoci unpack --image "$IMAGE:latest" "$W/bundle" >/dev/null
	export ROOTFS=$W/bundle/rootfs
	# Files read lazily in every test on the test image: tiny, a binary, several spans.
	local python
	python=$(readlink -f "$ROOTFS/usr/bin/python3")
	export CAT_PATHS="/usr/lib/os-release ${python#"$ROOTFS"} /clip-test/big/3mib-text /clip-test/big/20mib-random"

	# The reference: the same image indexed from its layout.
	local start end
	start=$(date +%s.%N)
	"$CLIP" index "oci:$IMAGE:latest" -o "$W/local.clip" --quiet
	end=$(date +%s.%N)
	export LOCAL_INDEX_SECONDS
	LOCAL_INDEX_SECONDS=$(awk "BEGIN { print $end - $start }")
	"$CLIP" ls -R --manifest "$W/local.clip" >"$W/local.manifest"
	info_digests "$W/local.clip" >"$W/local.info"

	# A two-platform image index.
	local arch
	for arch in amd64 arm64; do
		make_arch_layout "$W/$arch" "linux/$arch"
		umoci unpack --image "$W/$arch:latest" "$W/$arch-bundle" >/dev/null
		"$CLIP" index "oci:$W/$arch:latest" -o "$W/$arch.clip" --quiet
		"$CLIP" ls -R --manifest "$W/$arch.clip" >"$W/$arch.manifest"
	done
	ARM64_DIGEST=$(layout_manifest_digest "$W/arm64")
	MULTI_DIGEST=$(make_multiarch_layout "$W/multi" "$W/amd64" "$W/arm64")
	export ARM64_DIGEST MULTI_DIGEST

	reg_init
	registry_start anon anonymous
	push_image "oci:$IMAGE:latest" "$(server_addr anon)/test/img:v1"
	push_image "oci:$W/multi:latest" "$(server_addr anon)/test/multi:v1" --all
	token_server_start tok
	registry_start token token tok
	registry_start basic htpasswd
	registry_start tls tls
	fault_proxy_start proxy anon
	fault_proxy_start bproxy basic --redirect-auth "$REG_USER:$REG_PASSWORD"
	TEST_HOSTS_MISSING=$(reg_test_hosts_missing)
	export TEST_HOSTS_MISSING
	echo "# images built and servers up in $((SECONDS - t0)) s" >&3
}

teardown_file() {
	[ -z "${W:-}" ] || unmount_under "$W"
	servers_stop_all
	remove_workdir "${W:-}"
}

setup() {
	[ -z "${CLIP_SKIP_REASON:-}" ] || skip "$CLIP_SKIP_REASON"
	T=$(mktemp -d "$W/test.XXXXXX")
	mkdir -p "$T/home" "$T/docker" "$T/xdg" "$T/bin" "$T/cache"
	AUTH_FILE=
	CLIP_IN_TEST_HOSTS=
	CAT_OPTS=()
}

teardown() {
	[ -n "${T:-}" ] || return 0
	unmount_under "$T"
	rm -rf --one-file-system "$T"
}

# layout_manifest_digest LAYOUT: the digest of the "latest" entry of index.json.
layout_manifest_digest() {
	python3 - "$1" <<-'PY'
		import json, sys
		index = json.load(open(sys.argv[1] + "/index.json"))
		print([d["digest"] for d in index["manifests"]
		       if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == "latest"][0])
	PY
}

# info_digests ARCHIVE: the lines of `clip info` that depend on the image only, not on where it
# was read from.
info_digests() {
	"$CLIP" info "$1" | grep -E '^ *(manifest|config|platform|files|inodes|file bytes|layers|checkpoints|layer [0-9]+):'
}

# clipx ARGS...: $CLIP seeing only the credentials a test gives it: HOME, DOCKER_CONFIG,
# XDG_RUNTIME_DIR and XDG_CACHE_HOME point into $T, REGISTRY_AUTH_FILE is $AUTH_FILE if set,
# and $T/bin comes first in PATH (credential helpers). With CLIP_IN_TEST_HOSTS set it runs where
# $REG_TLS_NAME resolves to 127.0.0.1 (with_test_hosts).
clipx() {
	local envs=(HOME="$T/home" DOCKER_CONFIG="$T/docker" XDG_RUNTIME_DIR="$T/xdg"
		XDG_CACHE_HOME="$T/cache" PATH="$T/bin:$PATH") wrap=()
	[ -z "${AUTH_FILE:-}" ] || envs+=(REGISTRY_AUTH_FILE="$AUTH_FILE")
	[ -z "${CLIP_IN_TEST_HOSTS:-}" ] || wrap=(with_test_hosts)
	"${wrap[@]}" env -u REGISTRY_AUTH_FILE "${envs[@]}" "$CLIP" "$@"
}

need_test_hosts() {
	[ -z "$TEST_HOSTS_MISSING" ] || skip "$TEST_HOSTS_MISSING"
}

# index_ok REF ARCHIVE [OPTIONS...]: `clip index --quiet` must succeed and print nothing.
index_ok() {
	local ref=$1 out=$2 start end
	shift 2
	start=$(date +%s.%N)
	run --separate-stderr clipx index "$ref" -o "$out" --quiet "$@"
	end=$(date +%s.%N)
	INDEX_SECONDS=$(awk "BEGIN { print $end - $start }")
	if [ "$status" -ne 0 ] || [ ! -s "$out" ] || [ -n "$output" ] || [ -n "$stderr" ]; then
		echo "clip index $ref $*: exit $status after $INDEX_SECONDS s"
		echo "stdout: $output"
		echo "stderr: $stderr"
		return 1
	fi
}

# index_fails REF [OPTIONS...]: `clip index --quiet` into $T/out.clip must fail the way the CLI
# promises (one "clip: what: why" line, no archive, no temporary file left in $T).
index_fails() {
	local ref=$1 start end
	shift
	start=$(date +%s.%N)
	run --separate-stderr clipx index "$ref" -o "$T/out.clip" --quiet "$@"
	end=$(date +%s.%N)
	FAIL_SECONDS=$(awk "BEGIN { print $end - $start }")
	echo "clip index $ref $*: exit $status after $FAIL_SECONDS s; stderr: $stderr"
	expect_clean_failure "$T/out.clip"
	local left
	left=$(find "$T" -maxdepth 1 -name 'out.clip*')
	[ -z "$left" ] || { echo "left behind: $left"; return 1; }
}

# same_as_reference ARCHIVE [NAME]: ARCHIVE lists the same tree and has the same digests as
# $W/NAME.clip (default "local", the test image indexed from its layout).
same_as_reference() {
	local archive=$1 name=${2:-local}
	clipx ls -R --manifest "$archive" >"$T/got.manifest"
	if ! cmp -s "$W/$name.manifest" "$T/got.manifest"; then
		diff -u --label "$name (layout)" "$W/$name.manifest" --label registry \
			"$T/got.manifest" | head -n 50
		return 1
	fi
	if [ "$name" = local ]; then
		info_digests "$archive" >"$T/got.info"
		diff -u --label layout "$W/local.info" --label registry "$T/got.info"
	fi
}

# cat_check ARCHIVE ROOTFS PATH...: `clip cat $CAT_OPTS ARCHIVE PATH` gives the bytes of
# ROOTFS/PATH (sha256 compared) for every PATH.
cat_check() {
	local archive=$1 rootfs=$2 path want got fails=0
	shift 2
	for path in "$@"; do
		want=$(sha256sum <"$rootfs$path" | cut -d' ' -f1)
		if ! got=$(clipx cat "${CAT_OPTS[@]}" "$archive" "$path" 2>"$T/cat.err" |
			sha256sum | cut -d' ' -f1) || [ -s "$T/cat.err" ]; then
			echo "clip cat $path: $(cat "$T/cat.err")"
			fails=$((fails + 1))
		elif [ "$got" != "$want" ]; then
			echo "clip cat $path: sha256 $got, want $want"
			fails=$((fails + 1))
		fi
	done
	[ "$fails" -eq 0 ]
}

# cat_stats ARCHIVE PATH: run `clip cat --stats` and set STAT_REQUESTS and STAT_COMPRESSED from
# its stats line ("... compressed bytes read: N ... requests: N ...").
cat_stats() {
	clipx cat --stats "${CAT_OPTS[@]}" "$1" "$2" >"$T/stats.out" 2>"$T/stats.err" || {
		echo "clip cat --stats $2 failed: $(cat "$T/stats.err")"
		return 1
	}
	STAT_COMPRESSED=$(grep -oE 'compressed bytes read: *[0-9]+' "$T/stats.err" | head -n 1 | grep -oE '[0-9]+$')
	STAT_REQUESTS=$(grep -oE '(source|registry) requests: *[0-9]+' "$T/stats.err" | head -n 1 | grep -oE '[0-9]+$')
	if [ -z "$STAT_COMPRESSED" ] || [ -z "$STAT_REQUESTS" ]; then
		echo "no 'compressed bytes read' and 'requests' counts in: $(cat "$T/stats.err")"
		return 1
	fi
}

# test_image_check ARCHIVE: the archive of the test image equals the reference and its files
# read lazily equal the unpacked ones.
test_image_check() {
	same_as_reference "$1"
	# shellcheck disable=SC2086 # CAT_PATHS is a list of paths without spaces
	cat_check "$1" "$ROOTFS" $CAT_PATHS
}

# arch_check ARCHIVE ARCH: the archive is the ARCH image of the index, read lazily.
arch_check() {
	same_as_reference "$1" "$2"
	cat_check "$1" "$W/$2-bundle/rootfs" /etc/clip-arch /arch-data/random /arch-data/readme
}

# write_docker_config JSON: $T/docker/config.json.
write_docker_config() {
	printf '%s\n' "$1" >"$T/docker/config.json"
}

# write_docker_auth KEY [PASSWORD]: a config.json whose "auths" has KEY with the test user and
# PASSWORD (default: the right one) in base64 "auth".
write_docker_auth() {
	write_docker_config "{\"auths\": {\"$1\": {\"auth\": \"$(basic_auth_b64 "$REG_USER" "${2:-$REG_PASSWORD}")\"}}}"
}

basic_auth_b64() {
	printf '%s:%s' "${1:-$REG_USER}" "${2:-$REG_PASSWORD}" | base64 -w0
}

host_arch() {
	case $(uname -m) in
	x86_64) echo amd64 ;;
	aarch64) echo arm64 ;;
	*) uname -m ;;
	esac
}

# proxy_log NAME: the proxy's requests, one line each, for failure messages.
proxy_log() {
	python3 - "$REG_DIR/$1.requests" <<-'PY'
		import json, sys
		for line in open(sys.argv[1]):
		    r = json.loads(line)
		    print("#%d %s %s %s range=%s -> %s %d bytes fault=%s auth=%s" % (
		        r["n"], r["method"], r["host"], r["path"], r["range"], r["status"], r["bytes"],
		        r["fault"], r["authorization"]))
	PY
}

blob_path_re() {
	echo "/blobs/$1\$"
}

# --- anonymous, references, digests -------------------------------------------------------

@test "anonymous pull: the archive equals the layout's and files read lazily equal the image" {
	local ref
	ref=$(server_addr anon)/test/img:v1
	index_ok "$ref" "$T/a.clip"
	echo "# clip index from the registry: $INDEX_SECONDS s (from the layout: $LOCAL_INDEX_SECONDS s)" >&3
	test_image_check "$T/a.clip"
	# The archive says where the image came from.
	run --separate-stderr clipx info "$T/a.clip"
	echo "$output"
	[[ $output == *"$(server_addr anon)"* ]]
	[[ $output == *test/img* ]]
	[[ $output == *"$IMAGE_DIGEST"* ]]
	# A part in the middle of a multi-span file.
	local want got
	want=$(tail -c +10000001 "$ROOTFS/clip-test/big/20mib-random" | head -c 100000 | sha256sum)
	got=$(clipx cat --offset 10000000 --length 100000 "$T/a.clip" /clip-test/big/20mib-random | sha256sum)
	[ "$got" = "$want" ]
	# A cold read of a small file fetches at most two spans (the largest is < 2 MiB compressed).
	cat_stats "$T/a.clip" /usr/lib/os-release
	echo "# cold cat of /usr/lib/os-release: $STAT_REQUESTS requests, $STAT_COMPRESSED compressed bytes" >&3
	[ "$STAT_REQUESTS" -ge 1 ]
	[ "$STAT_COMPRESSED" -gt 0 ]
	[ "$STAT_COMPRESSED" -le $((4 << 20)) ]
}

@test "without --quiet, a non-terminal gets one summary line" {
	run --separate-stderr clipx index "$(server_addr anon)/test/multi:v1" -o "$T/m.clip"
	echo "status $status; stdout: $output; stderr: $stderr"
	[ "$status" -eq 0 ]
	local lines
	lines=$({
		[ -z "$output" ] || printf '%s\n' "$output"
		[ -z "$stderr" ] || printf '%s\n' "$stderr"
	} | wc -l)
	[ "$lines" -eq 1 ]
}

@test "pull by digest, with docker:// and with tag and digest together" {
	local addr
	addr=$(server_addr anon)
	index_ok "$addr/test/img@$IMAGE_DIGEST" "$T/a.clip"
	test_image_check "$T/a.clip"
	index_ok "docker://$addr/test/multi:v1@$ARM64_DIGEST" "$T/arm.clip"
	arch_check "$T/arm.clip" arm64
	index_ok "docker://$addr/test/multi:v1" "$T/m.clip" --platform linux/arm64
	arch_check "$T/m.clip" arm64
}

@test "a digest the registry does not have fails cleanly" {
	local missing
	missing=sha256:$(printf 'no such manifest' | sha256sum | cut -d' ' -f1)
	index_fails "$(server_addr anon)/test/img@$missing"
	[[ $stderr == *"$(server_addr anon)"* ]]
	index_fails "$(server_addr anon)/test/no-such-repo:v1"
	index_fails "$(server_addr anon)/test/img:no-such-tag"
}

@test "multi-arch index: --platform picks the manifest, the default is the host's" {
	local addr
	addr=$(server_addr anon)
	index_ok "$addr/test/multi:v1" "$T/arm.clip" --platform linux/arm64
	arch_check "$T/arm.clip" arm64
	index_ok "$addr/test/multi:v1" "$T/amd.clip" --platform linux/amd64
	arch_check "$T/amd.clip" amd64
	local host
	host=$(host_arch)
	if [ "$host" = amd64 ] || [ "$host" = arm64 ]; then
		index_ok "$addr/test/multi:v1" "$T/host.clip"
		arch_check "$T/host.clip" "$host"
	fi
	# By the index's digest, the platform still chooses.
	index_ok "$addr/test/multi@$MULTI_DIGEST" "$T/arm2.clip" --platform linux/arm64
	arch_check "$T/arm2.clip" arm64
	index_fails "$addr/test/multi:v1" --platform linux/s390x
	[[ $stderr == *s390x* ]]
}

@test "an invalid reference fails before any network traffic" {
	local p bad
	p=$(server_addr proxy)
	fault_set proxy
	for bad in "$p/Test/img:v1" "$p/test/img:" "$p/test//img:v1" "$p/test/img@sha256:abc" \
		"$p/test/img@" "$p/test/img:$(printf 'a%.0s' {1..129})" "docker://" \
		"$p/$(printf 'a%.0s' {1..260})"; do
		index_fails "$bad"
		[[ $stderr == *"invalid reference"* ]] || {
			echo "no 'invalid reference' in: $stderr"
			return 1
		}
	done
	local n
	n=$(server_requests proxy)
	[ "$n" -eq 0 ] || {
		echo "$n requests reached the proxy:"
		proxy_log proxy
		return 1
	}
}

# --- authentication -------------------------------------------------------------------------

@test "htpasswd Basic auth with credentials from docker's config.json auths" {
	local addr
	addr=$(server_addr basic)
	write_docker_auth "$addr"
	index_ok "$addr/test/img:v1" "$T/a.clip"
	test_image_check "$T/a.clip"
	# The keys may carry a scheme, as docker login writes them.
	write_docker_auth "http://$addr"
	index_ok "$addr/test/multi:v1" "$T/m.clip" --platform linux/arm64
	arch_check "$T/m.clip" arm64
}

@test "htpasswd Basic auth: no or wrong credentials fail cleanly without showing the secret" {
	local addr
	addr=$(server_addr basic)
	index_fails "$addr/test/multi:v1"
	[[ $stderr == *"$addr"* ]]
	write_docker_auth "$addr" wrong-Pa55word
	index_fails "$addr/test/multi:v1"
	[[ $stderr != *wrong-Pa55word* ]]
	# A malformed "auth" is an error naming the file, not a silent anonymous pull.
	write_docker_config "{\"auths\": {\"$addr\": {\"auth\": \"***not base64***\"}}}"
	index_fails "$addr/test/multi:v1"
	[[ $stderr == *config.json* ]]
}

@test "Basic auth with credentials from a docker-credential helper (credHelpers, credsStore)" {
	local addr
	addr=$(server_addr basic)
	cat >"$T/bin/docker-credential-clip-test" <<-EOF
		#!/bin/sh
		read -r server
		echo "\$* \$server" >>"$T/helper.log"
		if [ "\$1" = get ] && [ "\$server" = "$addr" ]; then
			printf '{"ServerURL": "%s", "Username": "%s", "Secret": "%s"}\n' \
				"\$server" "$REG_USER" '$REG_PASSWORD'
			exit 0
		fi
		echo "credentials not found in native keychain"
		exit 1
	EOF
	chmod +x "$T/bin/docker-credential-clip-test"
	write_docker_config "{\"credHelpers\": {\"$addr\": \"clip-test\"}}"
	index_ok "$addr/test/img:v1" "$T/a.clip"
	test_image_check "$T/a.clip"
	cat "$T/helper.log"
	grep -qx "get $addr" "$T/helper.log"

	rm -f "$T/helper.log"
	write_docker_config '{"credsStore": "clip-test"}'
	index_ok "$addr/test/multi:v1" "$T/m.clip" --platform linux/arm64
	arch_check "$T/m.clip" arm64
	grep -qx "get $addr" "$T/helper.log"
}

@test "Basic auth with podman's auth.json: REGISTRY_AUTH_FILE and XDG_RUNTIME_DIR" {
	local addr
	addr=$(server_addr basic)
	printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$addr" "$(basic_auth_b64)" >"$T/auth.json"
	AUTH_FILE=$T/auth.json
	# REGISTRY_AUTH_FILE comes first: a wrong docker config must not matter.
	write_docker_auth "$addr" wrong
	index_ok "$addr/test/img:v1" "$T/a.clip"
	test_image_check "$T/a.clip"

	AUTH_FILE=
	rm "$T/docker/config.json"
	mkdir -p "$T/xdg/containers"
	mv "$T/auth.json" "$T/xdg/containers/auth.json"
	index_ok "$addr/test/multi:v1" "$T/m.clip" --platform linux/amd64
	arch_check "$T/m.clip" amd64
}

@test "token auth: anonymous tokens" {
	local addr
	addr=$(server_addr token)
	: >"$REG_DIR/tok.requests"
	index_ok "$addr/test/multi:v1" "$T/m.clip" --platform linux/arm64
	arch_check "$T/m.clip" arm64
	cat "$REG_DIR/tok.requests"
	[ "$(server_requests tok 'r["status"] == 200 and r["user"] is None')" -ge 1 ]
	[ "$(server_requests tok '"repository:test/multi:pull" in r["scopes"]')" -ge 1 ]
	[ "$(server_requests tok 'r["status"] != 200')" -eq 0 ]
}

@test "token auth: Basic credentials from config.json at the token server" {
	local addr
	addr=$(server_addr token)
	write_docker_auth "$addr"
	: >"$REG_DIR/tok.requests"
	index_ok "$addr/test/img:v1" "$T/a.clip"
	cat "$REG_DIR/tok.requests"
	[ "$(server_requests tok "r['user'] == '$REG_USER' and r['status'] == 200")" -ge 1 ]
	[ "$(server_requests tok 'r["user"] is None or r["status"] != 200')" -eq 0 ]
	# Tokens are cached per scope: the manifest's token serves the config and the 4 layers.
	local during_index
	during_index=$(server_requests tok)
	echo "token requests while indexing: $during_index"
	[ "$during_index" -le 2 ]
	test_image_check "$T/a.clip"
	[ "$(server_requests tok 'r["user"] is None or r["status"] != 200')" -eq 0 ]
}

@test "token auth: an identity token is exchanged with grant_type=refresh_token" {
	local addr
	addr=$(server_addr token)
	write_docker_config "{\"auths\": {\"$addr\": {\"identitytoken\": \"$REG_REFRESH_TOKEN\"}}}"
	: >"$REG_DIR/tok.requests"
	index_ok "$addr/test/multi:v1" "$T/m.clip" --platform linux/amd64
	arch_check "$T/m.clip" amd64
	cat "$REG_DIR/tok.requests"
	[ "$(server_requests tok 'r["method"] == "POST" and r["grant"] == "refresh_token" and r["status"] == 200')" -ge 1 ]
}

@test "token auth: wrong credentials fail cleanly" {
	local addr
	addr=$(server_addr token)
	write_docker_auth "$addr" wrong-Pa55word
	index_fails "$addr/test/multi:v1"
	[[ $stderr != *wrong-Pa55word* ]]
}

# --- TLS ------------------------------------------------------------------------------------

@test "TLS with --ca-file: index and lazy reads" {
	need_test_hosts
	CLIP_IN_TEST_HOSTS=1
	CAT_OPTS=(--ca-file "$REG_DIR/certs/ca.pem")
	index_ok "$REG_TLS_NAME:$(cat "$REG_DIR/tls.port")/test/img:v1" "$T/a.clip" \
		--ca-file "$REG_DIR/certs/ca.pem"
	test_image_check "$T/a.clip"
}

@test "TLS: the system CAs, or a CA that did not sign the certificate, refuse it cleanly" {
	need_test_hosts
	CLIP_IN_TEST_HOSTS=1
	local ref
	ref=$REG_TLS_NAME:$(cat "$REG_DIR/tls.port")/test/multi:v1
	index_fails "$ref" --platform linux/arm64
	[[ $stderr =~ [Cc]ertificate|SSL|TLS ]]
	[[ $stderr == *"$REG_TLS_NAME"* ]]
	# token.pem is a self-signed certificate of another key.
	index_fails "$ref" --platform linux/arm64 --ca-file "$REG_DIR/certs/token.pem"
	[[ $stderr =~ [Cc]ertificate|SSL|TLS ]]
	# The lazy reads of an archive indexed over TLS need the CA too.
	index_ok "$ref" "$T/m.clip" --platform linux/arm64 --ca-file "$REG_DIR/certs/ca.pem"
	CAT_OPTS=(--ca-file "$REG_DIR/certs/ca.pem")
	arch_check "$T/m.clip" arm64
	run --separate-stderr clipx cat "$T/m.clip" /etc/clip-arch
	echo "status $status; stderr: $stderr"
	[ "$status" -ne 0 ]
	[ -z "$output" ]
	[[ $stderr =~ [Cc]ertificate|SSL|TLS ]]
}

# --- faults ---------------------------------------------------------------------------------

@test "a connection cut mid-blob is resumed with a Range request: same archive" {
	local p big
	p=$(server_addr proxy)
	big=$(largest_layer "$IMAGE:latest")
	fault_set proxy "$(fault_rule cut "$(blob_path_re "$big")" after_bytes=10000000)"
	index_ok "$p/test/img:v1" "$T/a.clip"
	proxy_log proxy
	[ "$(server_requests proxy 'r["fault"] == "cut"')" -eq 1 ]
	# The next GET of that blob starts where the cut one stopped, not from 0.
	local msg
	msg=$(python3 - "$REG_DIR/proxy.requests" "$big" <<-'PY'
		import json, re, sys
		reqs = [json.loads(l) for l in open(sys.argv[1])]
		blob = [r for r in reqs if r["method"] == "GET" and r["path"].endswith(sys.argv[2])]
		cut = [i for i, r in enumerate(blob) if r["fault"] == "cut"][0]
		after = blob[cut + 1]
		m = re.fullmatch(r"bytes=(\d+)-(\d*)", after["range"] or "")
		assert m and 0 < int(m.group(1)) <= 10000000, "resumed with range %r" % after["range"]
		print("# cut after 10000000 bytes, resumed with Range: %s" % after["range"])
	PY
	)
	echo "$msg" >&3
	test_image_check "$T/a.clip"
}

@test "one 500 on the manifest and one on a blob are retried: same archive, lazy reads too" {
	local p
	p=$(server_addr proxy)
	fault_set proxy "$(fault_rule status /manifests/ status=500)" \
		"$(fault_rule status /blobs/ status=500 skip=1)"
	index_ok "$p/test/img:v1" "$T/a.clip"
	proxy_log proxy
	[ "$(server_requests proxy 'r["status"] == 500')" -eq 2 ]
	same_as_reference "$T/a.clip"
	# A 500 on the first Range read of `clip cat` is retried too.
	fault_set proxy "$(fault_rule status /blobs/ status=500)"
	test_image_check "$T/a.clip"
	[ "$(server_requests proxy 'r["status"] == 500')" -eq 1 ]
}

@test "a 429 with Retry-After: 1 is honoured: same archive" {
	local p big
	p=$(server_addr proxy)
	big=$(largest_layer "$IMAGE:latest")
	fault_set proxy "$(fault_rule status "$(blob_path_re "$big")" status=429 \
		'headers={"Retry-After": "1"}')"
	index_ok "$p/test/img:v1" "$T/a.clip"
	proxy_log proxy
	local msg
	msg=$(python3 - "$REG_DIR/proxy.requests" "$big" <<-'PY'
		import json, sys
		reqs = [json.loads(l) for l in open(sys.argv[1])]
		blob = [r for r in reqs if r["method"] == "GET" and r["path"].endswith(sys.argv[2])]
		assert blob[0]["status"] == 429 and len(blob) >= 2, blob
		gap = blob[1]["time"] - blob[0]["time"]
		print("# retried %.2f s after the 429" % gap)
		assert gap >= 0.9, "retried after %.2f s despite Retry-After: 1" % gap
	PY
	)
	echo "$msg" >&3
	test_image_check "$T/a.clip"
}

@test "slow answers (2 s before a manifest, a 2 s pause mid-blob) still index" {
	local p big
	p=$(server_addr proxy)
	big=$(largest_layer "$IMAGE:latest")
	fault_set proxy "$(fault_rule delay /manifests/ seconds=2)" \
		"$(fault_rule delay "$(blob_path_re "$big")" seconds=2 after_bytes=5000000)"
	index_ok "$p/test/img:v1" "$T/a.clip"
	[ "$(server_requests proxy 'r["fault"] == "delay"')" -eq 2 ]
	same_as_reference "$T/a.clip"
}

@test "a blob with wrong bytes is a digest error and no archive is written" {
	local p layer
	p=$(server_addr proxy)
	layer=$(layer_digests "$IMAGE:latest" | sed -n 2p)
	# Byte 5 is in the gzip header's MTIME field: the layer still inflates and parses, only its
	# digest is wrong.
	fault_set proxy "$(fault_rule corrupt "$(blob_path_re "$layer")" at=5 times=-1)"
	index_fails "$p/test/img:v1"
	[[ $stderr =~ [Dd]igest ]]
	[[ $stderr == *"${layer:7:12}"* ]]
	[ "$(server_requests proxy 'r["fault"] == "corrupt"')" -ge 1 ]
	# In the middle of the deflate stream: whatever breaks first, it is an error naming the layer.
	fault_set proxy "$(fault_rule corrupt "$(blob_path_re "$layer")" times=-1)"
	index_fails "$p/test/img:v1"
	[[ $stderr == *"${layer:7:12}"* ]]
}

@test "lazy reads: a span with wrong bytes is an error, not wrong data" {
	local p
	p=$(server_addr proxy)
	fault_set proxy
	index_ok "$p/test/img:v1" "$T/a.clip"
	fault_set proxy "$(fault_rule corrupt /blobs/ times=-1)"
	run --separate-stderr clipx cat "$T/a.clip" /usr/lib/os-release
	echo "status $status; stderr: $stderr"
	[ "$status" -ne 0 ]
	[ -z "$output" ]
	[[ $stderr =~ ^clip:\ .+ ]]
	[[ $stderr =~ [Dd]igest|sha256|SHA-256|checksum|mismatch ]]
	[ "$(server_requests proxy 'r["fault"] == "corrupt"')" -ge 1 ]
}

@test "redirected blobs: followed, without the registry's Authorization on the other host" {
	local p
	p=$(server_addr bproxy)
	write_docker_auth "$p"
	fault_set bproxy "$(fault_rule redirect '^/v2/.*/blobs/' times=-1 \
		'location=http://localhost:{port}/__redirected__{path}')"
	index_ok "$p/test/img:v1" "$T/a.clip"
	test_image_check "$T/a.clip"
	proxy_log bproxy | head -n 20
	[ "$(server_requests bproxy 'r["fault"] == "redirect"')" -ge 5 ]
	[ "$(server_requests bproxy 'r["path"].startswith("/__redirected__") and r["status"] in (200, 206)')" -ge 5 ]
	[ "$(server_requests bproxy 'r["path"].startswith("/__redirected__") and r["authorization"]')" -eq 0 ]
}

@test "--source reads from a mirror or a layout instead of the recorded registry" {
	local p
	p=$(server_addr proxy)
	index_ok "$(server_addr anon)/test/multi:v1" "$T/m.clip" --platform linux/arm64
	fault_set proxy
	CAT_OPTS=(--source "$p/test/multi:v1")
	arch_check "$T/m.clip" arm64
	[ "$(server_requests proxy 'r["method"] == "GET" and "/blobs/" in r["path"]')" -ge 1 ]
	# From the layout: the registry is not asked at all.
	fault_set proxy
	index_ok "$p/test/multi:v1" "$T/m2.clip" --platform linux/arm64
	fault_set proxy
	CAT_OPTS=(--source "oci:$W/multi")
	arch_check "$T/m2.clip" arm64
	[ "$(server_requests proxy)" -eq 0 ]
}

@test "a stopped registry: index and lazy reads fail cleanly within 30 s" {
	registry_start doomed anonymous
	local addr
	addr=$(server_addr doomed)
	index_ok "$addr/test/multi:v1" "$T/m.clip" --platform linux/arm64
	server_stop doomed
	index_fails "$addr/test/multi:v1" --platform linux/arm64
	echo "# clip index against a stopped registry failed after $FAIL_SECONDS s" >&3
	[[ $stderr == *"$addr"* ]]
	awk "BEGIN { exit !($FAIL_SECONDS < 30) }"

	local start end
	start=$(date +%s.%N)
	run --separate-stderr clipx cat "$T/m.clip" /arch-data/readme
	end=$(date +%s.%N)
	echo "clip cat: exit $status after $(awk "BEGIN { print $end - $start }") s; stderr: $stderr"
	[ "$status" -ne 0 ]
	[ -z "$output" ]
	[[ $stderr =~ ^clip:\ .+ ]]
	[[ $stderr == *"$addr"* ]]
	awk "BEGIN { exit !($end - $start < 30) }"
}

# --- the span engine under faults: mounts -----------------------------------------------------

need_fuse() {
	[ -c /dev/fuse ] || skip "no /dev/fuse: FUSE is not available here"
	command -v fusermount3 >/dev/null || skip "fusermount3 not installed (see scripts/install-deps)"
}

# mountx ARCHIVE MOUNTPOINT [OPTIONS...]: `clip mount` as clipx runs it, with bats' fd 3 closed
# (bats waits for every holder of fd 3, and the daemon would hold it).
mountx() {
	clipx mount "$@" 3>&-
}

# reads_from_cache_alone MNT PROXY_URL: a mount of $T/a.clip on the disk cache $T/chunks, through
# the proxy "proxy" now refusing every blob (and with no hydration of its own, which would ask
# for the chunks that hold no file data), reads every file right and asks the proxy nothing.
reads_from_cache_alone() {
	local mnt=$1 p=$2
	fault_set proxy "$(fault_rule status /blobs/ status=404 times=-1)"
	mountx "$T/a.clip" "$mnt" --cache-dir "$T/chunks" --source "$p/test/img" \
		--hydrate-threshold off --log "$T/log2"
	run read_check "$mnt" 2
	echo "$output"
	proxy_log proxy
	[ "$status" -eq 0 ]
	[ "$(server_requests proxy)" -eq 0 ]
}

# read_check MNT NTHREADS [SECONDS [PID [SKIP]]]: NTHREADS threads read the image's files through
# MNT and compare every byte with $ROOTFS, but for those whose path matches the Python regular
# expression SKIP. Without SECONDS (or with 0) each thread reads every file
# over 512 KiB and its share of the others, whole, in its own random order: several readers on
# the same spans at once. With SECONDS they read random ranges of random files for that long,
# half of them O_DIRECT (to the daemon every time, past the page cache). With PID, that
# process's VmRSS is sampled every 0.2 s and its peak printed as "rss_peak_kib N".
# Prints "# ..." summary lines and the first differences; fails on any difference or error.
read_check() {
	python3 - "$1" "$ROOTFS" "$2" "${3:-0}" "${4:-}" "${5:-}" <<-'PY'
		import os, random, re, stat, sys, threading, time
		mnt, rootfs = os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2])
		nthreads, seconds, pid = int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
		skip = re.compile(os.fsencode(sys.argv[6])) if sys.argv[6] else None
		files = []
		for d, dirs, names in os.walk(rootfs):
		    for n in names:
		        p = os.path.join(d, n)
		        st = os.lstat(p)
		        if stat.S_ISREG(st.st_mode) and st.st_size > 0:
		            if not (skip and skip.search(p[len(rootfs):])):
		                files.append((p[len(rootfs):], st.st_size))
		files.sort()
		lock = threading.Lock()
		total = {"reads": 0, "bytes": 0, "bad": 0, "errors": 0}
		slowest = [0.0]
		messages = []
		def note(n, msg):
		    n["bad" if msg.startswith("differ") else "errors"] += 1
		    with lock:
		        messages.append(msg)
		def took(seconds):
		    if seconds > slowest[0]:
		        slowest[0] = seconds
		def read_whole(n, path):
		    try:
		        with open(mnt + path, "rb") as got, open(rootfs + path, "rb") as want:
		            off = 0
		            while True:
		                t0 = time.monotonic()
		                a = got.read(1 << 20)
		                took(time.monotonic() - t0)
		                b = want.read(1 << 20)
		                n["reads"] += 1
		                n["bytes"] += len(a)
		                if a != b:
		                    return note(n, "differ: %r at or after %d" % (path, off))
		                if not a:
		                    return
		                off += len(a)
		    except OSError as e:
		        note(n, "error: %r: %s" % (path, e))
		def read_range(n, rnd, path, size):
		    off = rnd.randrange(size)
		    length = rnd.choice([1, 100, 4096, 65536, 131072, 1 << 20, 3 << 20])
		    direct = rnd.random() < 0.5
		    try:
		        t0 = time.monotonic()
		        fd = os.open(mnt + path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
		        try:
		            got = os.pread(fd, length, off)
		            took(time.monotonic() - t0)
		            if not direct and rnd.random() < 0.5:
		                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
		        finally:
		            os.close(fd)
		    except OSError as e:
		        return note(n, "error: %r offset %d length %d: %s" % (path, off, length, e))
		    with open(rootfs + path, "rb") as f:
		        f.seek(off)
		        want = f.read(length)
		    n["reads"] += 1
		    n["bytes"] += len(got)
		    if got != want:
		        note(n, "differ: %r offset %d length %d: got %d bytes, want %d"
		             % (path, off, length, len(got), len(want)))
		def worker(i):
		    rnd = random.Random(i)
		    n = dict.fromkeys(total, 0)
		    if seconds > 0:
		        stop = time.monotonic() + seconds
		        while time.monotonic() < stop:
		            path, size = rnd.choice(files)
		            if rnd.random() < 0.3:  # large files more often: they cross spans
		                path, size = max(rnd.sample(files, 8), key=lambda f: f[1])
		            read_range(n, rnd, path, size)
		    else:
		        mine = [f for j, f in enumerate(files) if f[1] > 512 * 1024 or j % nthreads == i]
		        rnd.shuffle(mine)
		        for path, size in mine:
		            read_whole(n, path)
		    with lock:
		        for k in total:
		            total[k] += n[k]
		peak = [0]
		def rss_kib():
		    for line in open("/proc/%s/status" % pid):
		        if line.startswith("VmRSS:"):
		            return int(line.split()[1])
		    return 0
		start = time.monotonic()
		threads = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
		for t in threads:
		    t.start()
		while any(t.is_alive() for t in threads):
		    if pid:
		        peak[0] = max(peak[0], rss_kib())
		    time.sleep(0.2)
		for t in threads:
		    t.join()
		print("# %d threads, %.1f s: %d files, %d reads, %.1f MiB, %d differ, %d errors; slowest read %.1f s"
		      % (nthreads, time.monotonic() - start, len(files), total["reads"],
		         total["bytes"] / 2**20, total["bad"], total["errors"], slowest[0]))
		if pid:
		    print("rss_peak_kib %d" % peak[0])
		for m in messages[:20]:
		    print(m)
		sys.exit(0 if total["reads"] > 0 and total["bad"] == 0 and total["errors"] == 0 else 1)
	PY
}

# hydration MNT: the mount's hydration from `clip stats --json`, as one line:
# "hydrated=H/L chunks=C/N errors=E" (layers whose hydration ended of all the layers, chunks the
# hydration produced of all the chunks, hydrations the source stopped).
hydration() {
	local json
	json=$(clipx stats --json "$1") || return 1
	python3 - "$json" <<-'PY'
		import json, sys
		s = json.loads(sys.argv[1])
		layers = s["layers"]
		print("hydrated=%d/%d chunks=%d/%d errors=%d" % (
		    sum(l["hydrated"] for l in layers), len(layers),
		    sum(l["hydrated_chunks"] for l in layers), sum(l["chunks"] for l in layers),
		    s["hydrate_errors"]))
	PY
}

# wait_hydrated MNT SECONDS: wait until every layer's hydration ended; fails after SECONDS.
wait_hydrated() {
	local mnt=$1 limit=$2 start=$SECONDS state
	while state=$(hydration "$mnt"); do
		[[ $state =~ hydrated=([0-9]+)/([0-9]+) ]] || break
		[ "${BASH_REMATCH[1]}" != "${BASH_REMATCH[2]}" ] || return 0
		if [ $((SECONDS - start)) -ge "$limit" ]; then
			echo "hydration did not end within $limit s: $state"
			return 1
		fi
		sleep 0.2
	done
	echo "no hydration state: $state"
	return 1
}

# fault_summary PROXY: "N faults (K ACTION, ...) in R blob GETs, M on requests of over 4 MiB"
# from the proxy's log: the big ranges are the engine's runs (a program's read asks for a few
# spans).
fault_summary() {
	python3 - "$REG_DIR/$1.requests" <<-'PY'
		import collections, json, re, sys
		faults, big, gets = collections.Counter(), 0, 0
		for line in open(sys.argv[1]):
		    r = json.loads(line)
		    gets += r["method"] == "GET" and "/blobs/" in r["path"]
		    if r["fault"] is None:
		        continue
		    faults[r["fault"]] += 1
		    m = re.fullmatch(r"bytes=(\d+)-(\d+)", r["range"] or "")
		    big += bool(m) and int(m.group(2)) - int(m.group(1)) >= 4 << 20
		print("%d faults (%s) in %d blob GETs, %d on requests of over 4 MiB" % (
		    sum(faults.values()), ", ".join("%d %s" % (n, a) for a, n in sorted(faults.items())),
		    gets, big))
	PY
}

@test "the span engine under faults: --prefetch with resets, stalls and 5xx mid-range hydrates every layer and every byte is right" {
	need_fuse
	local p mnt=$T/mnt start
	p=$(server_addr proxy)
	mkdir "$mnt"
	index_ok "$(server_addr anon)/test/img:v1" "$T/a.clip"
	# Windows of blob GETs, counted across the engine's workers and the readers: a connection cut
	# mid-body (resumed with a Range request), HTTP 500 and 503, a 2 s stall mid-body, a
	# connection closed before any answer, all within the first 24 GETs (each failed one is
	# retried, and the readers ask too: 30 to 55 GETs in all). The first ones meet the engine's
	# first runs (the prefetch starts before the readers). 12 of them fail a request: with
	# --retries 12, no request can run out of retries however they fall (with the default 4,
	# one request now and then meets 5 of them and its layer's hydration stops).
	fault_set proxy \
		"$(fault_rule cut /blobs/ times=3)" \
		"$(fault_rule status /blobs/ status=500 skip=5 times=3)" \
		"$(fault_rule delay /blobs/ seconds=2 after_bytes=65536 skip=10 times=2)" \
		"$(fault_rule drop /blobs/ skip=14 times=3)" \
		"$(fault_rule cut /blobs/ after_bytes=1000000 skip=19 times=2)" \
		"$(fault_rule status /blobs/ status=503 skip=23 times=1)"
	start=$(date +%s.%N)
	mountx "$T/a.clip" "$mnt" --cache-dir "$T/chunks" --prefetch --source "$p/test/img" \
		--retries 12 --log "$T/log"
	# 12 readers at once while it hydrates.
	run read_check "$mnt" 12
	echo "$output"
	grep '^#' <<<"$output" >&3
	[ "$status" -eq 0 ]
	wait_hydrated "$mnt" 60
	local state faults
	state=$(hydration "$mnt")
	faults=$(fault_summary proxy)
	echo "# hydrated after $(awk "BEGIN { print $(date +%s.%N) - $start }") s: $state; $faults" >&3
	cat "$T/log"
	[[ $state == *errors=0 ]]
	[ "$(server_requests proxy 'r["fault"] is not None')" -eq 14 ]
	[[ $faults =~ ,\ ([0-9]+)\ on ]]
	[ "${BASH_REMATCH[1]}" -ge 1 ]
	grep -q 'prefetch: every layer is in the disk cache' "$T/log"
	# No program's read failed (each would be logged), and the mount still serves.
	[ "$(grep -vc prefetch "$T/log")" -eq 0 ]
	cmp "$mnt/clip-test/big/20mib-random" "$ROOTFS/clip-test/big/20mib-random"
	clipx umount "$mnt"
	# Every chunk is in the disk cache, and right: a mount of the same cache whose every blob
	# request fails reads the whole tree.
	reads_from_cache_alone "$mnt" "$p"
}

@test "a 16-thread stress with hydration running: every byte right, unmount cancels promptly, RSS bounded" {
	need_fuse
	local p mnt=$T/mnt pid top top_re
	p=$(server_addr proxy)
	mkdir "$mnt"
	index_ok "$(server_addr anon)/test/img:v1" "$T/a.clip"
	# A slow registry: answers of over 4 MiB (the engine's runs; a program's read asks for a
	# few spans of at most 2 MiB) come at 4 MiB/s after their first 4 MiB, and those of the top
	# layer (/clip-test and /etc/debian_version) at 256 KiB/s, never stalling long enough for
	# clip to give them up. The prefetch hydrates the layers in order: the bottom one (147 MiB
	# of tar, about 6 runs of 32 MiB on 2 workers, 2-3 s each) beside the readers, which wait
	# for the run that holds their chunk or go ahead of it; then the top one in one run of
	# 21 MB, which takes over a minute: it is under way when the stress ends. The readers keep
	# off the top layer's files, which would only wait for that run.
	top=$(layer_digests "$IMAGE:latest" | tail -n 1)
	top_re='^/(clip-test/|etc/debian_version$)'
	fault_set proxy \
		"$(fault_rule delay "$(blob_path_re "$top")" after_bytes=4194304 rate=262144 times=-1)" \
		"$(fault_rule delay /blobs/ after_bytes=4194304 rate=4194304 times=-1)"
	mountx "$T/a.clip" "$mnt" --cache-dir "$T/chunks" --prefetch --source "$p/test/img" \
		--log "$T/log"
	pid=$(daemon_pid "$mnt")
	run read_check "$mnt" 16 15 "$pid" "$top_re"
	echo "$output"
	grep '^#' <<<"$output" >&3
	[ "$status" -eq 0 ]
	local state hwm rss_peak
	state=$(hydration "$mnt")
	hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
	[[ $output =~ rss_peak_kib\ ([0-9]+) ]]
	rss_peak=${BASH_REMATCH[1]}
	# What the daemon holds at most, by design: 32 MiB before any read (binary, libraries, the
	# archive, FUSE's buffers); per engine worker (one per core, 2 to 8) a run's buffers, kept
	# from run to run: 32 MiB of tar, its compressed bytes (at most as many, plus a span) and
	# curl's 4 MiB; per FUSE thread (16) a read's: the spans around one 1 MiB chunk (at most
	# 2 x 2.1 MiB of tar here), their compressed bytes, curl's 4 MiB: 13 MiB.
	local workers bound
	workers=$(nproc)
	workers=$((workers < 2 ? 2 : workers > 8 ? 8 : workers))
	bound=$(((32 + workers * 70 + 16 * 13) * 1024))
	# ASan keeps freed memory in a 256 MiB quarantine and adds shadow memory:
	# under the sanitizers the bound only catches gross growth.
	[ "${CLIP_SANITIZED:-0}" = 1 ] && bound=$((bound * 2 + 256 * 1024))
	echo "# after the stress: $state; daemon VmRSS peak $rss_peak KiB, VmHWM $hwm KiB (bound $bound KiB)" >&3
	[ "$rss_peak" -le "$bound" ]
	[ "$hwm" -le "$bound" ]
	# Unmounted with the top layer's run under way: the daemon must stop it, not wait for it.
	[[ $state =~ hydrated=([0-9]+)/([0-9]+) ]]
	[ "${BASH_REMATCH[1]}" -lt "${BASH_REMATCH[2]}" ]
	local start end
	start=$(date +%s.%N)
	clipx umount "$mnt"
	wait_gone "$pid"
	end=$(date +%s.%N)
	echo "# the daemon exited $(awk "BEGIN { print $end - $start }") s after clip umount started" >&3
	cat "$T/log"
	awk "BEGIN { exit !($end - $start < 3) }"
	grep -q 'prefetch: stopped by the unmount' "$T/log"
	# The top layer's run was cut off: the proxy saw its client go before the end of the answer.
	local i cut="r['path'].endswith('$top') and r['bytes'] < 1 + int(r['range'].split('-')[1]) - int(r['range'][6:].split('-')[0])"
	for ((i = 0; i < 20; i++)); do
		[ "$(server_requests proxy "$cut")" -eq 0 ] || break
		sleep 0.2
	done
	proxy_log proxy | grep -F "${top#sha256:}"
	[ "$(server_requests proxy "$cut")" -eq 1 ]
}

@test "the span engine under a corrupting proxy: runs with wrong bytes are refused, never kept or read" {
	need_fuse
	local p mnt=$T/mnt i
	p=$(server_addr proxy)
	mkdir "$mnt"
	index_ok "$(server_addr anon)/test/img:v1" "$T/a.clip"
	# One byte inverted in each of the first two blob answers: the engine's first two runs,
	# since no program reads before they were answered.
	fault_set proxy "$(fault_rule corrupt /blobs/ times=2)"
	mountx "$T/a.clip" "$mnt" --cache-dir "$T/chunks" --prefetch --source "$p/test/img" \
		--log "$T/log"
	for ((i = 0; i < 100; i++)); do
		[ "$(server_requests proxy 'r["fault"] == "corrupt" and r["status"]')" -lt 2 ] || break
		sleep 0.1
	done
	proxy_log proxy
	[ "$(server_requests proxy 'r["fault"] == "corrupt"')" -eq 2 ]
	# Their chunks come from the programs' own reads, right.
	run read_check "$mnt" 8
	echo "$output"
	grep '^#' <<<"$output" >&3
	[ "$status" -eq 0 ]
	wait_hydrated "$mnt" 60
	local state
	state=$(hydration "$mnt")
	cat "$T/log"
	echo "# $state" >&3
	[[ $state =~ errors=[12]$ ]]
	grep -Eq 'prefetch: layer sha256:[0-9a-f]{64}: hydration stopped: .*([Dd]igest|mismatch)' "$T/log"
	clipx umount "$mnt"
	# Nothing of the wrong bytes was kept: a mount of the same cache without the registry
	# (and without a hydration of its own, which would ask it for the chunks that hold no file
	# data) reads every file right.
	reads_from_cache_alone "$mnt" "$p"
}
