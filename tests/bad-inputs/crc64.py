"""CRC-64/ECMA-182, reflected (xz's CRC-64, ISA-L's crc64_ecma_refl): the
checksum of a .clip archive header (docs/FORMAT.md). Python's zlib has no
CRC-64, so this is the table version."""
import struct

POLY = 0xC96C5795D7870F42  # 0x42F0E1EBA9EA3693 reflected
TABLE = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ POLY if c & 1 else c >> 1
    TABLE.append(c)

CHECKSUM_OFF = 24  # HDR_CHECKSUM in src/lib/format.h
FILE_SIZE_OFF = 16  # HDR_FILE_SIZE


def crc64(data, crc=0):
    crc ^= 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc = TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def fix(archive):
    """The archive with its file-size field and checksum recomputed."""
    a = bytearray(archive)
    if len(a) < 64:
        return bytes(a)
    a[FILE_SIZE_OFF:FILE_SIZE_OFF + 8] = struct.pack("<Q", len(a))
    a[CHECKSUM_OFF:CHECKSUM_OFF + 8] = b"\0" * 8
    a[CHECKSUM_OFF:CHECKSUM_OFF + 8] = struct.pack("<Q", crc64(a))
    return bytes(a)


if __name__ == "__main__":
    # Self-test: the standard check value of CRC-64/XZ, and a real archive.
    assert crc64(b"123456789") == 0x995DC9BBDF1939FA
    import sys
    for path in sys.argv[1:]:
        data = open(path, "rb").read()
        ok = fix(data) == data
        print("%s: checksum %s" % (path, "ok" if ok else "MISMATCH"))
        if not ok:
            sys.exit(1)
