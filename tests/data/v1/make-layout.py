import tarfile, io, gzip, hashlib, json, os
files = [("hello.txt", b"hello from a version 1 archive\n"),
         ("usr/share/doc/numbers.txt", "".join("%d\n" % i for i in range(1, 100001)).encode())]
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    for d in ["usr", "usr/share", "usr/share/doc"]:
        ti = tarfile.TarInfo(d); ti.type = tarfile.DIRTYPE; ti.mode = 0o755; ti.mtime = 1700000000; t.addfile(ti)
    for name, data in files:
        ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = 0o644; ti.mtime = 1700000000
        t.addfile(ti, io.BytesIO(data))
    ti = tarfile.TarInfo("link"); ti.type = tarfile.SYMTYPE; ti.linkname = "hello.txt"; ti.mtime = 1700000000; t.addfile(ti)
tar = buf.getvalue()
gz = gzip.compress(tar, compresslevel=6, mtime=0)
os.makedirs("img/blobs/sha256")
def blob(b):
    h = hashlib.sha256(b).hexdigest(); open("img/blobs/sha256/" + h, "wb").write(b); return "sha256:" + h, len(b)
ld, ls = blob(gz)
cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]}}).encode()
cd, cs = blob(cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
                  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ls}]}).encode()
md, ms = blob(man)
open("img/index.json", "w").write(json.dumps({"schemaVersion": 2, "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
     "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
open("img/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
