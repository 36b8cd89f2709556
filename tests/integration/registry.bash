# Registry test servers for clip's bats tests; loaded with `load registry` (after `load helpers`).
#
# Starts, on 127.0.0.1 with free ports, Debian's docker-registry (distribution 2.8) in these modes,
# all serving one shared storage directory (push once, read through every front door):
#   anonymous   plain HTTP, no authentication
#   htpasswd    plain HTTP, Basic authentication against an htpasswd -B file
#   token       plain HTTP, Bearer tokens from tools/token_server.py
#   tls         HTTPS with a server certificate for 127.0.0.1, localhost and $REG_TLS_NAME
#               signed by a test CA (reach it as $REG_TLS_NAME through with_test_hosts)
# plus the token server and tools/fault_proxy.py in front of any of them.
#
# Every server runs under `timeout` (CLIP_TEST_SERVER_LIFETIME seconds, default 1800) so that none
# outlives a killed test run; servers_stop_all (call it from teardown_file) stops them at once.
#
# State lives in $REG_DIR (set it, and export it, before anything else; e.g. $W/servers):
#   certs/     ca.pem ca.key, server.pem server.key, token.pem token.key, skopeo/ca.crt
#   storage/   the registries' shared storage
#   NAME.pid NAME.port NAME.log NAME.yml   per server; NAME.control NAME.requests for proxies,
#                                          NAME.requests for token servers
#   hosts      /etc/hosts plus $REG_TLS_NAME, for with_test_hosts
#
# Credentials of the test users (htpasswd and token modes).
REG_USER=clipuser
REG_PASSWORD='s3cret:with-colon'
REG_TOKEN_SERVICE=clip-test-registry
REG_TOKEN_ISSUER=clip-test-issuer
REG_REFRESH_TOKEN=clip-test-refresh-token
REG_TOOLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tools
# A registry name that is not loopback by its spelling, so that clients talk HTTPS to it (they
# talk plain HTTP to localhost and 127.0.0.0/8, as docker does), but that with_test_hosts
# resolves to 127.0.0.1. ".test" is reserved (RFC 2606): it never means a real host.
REG_TLS_NAME=registry.clip.test

# reg_tools_missing: print the first tool these helpers need that is not installed, or nothing.
reg_tools_missing() {
	local tool
	for tool in docker-registry skopeo umoci openssl htpasswd curl python3 timeout; do
		if ! command -v "$tool" >/dev/null; then
			echo "$tool"
			return
		fi
	done
}

# reg_init: create $REG_DIR with the certificates and the htpasswd file.
reg_init() {
	: "${REG_DIR:?REG_DIR must be set}"
	mkdir -p "$REG_DIR/certs" "$REG_DIR/storage"
	reg_make_certs "$REG_DIR/certs"
	htpasswd -Bbc "$REG_DIR/htpasswd" "$REG_USER" "$REG_PASSWORD" 2>/dev/null
}

# reg_make_certs DIR: a test CA, a server certificate it signs (subjectAltName IP:127.0.0.1,
# DNS:localhost and DNS:$REG_TLS_NAME) and a self-signed RSA certificate for the token server's
# signing key.
reg_make_certs() {
	local d=$1 san="IP:127.0.0.1,DNS:localhost,DNS:$REG_TLS_NAME"
	(
		set -e
		cd "$d"
		openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
			-subj "/CN=clip test CA" -addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign"
		openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
			-subj "/CN=127.0.0.1"
		printf '%s\n' "subjectAltName=$san" \
			"basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
			"extendedKeyUsage=serverAuth" >server.ext
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
			-out server.pem -days 2 -extfile server.ext
		openssl req -x509 -newkey rsa:2048 -nodes -keyout token.key -out token.pem -days 2 \
			-subj "/CN=clip test token signer"
		# skopeo's --*-cert-dir wants the CA as *.crt.
		mkdir -p skopeo
		cp ca.pem skopeo/ca.crt
	) >"$d/openssl.log" 2>&1 || {
		cat "$d/openssl.log" >&2
		return 1
	}
}

