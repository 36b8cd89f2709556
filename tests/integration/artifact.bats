#!/usr/bin/env bats
# Integration test of archives stored in the registry (clip push, clip pull, clip mount IMAGE,
# clip index --push) against Debian's docker-registry 2.8 on 127.0.0.1, which has no referrers
# API (clip keeps the sha256-<hex> referrers tag), and tools/referrers_proxy.py in front of it,
# which adds the OCI 1.1 referrers API. Forged, truncated and unknown-format artifacts must be
# refused with the image indexed here instead; two pushers racing must both stay listed; a
# registry that refuses writes must still let a node mount.
#
# How to run (as root):
#   meson test -C build integration-artifact -v
#   CLIP=$PWD/build/clip CLIP_TEST_IMAGE=DIR bats tests/integration/artifact.bats
# Needs: root, umoci, python3, docker-registry, skopeo, curl, /dev/fuse and fusermount3.

load helpers
load registry

setup_file() {
	CLIP_SKIP_REASON=$(require_env /dev/fuse umoci debootstrap python3 docker-registry skopeo curl \
		openssl htpasswd timeout fusermount3)
	export CLIP_SKIP_REASON
	[ -z "$CLIP_SKIP_REASON" ] || return 0

	W=$(make_workdir)
	export W REG_DIR=$W/servers
	IMAGE=$(test_image "$W/image") || return 1
	export IMAGE
	# Image B: A with another config, so another manifest digest (the layers are shared).
	cp -a "$IMAGE" "$W/imgb"
	umoci config --image "$W/imgb:latest" --config.env CLIP_IMAGE=b >/dev/null
	reg_init
	registry_start reg anonymous
	registry_start ro readonly
	registry_start basic htpasswd
	token_server_start tok
	registry_start token token tok
	referrers_proxy_start api reg
	REG=$(server_addr reg)
	export REG RO=$(server_addr ro) API=$(server_addr api) BASIC=$(server_addr basic) \
		TOKEN=$(server_addr token)
	local repo
	for repo in basic race forge api ro cred; do
		push_image "oci:$IMAGE:latest" "$REG/test/$repo:v1"
	done
	push_image "oci:$W/imgb:latest" "$REG/test/forge:b"
	A_DIGEST=$(curl -s -o /dev/null -w '%header{docker-content-digest}' \
		-H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/test/basic/manifests/v1")
	export A_DIGEST
	"$CLIP" index "$REG/test/basic:v1" -o "$W/a.clip" -q
	"$CLIP" index "$REG/test/forge:b" -o "$W/b.clip" -q
	umoci unpack --image "$IMAGE:latest" "$W/bundle" >/dev/null
	export ROOTFS=$W/bundle/rootfs
}

teardown_file() {
	[ -z "${W:-}" ] || unmount_under "$W"
	servers_stop_all
	remove_workdir "${W:-}"
}

setup() {
	[ -z "$CLIP_SKIP_REASON" ] || skip "$CLIP_SKIP_REASON"
	T=$(mktemp -d "$W/t.XXXXXX")
	mkdir "$T/m"
}

teardown() {
	[ -z "${T:-}" ] || unmount_under "$T"
}

# referrers_tag REPO [REGISTRY]: the sha256-<hex> index of image A, or nothing (404).
referrers_tag() {
	curl -sf -H 'Accept: application/vnd.oci.image.index.v1+json' \
		"http://${2:-$REG}/v2/$1/manifests/sha256-${A_DIGEST#sha256:}" || true
}

# listed REPO: the artifact digests the referrers tag of image A lists, one a line.
listed() {
	referrers_tag "$1" | python3 -c 'import json, sys
for m in json.load(sys.stdin)["manifests"]: print(m["digest"])'
}

# forge REPO SUBJECT BLOBFILE FORMAT: push BLOBFILE as a clip artifact whose manifest says it
# indexes SUBJECT (an image manifest digest) in format FORMAT; prints the artifact's digest.
# What a malicious or broken pusher could do (list_under_a lists it).
forge() {
	python3 - "$REG" "$@" <<-'PY'
		import hashlib, json, sys, urllib.request
		reg, repo, subject, blobfile, fmt = sys.argv[1:]
		base = "http://%s/v2/%s" % (reg, repo)
		def req(method, url, data=None, headers={}):
		    r = urllib.request.Request(url, data=data, method=method, headers=headers)
		    return urllib.request.urlopen(r)
		def blob(data):
		    d = "sha256:" + hashlib.sha256(data).hexdigest()
		    loc = req("POST", base + "/blobs/uploads/").headers["Location"]
		    sep = "&" if "?" in loc else "?"
		    if loc.startswith("/"):
		        loc = "http://" + reg + loc
		    req("PUT", loc + sep + "digest=" + d, data,
		        {"Content-Type": "application/octet-stream"})
		    return d, len(data)
		data = open(blobfile, "rb").read()
		bd, bs = blob(data)
		ed, es = blob(b"{}")
		m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		     "artifactType": "application/vnd.clip.archive",
		     "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": ed,
		                "size": es},
		     "layers": [{"mediaType": "application/vnd.clip.archive.v" + fmt, "digest": bd,
		                 "size": bs}],
		     "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
		                 "digest": subject, "size": 1},
		     "annotations": {"dev.clip.archive.format": fmt,
		                     "org.opencontainers.image.created": "2099-01-01T00:00:00Z"}}
		body = json.dumps(m).encode()
		md = "sha256:" + hashlib.sha256(body).hexdigest()
		mt = "application/vnd.oci.image.manifest.v1+json"
		req("PUT", base + "/manifests/" + md, body, {"Content-Type": mt})
		print(md)
	PY
}

