"""Magic numbers of images and of binary formats we skip, each with the check it needs.

Short signatures ("BM", "MZ", "ID3", "BZh") also start ordinary text ("BMW 320i ...",
"MZ-80 manual", "ID3 tags explained", "BZh is ..."), so each is accepted only when the header
fields that follow it hold values a real file has.
"""

from __future__ import annotations

from collections.abc import Callable

Check = Callable[[bytes], bool]

BMP_DIB_HEADER_SIZES = frozenset([12, 16, 40, 52, 56, 64, 108, 124])
BZIP2_BLOCK_MAGICS = (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")


def _bmp(head: bytes) -> bool:
    """Reserved bytes 6-9 are zero and bytes 14-17 give a known DIB header size."""
    if len(head) < 18 or head[6:10] != bytes(4):
        return False
    return int.from_bytes(head[14:18], "little") in BMP_DIB_HEADER_SIZES


def _dos_exe(head: bytes) -> bool:
    """A DOS header is 64 bytes of little-endian fields, several of them zero."""
    return len(head) >= 64 and b"\x00" in head[2:64]


def _id3(head: bytes) -> bool:
    """ID3v2: major version 2-4, then four 7-bit ("syncsafe") size bytes."""
    return len(head) >= 10 and head[3] in (2, 3, 4) and all(b < 0x80 for b in head[6:10])


def _bzip2(head: bytes) -> bool:
    """Block size digit 1-9, then a block (pi) or end-of-stream (sqrt pi) magic."""
    return len(head) >= 10 and 0x31 <= head[3] <= 0x39 and head[4:10] in BZIP2_BLOCK_MAGICS


def _always(_: bytes) -> bool:
    return True


IMAGE_MAGIC: tuple[tuple[bytes, str, Check], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png", _always),
    (b"\xff\xd8\xff", "jpeg", _always),
    (b"GIF87a", "gif", _always),
    (b"GIF89a", "gif", _always),
    (b"II*\x00", "tiff", _always),
    (b"MM\x00*", "tiff", _always),
    (b"BM", "bmp", _bmp),
)

BINARY_MAGIC: tuple[tuple[bytes, str, Check], ...] = (
    (b"\x1f\x8b", "gzip archive", _always),
    (b"PK\x03\x04", "zip archive (also docx/xlsx/jar)", _always),
    (b"PK\x05\x06", "empty zip archive", _always),
    (b"7z\xbc\xaf\x27\x1c", "7-zip archive", _always),
    (b"Rar!\x1a\x07", "rar archive", _always),
    (b"BZh", "bzip2 archive", _bzip2),
    (b"\xfd7zXZ\x00", "xz archive", _always),
    (b"\x28\xb5\x2f\xfd", "zstd archive", _always),
    (b"\x7fELF", "ELF executable", _always),
    (b"MZ", "Windows executable", _dos_exe),
    (b"\xca\xfe\xba\xbe", "Mach-O or Java class", _always),
    (b"\xcf\xfa\xed\xfe", "Mach-O executable", _always),
    (b"SQLite format 3\x00", "SQLite database", _always),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "legacy Office document (OLE)", _always),
    (b"OggS", "Ogg media", _always),
    (b"ID3", "MP3 audio", _id3),
    (b"fLaC", "FLAC audio", _always),
    (b"\x00asm", "WebAssembly module", _always),
    (b"PAR1", "Parquet file", _always),
    (b"\x93NUMPY", "NumPy array", _always),
)


def image_format(head: bytes) -> str | None:
    """The image format `head` starts with, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return _first_match(head, IMAGE_MAGIC)


def binary_format(head: bytes) -> str | None:
    """What binary (non-document) format `head` starts with, or None."""
    return _first_match(head, BINARY_MAGIC)


def _first_match(head: bytes, table: tuple[tuple[bytes, str, Check], ...]) -> str | None:
    for magic, what, check in table:
        if head.startswith(magic) and check(head):
            return what
    return None
