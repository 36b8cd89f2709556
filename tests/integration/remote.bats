#!/usr/bin/env bats
# The shared remote content cache (Redis): two "nodes" (two mounts of one archive with their
# own disk caches) against one redis-server and a loopback registry. Node A pays for the
# registry; node B then reads everything from Redis, with the registry stopped. Poisoned values
# are not served; a Redis that dies mid-read costs nothing but speed; a 3-shard Redis Cluster
# works the same.

load helpers

setup_file() {
	CLIP_SKIP_REASON=$(require_env umoci python3 redis-server redis-cli docker-registry skopeo \
		fusermount3)
	export CLIP_SKIP_REASON
	[ -z "$CLIP_SKIP_REASON" ] || return 0
	W=$(make_workdir)
	export W
	"$CLIP_SOURCE_ROOT/scripts/build-sample-image" "$W/sample" >/dev/null
	umoci unpack --image "$W/sample:latest" "$W/bundle" >/dev/null
	export ROOTFS=$W/bundle/rootfs
	# Every regular file of the image, the set both nodes read.
	(cd "$ROOTFS" && find . -type f -printf '%P\n' | sort) >"$W/files"
}

teardown_file() {
	remove_workdir "${W:-}"
}

setup() {
	[ -z "${CLIP_SKIP_REASON:-}" ] || skip "$CLIP_SKIP_REASON"
	T=$(mktemp -d "$W/test.XXXXXX")
	REGISTRY_PID=
	REDIS_PORT=
	read -r REGISTRY_PORT REGISTRY_PID < <("$CLIP_SOURCE_ROOT/scripts/local-registry" "$T/registry")
	REF=127.0.0.1:$REGISTRY_PORT/test/sample:v1
	skopeo copy -q --dest-tls-verify=false "oci:$W/sample:latest" "docker://$REF"
	"$CLIP" index -q "$REF" -o "$T/image.clip"
	mkdir "$T/a" "$T/b"
}

teardown() {
	local m
	for m in "$T/a" "$T/b"; do
		mountpoint -q "$m" 2>/dev/null && fusermount3 -u "$m" 2>/dev/null
	done
	[ -z "${REGISTRY_PID:-}" ] || kill "$REGISTRY_PID" 2>/dev/null || true
	[ -z "${REDIS_PORT:-}" ] || redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
	[ ! -f "$T/cluster/ports" ] || "$CLIP_SOURCE_ROOT/tests/integration/tools/redis-cluster" \
		stop "$T/cluster" >/dev/null 2>&1 || true
	[ -z "${T:-}" ] || rm -rf "$T"
}

start_redis() {
	REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
		--daemonize yes --logfile "$T/redis.log" --pidfile "$T/redis.pid"
	local i
	for i in $(seq 100); do
		redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
		sleep 0.05
	done
	return 1
}

# mount_node NAME URL [OPTION...]: mount the archive at $T/NAME with its own disk cache.
mount_node() {
	"$CLIP" mount "$T/image.clip" "$T/$1" --cache-dir "$T/cache-$1" --remote-cache "$2" "${@:3}"
}

# read_all MNT: every file of the image read through MNT equals the unpacked one.
read_all() {
	local f bad=0
	while read -r f; do
		cmp -s "$1/$f" "$ROOTFS/$f" || { echo "differs: $f"; bad=1; }
	done <"$W/files"
	return $bad
}

# stat_field MNT EXPR: a python expression over the mount's counters `s`.
stat_field() {
	"$CLIP" stats --json "$1" |
		python3 -c 'import json, sys; s = json.load(sys.stdin); print(eval(sys.argv[1]))' "$2"
}

# two_nodes URL: node A reads everything from the registry and fills the cache at URL; then,
# with the registry stopped, node B reads everything from the cache at URL alone.
two_nodes() {
	mount_node a "$1"
	read_all "$T/a"
	[ "$(stat_field "$T/a" 's["source_requests"] > 0')" = True ]
	# Unmounting waits for node A's queued stores.
	fusermount3 -u "$T/a"
	kill "$REGISTRY_PID"
	REGISTRY_PID=
	mount_node b "$1"
	read_all "$T/b"
	stat_field "$T/b" 's' >&3
	[ "$(stat_field "$T/b" 's["source_requests"]')" = 0 ]
	[ "$(stat_field "$T/b" 's["source_bytes"]')" = 0 ]
	[ "$(stat_field "$T/b" 's["tiers"]["remote"]["hits"] > 0')" = True ]
	[ "$(stat_field "$T/b" 's["remote_verify_failures"]')" = 0 ]
	chroot "$T/b" /bin/sh -c 'echo ok' | grep -qx ok
}

@test "node B reads everything from Redis with the registry stopped" {
	start_redis
	two_nodes "redis://127.0.0.1:$REDIS_PORT"
	# The same in Prometheus's format, the remote cache's own counters included.
	command -v promtool >/dev/null || skip "promtool not installed (scripts/install-deps)"
	"$CLIP" stats --prometheus "$T/b" >"$T/metrics"
	promtool check metrics <"$T/metrics"
	local got
	got=$(metrics "$T/metrics" clip_source_requests_total)
	[ "$got" -eq 0 ]
	got=$(metrics "$T/metrics" 'clip_tier_hits_total{tier="remote"}')
	[ "$got" -gt 0 ]
	got=$(metrics "$T/metrics" clip_remote_cache_hits_total)
	[ "$got" -gt 0 ]
	got=$(metrics "$T/metrics" clip_remote_cache_usable)
	[ "$got" -eq 1 ]
}