# list_under_a REPO DIGEST: add artifact DIGEST to image A's referrers tag in REPO.
list_under_a() {
	python3 - "$REG" "$1" "$A_DIGEST" "$2" <<-'PY'
		import json, sys, urllib.request, urllib.error
		reg, repo, a, d = sys.argv[1:]
		url = "http://%s/v2/%s/manifests/sha256-%s" % (reg, repo, a[7:])
		it = "application/vnd.oci.image.index.v1+json"
		try:
		    idx = json.load(urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": it})))
		except urllib.error.HTTPError:
		    idx = {"schemaVersion": 2, "mediaType": it, "manifests": []}
		m = urllib.request.urlopen(urllib.request.Request(
		    "http://%s/v2/%s/manifests/%s" % (reg, repo, d),
		    headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})).read()
		doc = json.loads(m)
		idx["manifests"].append({"mediaType": doc["mediaType"], "digest": d, "size": len(m),
		                         "artifactType": doc["artifactType"],
		                         "annotations": doc.get("annotations", {})})
		body = json.dumps(idx).encode()
		urllib.request.urlopen(urllib.request.Request(url, data=body, method="PUT",
		                                              headers={"Content-Type": it}))
	PY
}

# same_file MNT PATH: MNT/PATH has the bytes of the reference unpack.
same_file() {
	local got want
	got=$(sha256sum <"$1$2") || return 1
	want=$(sha256sum <"$ROOTFS$2")
	[ "$got" = "$want" ] || { echo "$2 differs"; return 1; }
}

@test "push lists the archive in the referrers tag (registry 2.8), once however often pushed" {
	run --separate-stderr "$CLIP" push "$W/a.clip" --to "$REG/test/basic"
	echo "$output $stderr"
	[ "$status" -eq 0 ]
	[[ $output == *"referrers tag"* ]]
	local first
	first=$(listed test/basic)
	[ "$(wc -l <<<"$first")" -eq 1 ]
	[[ $output == *"$first"* ]]
	run "$CLIP" push -q "$W/a.clip" --to "$REG/test/basic"
	[ "$status" -eq 0 ]
	[ "$(listed test/basic)" = "$first" ]
	# The artifact: type, subject, one layer of the archive's format.
	curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
		"http://$REG/v2/test/basic/manifests/$first" >"$T/m.json"
	python3 - "$T/m.json" "$A_DIGEST" "$(sha256sum <"$W/a.clip" | cut -c1-64)" <<-'PY'
		import json, sys
		m = json.load(open(sys.argv[1]))
		assert m["artifactType"] == "application/vnd.clip.archive", m
		assert m["subject"]["digest"] == sys.argv[2], m
		assert [l["mediaType"] for l in m["layers"]] == ["application/vnd.clip.archive.v3"], m
		assert m["layers"][0]["digest"] == "sha256:" + sys.argv[3], m
		assert m["annotations"]["dev.clip.archive.format"] == "3", m
	PY
}