# with_test_hosts CMD...: run CMD in a private mount namespace whose /etc/hosts also maps
# $REG_TLS_NAME to 127.0.0.1 (needs root and unshare from util-linux; nothing changes outside).
with_test_hosts() {
	if [ ! -e "$REG_DIR/hosts" ]; then
		{
			cat /etc/hosts 2>/dev/null
			echo "127.0.0.1 $REG_TLS_NAME"
		} >"$REG_DIR/hosts.tmp"
		mv "$REG_DIR/hosts.tmp" "$REG_DIR/hosts"
	fi
	# shellcheck disable=SC2016 # $0 and $@ belong to the inner sh
	unshare --mount --propagation private \
		sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$REG_DIR/hosts" "$@"
}

# reg_test_hosts_missing: why with_test_hosts cannot work here, or nothing.
reg_test_hosts_missing() {
	command -v unshare >/dev/null || { echo "unshare (util-linux) not installed"; return; }
	local got
	got=$(with_test_hosts getent ahostsv4 "$REG_TLS_NAME" 2>&1 | awk 'NR == 1 { print $1 }')
	[ "$got" = 127.0.0.1 ] ||
		echo "cannot resolve $REG_TLS_NAME in a private mount namespace (unshare -m, mount --bind)"
}

# reg_free_port: a TCP port on 127.0.0.1 that was free a moment ago.
reg_free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# server_addr NAME: "127.0.0.1:PORT" of a started server.
server_addr() {
	echo "127.0.0.1:$(cat "$REG_DIR/$1.port")"
}

# server_pid NAME
server_pid() {
	cat "$REG_DIR/$1.pid"
}

# reg_spawn NAME CMD...: run CMD in the background, detached from bats' file descriptors (bats
# waits for whatever holds fd 3), bounded by `timeout`; records NAME.pid, output in NAME.log.
reg_spawn() {
	local name=$1
	shift
	# One process per name: a pid file overwritten would leak the previous server.
	server_stop "$name"
	timeout --kill-after=5 "${CLIP_TEST_SERVER_LIFETIME:-1800}" "$@" \
		</dev/null >"$REG_DIR/$name.log" 2>&1 3>&- 4>&- 5>&- &
	echo $! >"$REG_DIR/$name.pid"
}

# reg_wait_http NAME URL [CURL-ARGS...]: wait (up to 15 s) until URL answers with any HTTP status;
# fails with the server's log when it died or never answered.
reg_wait_http() {
	local name=$1 url=$2 i code
	shift 2
	for ((i = 0; i < 150; i++)); do
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" || true)
		if [ -n "$code" ] && [ "$code" != 000 ]; then
			return 0
		fi
		if ! kill -0 "$(server_pid "$name")" 2>/dev/null; then
			echo "$name exited while starting; its log:" >&2
			tail -n 30 "$REG_DIR/$name.log" >&2
			return 1
		fi
		sleep 0.1
	done
	echo "$name did not answer $url within 15 s; its log:" >&2
	tail -n 30 "$REG_DIR/$name.log" >&2
	return 1
}

# reg_wait_port_file NAME: wait until a python server wrote NAME.port.
reg_wait_port_file() {
	local name=$1 i
	for ((i = 0; i < 100; i++)); do
		[ -s "$REG_DIR/$name.port" ] && return 0
		if ! kill -0 "$(server_pid "$name")" 2>/dev/null; then
			echo "$name exited while starting; its log:" >&2
			tail -n 30 "$REG_DIR/$name.log" >&2
			return 1
		fi
		sleep 0.1
	done
	echo "$name did not start within 10 s" >&2
	return 1
}

