#!/usr/bin/env python3
"""takeover_stress.py: read a mount's files while its server is killed, and check every byte.

usage:
  takeover_stress.py reference LAYOUT[:TAG] OUT.json
      The size and SHA-256 of every regular file of the OCI image, from its layer tars
      (whiteouts and opaque directories applied): a reference that owes nothing to clip.
  takeover_stress.py stress MNT REFERENCE.json STOPFILE OUT.json [--threads N] [--mapped N]
      Until STOPFILE exists: N threads read random files of REFERENCE through MNT, each
      file's page cache dropped first (posix_fadvise DONTNEED) so that every read goes to
      the server, and compare each file's SHA-256 with the reference. --mapped files are
      opened and mmap'd once at the start and checked over and over through the same
      mapping (pages dropped each time), across every restart. Writes a summary to
      OUT.json: files, bytes, failed (reads that raised: EIO, ENOTCONN...), wrong (files
      whose bytes differ), the errors seen, the seconds the stress ran and every read()
      call (of the readers, not the mapped files) slower than 5 ms as
      [start (time.time()), seconds].
"""
import gzip
import hashlib
import json
import mmap
import os
import random
import sys
import tarfile
import threading
import time

SLOW = 0.005
CHUNK = 128 * 1024


def reference(spec, out):
    layout, _, tag = spec.partition(":")
    tag = tag or "latest"
    index = json.load(open(os.path.join(layout, "index.json")))
    manifest = None
    for desc in index["manifests"]:
        if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            manifest = desc["digest"]
    if manifest is None:
        sys.exit("no manifest tagged %s in %s" % (tag, layout))

    def blob(digest):
        algo, hexd = digest.split(":")
        return os.path.join(layout, "blobs", algo, hexd)

    files = {}
    for layer in json.load(open(blob(manifest)))["layers"]:
        opener = gzip.open if "gzip" in layer["mediaType"] else open
        with opener(blob(layer["digest"]), "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            # Streamed, so hard links are resolved against what this layer already gave.
            seen = {}
            for m in tar:
                name = "/" + os.path.normpath(m.name).lstrip("./")
                name = "/" + name.lstrip("/")
                base = os.path.basename(name)
                parent = os.path.dirname(name)
                if base == ".wh..wh..opq":
                    prefix = parent.rstrip("/") + "/"
                    for p in [p for p in files if p.startswith(prefix)]:
                        del files[p]
                    continue
                if base.startswith(".wh."):
                    gone = os.path.join(parent, base[4:])
                    for p in [p for p in files if p == gone or p.startswith(gone + "/")]:
                        del files[p]
                    continue
                files.pop(name, None)
                if m.isreg():
                    h = hashlib.sha256()
                    f = tar.extractfile(m)
                    size = 0
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                        size += len(block)
                    files[name] = [size, h.hexdigest()]
                    seen[name] = files[name]
                elif m.islnk():
                    target = "/" + os.path.normpath(m.linkname).lstrip("./").lstrip("/")
                    if target in seen:
                        files[name] = seen[target]
                    elif target in files:
                        files[name] = files[target]
    json.dump(files, open(out, "w"))


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.files = self.bytes = self.failed = self.wrong = 0
        self.errors = {}
        self.slow = []

    def add(self, files=0, nbytes=0, failed=0, wrong=0, error=None, slow=None):
        with self.lock:
            self.files += files
            self.bytes += nbytes
            self.failed += failed
            self.wrong += wrong
            if error:
                self.errors[error] = self.errors.get(error, 0) + 1
            if slow:
                self.slow.extend(slow)


def read_file(path, stats):
    slow = []
    h = hashlib.sha256()
    n = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while True:
            t = time.time()
            block = os.read(fd, CHUNK)
            d = time.time() - t
            if d > SLOW:
                slow.append([t, d])
            if not block:
                break
            h.update(block)
            n += len(block)
    finally:
        os.close(fd)
    return n, h.hexdigest(), slow


def reader(mnt, ref, names, stop, stats, seed):
    rnd = random.Random(seed)
    while not os.path.exists(stop):
        name = rnd.choice(names)
        try:
            n, digest, slow = read_file(mnt + name, stats)
        except OSError as e:
            stats.add(failed=1, error="%s: %s" % (name, e.strerror))
            continue
        size, want = ref[name]
        bad = n != size or digest != want
        stats.add(files=1, nbytes=n, wrong=1 if bad else 0, slow=slow,
                  error=("%s: wrong bytes" % name) if bad else None)


def mapped(mnt, ref, name, stop, stats):
    """One file, open and mmap'd from the start to the end: checked again and again."""
    size, want = ref[name]
    fd = os.open(mnt + name, os.O_RDONLY)
    m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    try:
        while not os.path.exists(stop):
            # Unmapped from us, then out of the page cache: the next touch of each page
            # is a read through the server, whichever one serves now.
            m.madvise(mmap.MADV_DONTNEED)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            try:
                digest = hashlib.sha256(m[:]).hexdigest()
            except OSError as e:
                stats.add(failed=1, error="%s (mmap): %s" % (name, e.strerror))
                continue
            bad = digest != want
            # Not timed: one hash of the whole mapping is many reads, not one pause.
            stats.add(files=1, nbytes=size, wrong=1 if bad else 0,
                      error=("%s (mmap): wrong bytes" % name) if bad else None)
            time.sleep(0.01)
    finally:
        m.close()
        os.close(fd)


def stress(mnt, ref_path, stop, out, threads, nmapped):
    ref = json.load(open(ref_path))
    names = sorted(n for n in ref if os.path.isfile(mnt + n) and not os.path.islink(mnt + n))
    if not names:
        sys.exit("no file of the reference is in %s" % mnt)
    stats = Stats()
    # The largest files stay mapped: their pages span many reads.
    big = sorted(names, key=lambda n: ref[n][0], reverse=True)[:nmapped]
    workers = [threading.Thread(target=mapped, args=(mnt, ref, n, stop, stats)) for n in big]
    workers += [threading.Thread(target=reader, args=(mnt, ref, names, stop, stats, i))
                for i in range(threads)]
    start = time.time()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    summary = {
        "files": stats.files, "bytes": stats.bytes, "failed": stats.failed,
        "wrong": stats.wrong, "errors": stats.errors, "seconds": time.time() - start,
        "checked": len(names), "mapped": big, "slow": stats.slow,
    }
    json.dump(summary, open(out, "w"))


def main(argv):
    if len(argv) >= 4 and argv[1] == "reference":
        reference(argv[2], argv[3])
        return
    if len(argv) >= 6 and argv[1] == "stress":
        threads, nmapped = 8, 4
        rest = argv[6:]
        while rest:
            opt, value = rest[0], int(rest[1])
            if opt == "--threads":
                threads = value
            elif opt == "--mapped":
                nmapped = value
            else:
                sys.exit(__doc__)
            rest = rest[2:]
        stress(argv[2], argv[3], argv[4], argv[5], threads, nmapped)
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
