# bench/common.bash: what the benchmarks set up alike, sourced by bench/*.sh.
#
# Call bench_init NAME first (a temp dir in $T, cleanup on exit), then what the benchmark needs:
#   bench_registry                  docker-registry on 127.0.0.1: $REG_PORT, $T/registry
#   bench_wan                       the same storage served from a network namespace behind a
#                                   veth pair shaped with tc tbf 200mbit on both ends, reached
#                                   through a proxy on 127.0.0.1 that holds each request 10 ms:
#                                   $WAN_PORT
#   bench_redis                     redis-server on 127.0.0.1: $REDIS_PORT
# Network traffic stays on this machine: loopback and the namespace made here.

bench_init() {
	BENCH_NAME=$1
	T=$(mktemp -d "${TMPDIR:-/var/tmp}/clip-bench-$BENCH_NAME.XXXXXX")
	BENCH_PIDS=()
	BENCH_NETNS=clipbench$$
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
}

bench_die() {
	printf '%s: %s\n' "$BENCH_NAME" "$*" >&2
	exit 1
}

bench_note() {
	printf '%s: %s\n' "$BENCH_NAME" "$*" >&2
}

bench_cleanup() {
	local m p
	for m in $(findmnt -rn -o TARGET | grep -F "$T/" | sort -r); do
		umount -l "$m" 2>/dev/null || true
	done
	for p in "${BENCH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	ip netns pids "$BENCH_NETNS" 2>/dev/null | xargs -r kill 2>/dev/null || true
	[ ! -f "$T/redis.pid" ] || kill "$(cat "$T/redis.pid")" 2>/dev/null || true
	ip netns del "$BENCH_NETNS" 2>/dev/null || true
	ip link del "v$BENCH_NETNS" 2>/dev/null || true
	rm -rf --one-file-system "$T"
}

bench_free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

bench_wait_url() {
	local _
	for _ in $(seq 200); do
		curl -fs "$1" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	bench_die "$1 does not answer"
}

bench_registry() {
	local rpid
	read -r REG_PORT rpid < <("$here/scripts/local-registry" "$T/registry")
	BENCH_PIDS+=("$rpid")
}

bench_wan() {
	bench_note "setting up the simulated WAN link"
	ip netns add "$BENCH_NETNS"
	ip link add "v$BENCH_NETNS" type veth peer name eth0 netns "$BENCH_NETNS"
	ip addr add 10.231.0.1/24 dev "v$BENCH_NETNS"
	ip link set "v$BENCH_NETNS" up
	ip -n "$BENCH_NETNS" addr add 10.231.0.2/24 dev eth0
	ip -n "$BENCH_NETNS" link set eth0 up
	ip -n "$BENCH_NETNS" link set lo up
	tc qdisc add dev "v$BENCH_NETNS" root tbf rate 200mbit burst 256kb latency 50ms
	ip netns exec "$BENCH_NETNS" tc qdisc add dev eth0 root tbf rate 200mbit burst 256kb \
		latency 50ms
	sed "s/127.0.0.1:$REG_PORT/10.231.0.2:5000/" "$T/registry/registry.yml" \
		>"$T/registry/wan.yml"
	ip netns exec "$BENCH_NETNS" docker-registry serve "$T/registry/wan.yml" \
		>"$T/registry/wan.log" 2>&1 &
	BENCH_PIDS+=("$!")
	bench_wait_url http://10.231.0.2:5000/v2/
	WAN_PORT=$(bench_free_port)
	python3 "$here/bench/delay-proxy.py" "127.0.0.1:$WAN_PORT" 10.231.0.2:5000 10 \
		>"$T/proxy.log" 2>&1 &
	BENCH_PIDS+=("$!")
	bench_wait_url "http://127.0.0.1:$WAN_PORT/v2/"
}

bench_redis() {
	REDIS_PORT=$(bench_free_port)
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
		--daemonize yes --pidfile "$T/redis.pid" --logfile "$T/redis.log"
	local _
	for _ in $(seq 100); do
		redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
		sleep 0.05
	done
	bench_die "redis-server does not answer"
}