# registry_start NAME MODE [TOKEN-SERVER-NAME]: start a docker-registry in MODE (anonymous,
# readonly: anonymous with every write refused, htpasswd, token, tls) on a free port and wait
# until it answers. The token mode names a token
# server started before with token_server_start. A registry started again under the same NAME
# (after server_stop) keeps its port.
registry_start() {
	local name=$1 mode=$2 token_server=${3:-} port tries scheme=http curl_args=()
	[ -n "$REG_DIR" ] || { echo "REG_DIR is not set" >&2; return 1; }
	for ((tries = 0; tries < 3; tries++)); do
		if [ -s "$REG_DIR/$name.port" ]; then
			port=$(cat "$REG_DIR/$name.port")
		else
			port=$(reg_free_port)
		fi
		{
			cat <<-EOF
				version: 0.1
				log:
				  level: info
				  formatter: text
				  accesslog:
				    disabled: false
				storage:
				  filesystem:
				    rootdirectory: $REG_DIR/storage
				  delete:
				    enabled: true
				  maintenance:
				    uploadpurging:
				      enabled: false
				    readonly:
				      enabled: $([ "$mode" = readonly ] && echo true || echo false)
				http:
				  addr: 127.0.0.1:$port
				  secret: clip-test-http-secret
				  headers:
				    X-Content-Type-Options: [nosniff]
			EOF
			case $mode in
			anonymous | readonly) ;;
			tls)
				cat <<-EOF
					  tls:
					    certificate: $REG_DIR/certs/server.pem
					    key: $REG_DIR/certs/server.key
				EOF
				scheme=https
				curl_args=(--cacert "$REG_DIR/certs/ca.pem")
				;;
			htpasswd)
				cat <<-EOF
					auth:
					  htpasswd:
					    realm: clip-test
					    path: $REG_DIR/htpasswd
				EOF
				;;
			token)
				[ -s "$REG_DIR/$token_server.port" ] || {
					echo "token mode needs a started token server" >&2
					return 1
				}
				cat <<-EOF
					auth:
					  token:
					    realm: http://$(server_addr "$token_server")/token
					    service: $REG_TOKEN_SERVICE
					    issuer: $REG_TOKEN_ISSUER
					    rootcertbundle: $REG_DIR/certs/token.pem
				EOF
				;;
			*)
				echo "registry_start: unknown mode $mode" >&2
				return 1
				;;
			esac
			cat <<-EOF
				health:
				  storagedriver:
				    enabled: false
			EOF
		} >"$REG_DIR/$name.yml"
		echo "$port" >"$REG_DIR/$name.port"
		echo "$mode" >"$REG_DIR/$name.mode"
		# distribution reads REGISTRY_<SECTION>_<KEY> variables as configuration: podman's
		# REGISTRY_AUTH_FILE would become "auth: file:" and break it.
		local unset=() var
		for var in $(compgen -e | grep '^REGISTRY_' || true); do
			unset+=(-u "$var")
		done
		reg_spawn "$name" env "${unset[@]}" docker-registry serve "$REG_DIR/$name.yml"
		if reg_wait_http "$name" "$scheme://127.0.0.1:$port/v2/" "${curl_args[@]}" 2>"$REG_DIR/$name.start-error"; then
			return 0
		fi
		server_stop "$name"
		# Someone else took the port between reg_free_port and the bind: try another one.
		if grep -q 'address already in use' "$REG_DIR/$name.log"; then
			rm -f "$REG_DIR/$name.port"
			continue
		fi
		break
	done
	cat "$REG_DIR/$name.start-error" >&2
	return 1
}

# token_server_start NAME [TOKEN-SERVER-ARGS...]: start tools/token_server.py signing with
# certs/token.key for the test service and issuer, accepting $REG_USER:$REG_PASSWORD and
# $REG_REFRESH_TOKEN; requests are logged to NAME.requests (one JSON object per line).
token_server_start() {
	local name=$1
	shift
	rm -f "$REG_DIR/$name.port"
	: >"$REG_DIR/$name.requests"
	reg_spawn "$name" python3 "$REG_TOOLS/token_server.py" \
		--key "$REG_DIR/certs/token.key" --cert "$REG_DIR/certs/token.pem" \
		--issuer "$REG_TOKEN_ISSUER" --service "$REG_TOKEN_SERVICE" \
		--user "$REG_USER:$REG_PASSWORD" --refresh-token "$REG_REFRESH_TOKEN" \
		--port-file "$REG_DIR/$name.port" --log "$REG_DIR/$name.requests" "$@"
	reg_wait_port_file "$name"
}