@test "a fresh node mounts by reference from the registry, then from its local store" {
	"$CLIP" push -q "$W/a.clip" --to "$REG/test/basic"
	run --separate-stderr "$CLIP" mount --cache-dir "$T/cache" --no-index \
		"$REG/test/basic:v1" "$T/m"
	echo "$output $stderr"
	[ "$status" -eq 0 ]
	same_file "$T/m" /usr/lib/os-release
	same_file "$T/m" /clip-test/big/3mib-text
	[ "$(stats_field "$T/m" archive_origin)" = registry ]
	[ "$(stats_field "$T/m" archive_fetched_bytes)" -eq "$(stat -c %s "$W/a.clip")" ]
	"$CLIP" umount "$T/m"
	cmp "$W/a.clip" "$T"/cache/archives/"${A_DIGEST#sha256:}"/*.clip
	# Again: from the store, without asking for archives.
	"$CLIP" mount --cache-dir "$T/cache" --no-index "docker://$REG/test/basic:v1" "$T/m"
	[ "$(stats_field "$T/m" archive_origin)" = store ]
	same_file "$T/m" /usr/lib/os-release
	"$CLIP" umount "$T/m"
	# clip pull writes the same archive.
	run "$CLIP" pull --cache-dir "$T/cache2" --no-index "$REG/test/basic:v1" -o "$T/p.clip"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ $output == *"from the registry"* ]]
	cmp "$W/a.clip" "$T/p.clip"
}

@test "the referrers API: a registry that answers OCI-Subject gets no referrers tag" {
	run --separate-stderr "$CLIP" push "$W/a.clip" --to "$API/test/api"
	echo "$output $stderr"
	[ "$status" -eq 0 ]
	[[ $output == *"referrers API"* ]]
	[ -z "$(referrers_tag test/api)" ]
	run --separate-stderr "$CLIP" pull --cache-dir "$T/c" --no-index "$API/test/api:v1" \
		-o "$T/p.clip"
	echo "$output $stderr"
	[ "$status" -eq 0 ]
	cmp "$W/a.clip" "$T/p.clip"
	grep -q '"/v2/test/api/referrers/' "$REG_DIR/api.requests"
	# Straight to the registry (no API, no tag): nothing to find.
	run --separate-stderr "$CLIP" pull --cache-dir "$T/c2" --no-index "$REG/test/api:v1" \
		-o "$T/q.clip"
	[ "$status" -ne 0 ]
	[[ $stderr == *"no usable archive"* ]]
	[ ! -e "$T/q.clip" ]
	# A registry that answers 400 on the referrers API (as some do, not 404): the tag is read.
	"$CLIP" push -q "$W/a.clip" --to "$REG/test/basic"
	fault_proxy_start fp reg
	fault_set fp "$(fault_rule status '/referrers/' status=400 times=-1)"
	run --separate-stderr "$CLIP" pull --cache-dir "$T/c3" --no-index \
		"$(server_addr fp)/test/basic:v1" -o "$T/r.clip"
	echo "$stderr"
	[ "$status" -eq 0 ]
	cmp "$W/a.clip" "$T/r.clip"
	[ "$(server_requests fp 'r["status"] == 400')" -eq 1 ]
	server_stop fp
}

@test "two pushers racing both stay listed; the newest is picked, --archive-digest picks another" {
	"$CLIP" index "$REG/test/race:v1" --checkpoint-mib 4 -o "$T/r4.clip" -q
	cp "$W/a.clip" "$T/r2.clip"
	touch -d '2026-01-01 00:00:00' "$T/r2.clip"
	touch -d '2026-06-01 00:00:00' "$T/r4.clip"
	local i
	for i in 1 2 3; do
		"$CLIP" push -q "$T/r2.clip" --to "$REG/test/race" &
		"$CLIP" push -q "$T/r4.clip" --to "$REG/test/race" &
		wait %1 && wait %2
	done
	listed test/race >"$T/listed"
	cat "$T/listed"
	[ "$(wc -l <"$T/listed")" -eq 2 ]
	run "$CLIP" pull --cache-dir "$T/c" --no-index "$REG/test/race:v1" -o "$T/p.clip"
	[ "$status" -eq 0 ]
	cmp "$T/r4.clip" "$T/p.clip"
	local other
	other=$(grep -v "$(sed -n 's/.*artifact \(sha256:[0-9a-f]*\).*/\1/p' <<<"$output")" "$T/listed")
	run "$CLIP" pull --cache-dir "$T/c3" --archive-digest "$other" "$REG/test/race:v1" \
		-o "$T/q.clip"
	[ "$status" -eq 0 ]
	cmp "$T/r2.clip" "$T/q.clip"
}

