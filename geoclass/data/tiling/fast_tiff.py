"""A minimal GeoTIFF encoder for small chips, replaying the tags GDAL wrote for a template chip.

Kept because ``bench/tile_bench.py --compare-writers`` shows it well ahead of writing each chip
through GDAL (rasterio) for the default chip sizes; ``ChipWriter`` uses it only where a self-test
shows that it reproduces GDAL's output.
"""

from __future__ import annotations

import struct
import sys
import zlib

import numpy as np
from affine import Affine

__all__ = ["FastTiff", "parse_tiff_tags"]

_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
# Tags the fast writer sets itself (strips, tiles and the per-chip tie point).
_LAYOUT_TAGS = {273, 278, 279, 322, 323, 324, 325, 33922, 34264}
_STRIP_BYTES = 1 << 18


def parse_tiff_tags(buf: bytes) -> dict[int, tuple[int, int, bytes]] | None:
    """Tags of the first IFD of a little-endian classic TIFF: ``{tag: (type, count, bytes)}``."""
    if buf[:4] != b"II*\x00":
        return None
    off = struct.unpack_from("<I", buf, 4)[0]
    n = struct.unpack_from("<H", buf, off)[0]
    tags: dict[int, tuple[int, int, bytes]] = {}
    for i in range(n):
        tag, typ, cnt, val = struct.unpack_from("<HHI4s", buf, off + 2 + 12 * i)
        if typ not in _TIFF_TYPE_SIZES:
            return None
        size = _TIFF_TYPE_SIZES[typ] * cnt
        raw = val[:size] if size <= 4 else buf[struct.unpack("<I", val)[0]:][:size]
        tags[tag] = (typ, cnt, bytes(raw))
    if struct.unpack_from("<I", buf, off + 2 + 12 * n)[0] != 0:
        return None  # more IFDs (overviews, masks): not a layout this writer reproduces
    return tags


class FastTiff:
    """Writes single-IFD, stripped, DEFLATE GeoTIFFs with the georeferencing GDAL chose.

    GDAL writes one template chip; its tags (CRS keys, pixel scale, nodata, band descriptions,
    colour map, sample format, ...) are copied verbatim and only the strips and the tie point
    change per chip. This avoids GDAL's per-file open/close cost, which dominates for small chips.
    """

    def __init__(self, tags: dict[int, tuple[int, int, bytes]], tie_delta: tuple[float, float],
                 height: int, row_bytes: int, level: int) -> None:
        self.level = level
        self.height = height
        self.row_bytes = row_bytes
        self.rows_per_strip = max(1, min(height, _STRIP_BYTES // max(1, row_bytes)))
        self.nstrips = -(-height // self.rows_per_strip)
        self.tie_delta = tie_delta
        tags = {k: v for k, v in tags.items() if k not in _LAYOUT_TAGS}
        ns = self.nstrips
        tags[273] = (4, ns, b"\0" * 4 * ns)
        tags[278] = (4, 1, struct.pack("<I", self.rows_per_strip))
        tags[279] = (4, ns, b"\0" * 4 * ns)
        tags[33922] = (12, 6, b"\0" * 48)
        order = sorted(tags)
        ifd_size = 2 + 12 * len(order) + 4
        head = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(order)))
        head += b"\0" * (12 * len(order) + 4)
        extras = bytearray()
        extras_start = 8 + ifd_size
        self._pos: dict[int, int] = {}
        for k, tag in enumerate(order):
            typ, cnt, raw = tags[tag]
            entry = 10 + 12 * k
            if len(raw) <= 4:
                struct.pack_into("<HHI", head, entry, tag, typ, cnt)
                head[entry + 8: entry + 8 + len(raw)] = raw
                self._pos[tag] = entry + 8
            else:
                extras += b"\0" * (-(extras_start + len(extras)) % 8)
                where = extras_start + len(extras)
                struct.pack_into("<HHII", head, entry, tag, typ, cnt, where)
                extras += raw
                self._pos[tag] = where
        self._head = bytes(head + extras)

    def encode(self, data: np.ndarray, transform: Affine) -> bytes:
        """TIFF bytes of a ``(bands, h, w)`` chip whose top-left corner is at ``transform``."""
        pix = np.ascontiguousarray(np.moveaxis(data, 0, -1))
        if pix.dtype.byteorder == ">" or (pix.dtype.byteorder == "=" and sys.byteorder == "big"):
            pix = pix.astype(pix.dtype.newbyteorder("<"))
        raw = pix.data.cast("B")
        step = self.rows_per_strip * self.row_bytes
        strips = [zlib.compress(raw[i * step: (i + 1) * step], self.level) for i in range(self.nstrips)]
        head = bytearray(self._head)
        struct.pack_into("<6d", head, self._pos[33922], 0.0, 0.0, 0.0,
                         transform.c + self.tie_delta[0], transform.f + self.tie_delta[1], 0.0)
        offset = len(head)
        offsets = []
        for s in strips:
            offsets.append(offset)
            offset += len(s)
        struct.pack_into(f"<{self.nstrips}I", head, self._pos[273], *offsets)
        struct.pack_into(f"<{self.nstrips}I", head, self._pos[279], *(len(s) for s in strips))
        return b"".join([bytes(head), *strips])