# fault_proxy_start NAME UPSTREAM-NAME [FAULT-PROXY-ARGS...]: start tools/fault_proxy.py in front
# of a plain-HTTP registry. Rules are set with fault_set; requests logged to NAME.requests.
fault_proxy_start() {
	local name=$1 upstream=$2
	shift 2
	rm -f "$REG_DIR/$name.port"
	: >"$REG_DIR/$name.requests"
	: >"$REG_DIR/$name.control"
	reg_spawn "$name" python3 "$REG_TOOLS/fault_proxy.py" --upstream "$(server_addr "$upstream")" \
		--control "$REG_DIR/$name.control" --log "$REG_DIR/$name.requests" \
		--port-file "$REG_DIR/$name.port" "$@"
	reg_wait_port_file "$name"
}

# referrers_proxy_start NAME UPSTREAM-NAME: start tools/referrers_proxy.py (the OCI 1.1
# referrers API) in front of a plain-HTTP registry; requests logged to NAME.requests.
referrers_proxy_start() {
	local name=$1 upstream=$2
	rm -f "$REG_DIR/$name.port"
	: >"$REG_DIR/$name.requests"
	reg_spawn "$name" python3 "$REG_TOOLS/referrers_proxy.py" --upstream "$(server_addr "$upstream")" \
		--state "$REG_DIR/$name.state" --log "$REG_DIR/$name.requests" \
		--port-file "$REG_DIR/$name.port"
	reg_wait_port_file "$name"
}

# fault_set PROXY-NAME [RULE-JSON...]: replace the proxy's rules (none: forward everything) and
# reset their counters; also empties the proxy's request log.
fault_set() {
	local name=$1 ctl
	shift
	ctl=$REG_DIR/$name.control
	python3 -c 'import json, sys; print(json.dumps({"rules": [json.loads(r) for r in sys.argv[1:]]}))' \
		"$@" >"$ctl.tmp"
	mv "$ctl.tmp" "$ctl"
	: >"$REG_DIR/$name.requests"
}

# fault_rule ACTION PATH-REGEX [KEY=VALUE...]: one fault_proxy rule for GET requests, as JSON;
# a VALUE that parses as JSON is taken as such (numbers, objects), else as a string.
#   fault_rule status /manifests/ status=429 'headers={"Retry-After": "1"}'
fault_rule() {
	python3 - "$@" <<-'PY'
		import json, sys
		action, path, *pairs = sys.argv[1:]
		rule = {"method": "GET", "path": path, "action": action}
		for pair in pairs:
		    key, _, value = pair.partition("=")
		    try:
		        rule[key] = json.loads(value)
		    except ValueError:
		        rule[key] = value
		print(json.dumps(rule))
	PY
}

# server_requests NAME [PYTHON-EXPR]: the number of logged requests of a proxy or token server
# for which PYTHON-EXPR (over the dict `r`) is true; all of them without one.
server_requests() {
	python3 - "$REG_DIR/$1.requests" "${2:-True}" <<-'PY'
		import json, sys
		n = 0
		for line in open(sys.argv[1]):
		    r = json.loads(line)
		    n += bool(eval(sys.argv[2], {}, {"r": r}))
		print(n)
	PY
}