@test "a profile recorded on one node is shared through Redis and replayed by the next" {
	start_redis
	local url="redis://127.0.0.1:$REDIS_PORT" key regions
	key="clip:profile:$("$CLIP" info "$T/image.clip" | sed -n 's/^manifest: *sha256://p')"
	"$CLIP" mount "$T/image.clip" "$T/a" --cache-dir "$T/cache-a" --remote-cache "$url" \
		--record-profile "$T/a.profile"
	chroot "$T/a" /bin/sh -c 'ls / >/dev/null; echo ok' | grep -qx ok
	fusermount3 -u "$T/a"
	local tries=0
	until [ -s "$T/a.profile" ] && [ "$(redis-cli -p "$REDIS_PORT" exists "$key")" = 1 ]; do
		[ $((tries += 1)) -le 100 ] || return 1
		sleep 0.1
	done
	# What Redis holds is that profile.
	redis-cli -p "$REDIS_PORT" --raw get "$key" >"$T/shared.profile"
	regions=$("$CLIP" profile show "$T/a.profile" | sed -n 's/^regions *//p')
	[ "$regions" -gt 0 ]
	[ "$("$CLIP" profile show "$T/shared.profile" | sed -n 's/^regions *//p')" = "$regions" ]

	# Node B has no profile of its own: it replays the shared one, and reads right.
	mount_node b "$url"
	tries=0
	until [ "$(stat_field "$T/b" 's["replay"]["done"]')" = "$regions" ]; do
		[ $((tries += 1)) -le 100 ] || return 1
		sleep 0.1
	done
	[ "$(stat_field "$T/b" 's["replay"]["errors"]')" = 0 ]
	read_all "$T/b"
	fusermount3 -u "$T/b"
	# --no-profile: nothing replayed.
	rm -rf "$T/cache-b"
	mount_node b "$url" --no-profile
	[ "$(stat_field "$T/b" 's["replay"]["regions"]')" = 0 ]
	fusermount3 -u "$T/b"

	# A damaged shared profile is not used: one warning, and the mount works.
	redis-cli -p "$REDIS_PORT" set "$key" '{"clip_profile":1,' >/dev/null
	rm -rf "$T/cache-b"
	run --separate-stderr "$CLIP" mount "$T/image.clip" "$T/b" --cache-dir "$T/cache-b" \
		--remote-cache "$url"
	echo "$stderr"
	[ "$status" -eq 0 ]
	[[ $stderr == "clip: warning: profile shared in the remote cache: not JSON"*"not replayed" ]]
	[ "$(stat_field "$T/b" 's["replay"]["regions"]')" = 0 ]
	read_all "$T/b"
}

@test "a poisoned value in Redis is detected, counted and not served" {
	start_redis
	mount_node a "redis://127.0.0.1:$REDIS_PORT"
	read_all "$T/a"
	fusermount3 -u "$T/a"
	local key n=0
	for key in $(redis-cli -p "$REDIS_PORT" --scan --pattern 'clip:*'); do
		redis-cli -p "$REDIS_PORT" setrange "$key" 10 POISON >/dev/null
		n=$((n + 1))
	done
	[ "$n" -gt 0 ]
	mount_node b "redis://127.0.0.1:$REDIS_PORT"
	read_all "$T/b"
	# Chunks refetched from the registry in a batch after the first failure need no
	# remote read, so at least one failure, and no poisoned chunk served.
	[ "$(stat_field "$T/b" 's["remote_verify_failures"]')" -ge 1 ]
	[ "$(stat_field "$T/b" 's["tiers"]["remote"]["hits"]')" = 0 ]
	[ "$(stat_field "$T/b" 's["source_requests"] > 0')" = True ]
}

@test "reads stay correct when Redis is killed mid-way" {
	start_redis
	mount_node b "redis://127.0.0.1:$REDIS_PORT"
	local half
	half=$(($(wc -l <"$W/files") / 2))
	head -n "$half" "$W/files" | while read -r f; do cmp "$T/b/$f" "$ROOTFS/$f"; done
	kill -9 "$(cat "$T/redis.pid")"
	REDIS_PORT=
	local t0=$SECONDS
	read_all "$T/b"
	[ $((SECONDS - t0)) -lt 20 ]
}

@test "a 3-shard Redis Cluster: node B reads everything from it" {
	"$CLIP_SOURCE_ROOT/tests/integration/tools/redis-cluster" start "$T/cluster" >/dev/null
	local first
	first=$(head -n 1 "$T/cluster/ports" | tr ' ' '\n' | head -n 1)
	two_nodes "redis://127.0.0.1:$first"
	# The chunks are spread over the shards.
	local p used=0
	for p in $(tr ' ' '\n' <"$T/cluster/ports"); do
		[ "$(redis-cli -p "$p" dbsize)" -gt 0 ] && used=$((used + 1))
	done
	[ "$used" -ge 2 ]
}

@test "a format 1 archive with --remote-cache mounts and warns that Redis is not used" {
	start_redis
	local v1=$CLIP_SOURCE_ROOT/tests/data/v1
	run --separate-stderr "$CLIP" cat "$v1/v1.clip" /hello.txt --source "$v1/img" \
		--remote-cache "redis://127.0.0.1:$REDIS_PORT"
	[ "$status" -eq 0 ]
	[ "$output" = "hello from a version 1 archive" ]
	[[ $stderr == *"remote cache is not used"* ]]
}