@test "forged, truncated and unknown-format archives are refused; the image is indexed here" {
	local d
	# Image B's archive, listed under image A with a manifest saying A.
	d=$(forge test/forge "$A_DIGEST" "$W/b.clip" 3)
	list_under_a test/forge "$d"
	run --separate-stderr "$CLIP" pull --cache-dir "$T/c1" --no-index "$REG/test/forge:v1" \
		-o "$T/p.clip"
	echo "$stderr"
	[ "$status" -ne 0 ]
	[[ $stderr == *"archive refused"*"indexes image"*"not $A_DIGEST"* ]]
	[ ! -e "$T/p.clip" ]
	[ -z "$(find "$T/c1" -name '*.clip*')" ]
	# Without --no-index: indexed here, and that archive is right.
	run --separate-stderr "$CLIP" mount --cache-dir "$T/c1" "$REG/test/forge:v1" "$T/m"
	echo "$stderr"
	[ "$status" -eq 0 ]
	[ "$(stats_field "$T/m" archive_origin)" = indexed ]
	same_file "$T/m" /usr/lib/os-release
	"$CLIP" umount "$T/m"

	# A truncated archive (its digest is of the truncated bytes: only opening it tells).
	head -c 100000 "$W/a.clip" >"$T/trunc.clip"
	d=$(forge test/forge "$A_DIGEST" "$T/trunc.clip" 3)
	list_under_a test/forge "$d"
	run --separate-stderr "$CLIP" pull --cache-dir "$T/c2" --archive-digest "$d" \
		"$REG/test/forge:v1" -o "$T/p.clip"
	echo "$stderr"
	[ "$status" -ne 0 ]
	[[ $stderr == *"$d"* ]]
	[ -z "$(find "$T/c2" -name '*.clip*')" ]

	# A format from the future, and an artifact whose manifest names image B.
	d=$(forge test/forge "$A_DIGEST" "$W/a.clip" 9)
	run --separate-stderr "$CLIP" pull --cache-dir "$T/c3" --archive-digest "$d" \
		"$REG/test/forge:v1" -o "$T/p.clip"
	echo "$stderr"
	[ "$status" -ne 0 ]
	[[ $stderr == *"format 9"* ]]
	local b_digest
	b_digest=$(curl -s -o /dev/null -w '%header{docker-content-digest}' \
		-H 'Accept: application/vnd.oci.image.manifest.v1+json' \
		"http://$REG/v2/test/forge/manifests/b")
	d=$(forge test/forge "$b_digest" "$W/a.clip" 3)
	run --separate-stderr "$CLIP" pull --cache-dir "$T/c4" --archive-digest "$d" \
		"$REG/test/forge:v1" -o "$T/p.clip"
	echo "$stderr"
	[ "$status" -ne 0 ]
	[[ $stderr == *"refers to image $b_digest, not $A_DIGEST"* ]]
}

@test "a node that may not push still mounts: --push-index only warns" {
	run --separate-stderr "$CLIP" mount --cache-dir "$T/c" --push-index "$RO/test/ro:v1" "$T/m"
	echo "$output $stderr"
	[ "$status" -eq 0 ]
	[[ $stderr == *"warning"*"pushing the archive failed"* ]]
	same_file "$T/m" /usr/lib/os-release
	"$CLIP" umount "$T/m"
	# Through the writable front door it is pushed, and found by the next node.
	run --separate-stderr "$CLIP" index --push "$REG/test/ro:v1" -o "$T/i.clip" -q
	[ "$status" -eq 0 ]
	[ "$(listed test/ro | wc -l)" -eq 1 ]
	run "$CLIP" pull --cache-dir "$T/c2" --no-index "$RO/test/ro:v1" -o "$T/p.clip"
	[ "$status" -eq 0 ]
	cmp "$T/i.clip" "$T/p.clip"
}