# server_stop NAME: stop one server (TERM, then KILL after 5 s) and wait for it.
server_stop() {
	local name=$1 pid i
	[ -s "$REG_DIR/$name.pid" ] || return 0
	pid=$(cat "$REG_DIR/$name.pid")
	rm -f "$REG_DIR/$name.pid"
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

# servers_stop_all: stop every server started under $REG_DIR.
servers_stop_all() {
	local f
	[ -n "${REG_DIR:-}" ] && [ -d "$REG_DIR" ] || return 0
	for f in "$REG_DIR"/*.pid; do
		[ -e "$f" ] || continue
		server_stop "$(basename "$f" .pid)"
	done
}

# push_image SRC DEST-REF [SKOPEO-ARGS...]: skopeo copy SRC (e.g. oci:DIR:TAG) to a registry
# reference (host:port/repo:tag), keeping digests; plain HTTP unless --dest-cert-dir is given.
push_image() {
	local src=$1 dest=$2
	shift 2
	local tls=(--dest-tls-verify=false)
	case " $* " in *" --dest-cert-dir"*) tls=() ;; esac
	# An empty auth file keeps whatever the machine has in ~/.docker or XDG_RUNTIME_DIR out.
	[ -e "$REG_DIR/empty-auth.json" ] || echo '{}' >"$REG_DIR/empty-auth.json"
	REGISTRY_AUTH_FILE=$REG_DIR/empty-auth.json skopeo copy --quiet --preserve-digests \
		"${tls[@]}" "$@" "$src" "docker://$dest"
}

# make_arch_layout DIR OS/ARCH: a small one-layer OCI layout (tag "latest") whose config names
# the platform and whose files tell it apart: /etc/clip-arch holds "OS/ARCH", /arch-data/random
# is 1 MiB of random bytes. The layer is written by `umoci repack` (umoci 0.4.7's `insert` writes
# tar streams without their final padding and end-of-archive blocks).
make_arch_layout() {
	local dir=$1 platform=$2 bundle
	bundle=$(mktemp -d "${TMPDIR:-/tmp}/clip-arch.XXXXXX")
	(
		set -e
		umoci init --layout "$dir"
		umoci new --image "$dir:latest"
		umoci config --image "$dir:latest" --os "${platform%%/*}" --architecture "${platform#*/}" \
			--config.cmd /bin/true
		umoci unpack --image "$dir:latest" "$bundle/b"
		mkdir -p "$bundle/b/rootfs/etc" "$bundle/b/rootfs/arch-data"
		echo "$platform" >"$bundle/b/rootfs/etc/clip-arch"
		head -c 1048576 /dev/urandom >"$bundle/b/rootfs/arch-data/random"
		printf 'built for %s\n' "$platform" >"$bundle/b/rootfs/arch-data/readme"
		umoci repack --image "$dir:latest" "$bundle/b"
		umoci gc --layout "$dir"
	) >/dev/null
	local rc=$?
	rm -rf "$bundle"
	return $rc
}

# make_multiarch_layout OUT LAYOUT...: an OCI layout whose tag "latest" is an image index of the
# "latest" manifests of the given layouts, each entry with the platform of its config.
make_multiarch_layout() {
	local out=$1
	shift
	python3 - "$out" "$@" <<-'PY'
		import hashlib, json, os, shutil, sys
		out, layouts = sys.argv[1], sys.argv[2:]
		os.makedirs(out + "/blobs/sha256", exist_ok=True)
		with open(out + "/oci-layout", "w") as f:
		    json.dump({"imageLayoutVersion": "1.0.0"}, f)
		def blob(layout, digest):
		    return "%s/blobs/%s" % (layout, digest.replace(":", "/"))
		entries = []
		for layout in layouts:
		    index = json.load(open(layout + "/index.json"))
		    desc = [d for d in index["manifests"]
		            if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == "latest"][0]
		    for name in os.listdir(layout + "/blobs/sha256"):
		        shutil.copyfile(layout + "/blobs/sha256/" + name, out + "/blobs/sha256/" + name)
		    manifest = json.load(open(blob(layout, desc["digest"])))
		    config = json.load(open(blob(layout, manifest["config"]["digest"])))
		    entries.append({"mediaType": desc["mediaType"], "digest": desc["digest"], "size": desc["size"],
		                    "platform": {"os": config["os"], "architecture": config["architecture"]}})
		data = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		                   "manifests": entries}, sort_keys=True).encode()
		digest = hashlib.sha256(data).hexdigest()
		open(out + "/blobs/sha256/" + digest, "wb").write(data)
		with open(out + "/index.json", "w") as f:
		    json.dump({"schemaVersion": 2, "manifests": [{
		        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + digest,
		        "size": len(data), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)
		print("sha256:" + digest)
	PY
}