# as_user ARGS...: $CLIP with only the credentials of $T/docker/config.json.
as_user() {
	mkdir -p "$T/docker" "$T/home"
	env -u REGISTRY_AUTH_FILE HOME="$T/home" DOCKER_CONFIG="$T/docker" XDG_RUNTIME_DIR="$T/xdg" \
		"$CLIP" "$@"
}

@test "push with credentials: Basic where the registry wants them, Bearer tokens with push scope" {
	run --separate-stderr as_user push "$W/a.clip" --to "$BASIC/test/cred"
	echo "$stderr"
	[ "$status" -ne 0 ]
	[[ $stderr == *"$BASIC"*"401"* ]]
	mkdir -p "$T/docker"
	printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$BASIC" \
		"$(printf '%s:%s' "$REG_USER" "$REG_PASSWORD" | base64 -w0)" >"$T/docker/config.json"
	run --separate-stderr as_user push "$W/a.clip" --to "$BASIC/test/cred"
	echo "$output $stderr"
	[ "$status" -eq 0 ]
	[ "$(listed test/cred | wc -l)" -eq 1 ]
	# Bearer: the token for pulls is not enough; the 401 on the upload asks for push.
	: >"$REG_DIR/tok.requests"
	run --separate-stderr as_user push "$W/a.clip" --to "$TOKEN/test/cred"
	echo "$output $stderr"
	[ "$status" -eq 0 ]
	cat "$REG_DIR/tok.requests"
	grep -q 'test/cred:pull,push\|test/cred:push' "$REG_DIR/tok.requests"
	run --separate-stderr as_user pull --cache-dir "$T/c" --no-index "$TOKEN/test/cred:v1" \
		-o "$T/p.clip"
	[ "$status" -eq 0 ]
	cmp "$W/a.clip" "$T/p.clip"
}

@test "bad references and unreachable registries fail clearly" {
	run --separate-stderr "$CLIP" pull --cache-dir "$T/c" "$REG/test/nothere:v1" -o "$T/p.clip"
	expect_clean_failure "$T/p.clip"
	run --separate-stderr "$CLIP" mount --cache-dir "$T/c" "127.0.0.1:1/test/x:v1" "$T/m"
	[ "$status" -ne 0 ]
	[[ $stderr == *"127.0.0.1:1"* ]]
	not_mounted "$T/m"
	run --separate-stderr "$CLIP" mount "$T/missing.clip" "$T/m"
	[ "$status" -ne 0 ]
	[[ $stderr == *"missing.clip"*"No such file"* ]]
	run --separate-stderr "$CLIP" push "$W/a.clip" --to "$REG/test/nothere"
	[ "$status" -ne 0 ]
	[[ $stderr == *"not in this repository"* ]]
}

@test "a supervised mount by reference restarts from its stored archive, the registry gone" {
	"$CLIP" push -q "$W/a.clip" --to "$REG/test/basic"
	"$CLIP" mount --supervise --cache-dir "$T/c" --no-index "$REG/test/basic:v1" "$T/m"
	same_file "$T/m" /usr/lib/os-release
	local server
	server=$(stats_field "$T/m" server_pid)
	server_stop reg
	kill -KILL "$server"
	echo 3 >/proc/sys/vm/drop_caches
	same_file "$T/m" /usr/lib/os-release
	[ "$(stats_field "$T/m" restarts)" -ge 1 ]
	[ "$(stats_field "$T/m" server_pid)" != "$server" ]
	"$CLIP" umount "$T/m"
	registry_start reg anonymous
}

@test "clip bundle takes an image reference: its archive from the registry, run under runc" {
	command -v runc >/dev/null || skip "runc not installed"
	"$CLIP" push -q "$W/a.clip" --to "$REG/test/basic"
	"$CLIP" bundle --cache-dir "$T/c" --no-index "$REG/test/basic:v1" "$T/b" \
		-- /usr/bin/python3 -c 'print(6 * 7)' 3>&-
	[ "$(stats_field "$T/b/lower" archive_origin)" = registry ]
	run runc run -b "$T/b" "clip-artifact-$$"
	echo "$output"
	[ "$status" -eq 0 ]
	[ "$output" = 42 ]
	"$CLIP" unbundle "$T/b"
	[ ! -e "$T/b" ]
}
