"""The VRT mosaic: an XML file whose sources are the input files placed on the output grid.

A VRT costs nothing to write and reads its inputs on demand, but it cannot reproject: every file
must already be on the output grid (same CRS and pixel size, a whole number of pixels away).

The XML is written here rather than by GDAL. GDAL's VRT *builder* (``gdalbuildvrt`` /
``gdal.BuildVRT``) is only in the ``osgeo`` bindings, which are not installed and cannot be built
against rasterio's bundled GDAL; rasterio's public API has only ``WarpedVRT``. The builder would
not do the job anyway: it cannot make one input of several band files (our stacks) while
mosaicking inputs side by side, nor carry a band selection per input or per-file nodata. GDAL's
VRT *driver* is reachable through rasterio (``rasterio.open(..., "w", driver="VRT")``, sources
added as XML in the ``new_vrt_sources`` metadata domain) and was tried: the sources stay
hand-written XML, GDAL rewrites them on close (it drops ``SourceProperties``, and written under
``/vsimem`` it dropped the sources' ``NODATA``), and the file would be written by GDAL when the
dataset closes rather than by one ``write_bytes`` under ``atomic_output`` (which the full-disk
tests drive); only the dataset header (grid, CRS, nodata, descriptions, colour table) would move
to GDAL. Writing the whole XML keeps the output exact and the write in our hands.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags

from geoclass.engine.mosaic.config import Method, OutputBands
from geoclass.engine.mosaic.grid import Grid, on_grid, whole
from geoclass.engine.mosaic.inputs import FileInfo, Source
from geoclass.errors import GeoreferenceError
from geoclass.io.class_map import CLASS_BAND_DESCRIPTION, CLASSES_TAG
from geoclass.io.outputs import atomic_output

__all__ = ["vrt_refusal", "write_vrt"]

_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "uint64": "UInt64",
    "int64": "Int64",
    "float32": "Float32",
    "float64": "Float64",
}
_PER_DATASET_MASK = int(MaskFlags.per_dataset) | int(MaskFlags.alpha)


def vrt_refusal(label: str, crs: CRS | None, transform: Affine, grid: Grid) -> str:
    """The message refusing a VRT for an input (or file) not on the mosaic grid."""
    g = grid.transform
    where = crs.to_string() if crs is not None else "no CRS"
    grid_where = grid.crs.to_string() if grid.crs is not None else "no CRS"
    return (
        f"--vrt cannot reproject or resample: {label} ({where}, {abs(transform.a):g} x "
        f"{abs(transform.e):g} pixels) is not on the mosaic grid ({grid_where}, "
        f"{g.a:g} x {-g.e:g} pixels, origin {g.c:g}, {g.f:g}); write a GeoTIFF mosaic "
        "instead (without --vrt), which reprojects on the fly"
    )


def _band_files(source: Source, count: int, grid: Grid) -> list[tuple[FileInfo, int]]:
    """For each output band, the file and its local band that feed it from ``source``.

    Raises:
        GeoreferenceError: A file is not on the output grid.
    """
    t = grid.transform
    lookup = [(f, lb) for f in source.files for lb in range(1, f.count + 1)]
    bands = [lookup[b - 1] for b in source.scene.bands[:count]]
    for f, _ in bands:
        ft = f.transform
        if not on_grid(ft, f.crs, grid.crs, t.a, -t.e) or any(
            whole(v) is None for v in ((ft.c - t.c) / t.a, (t.f - ft.f) / -t.e)
        ):
            raise GeoreferenceError(vrt_refusal(str(f.path), f.crs, ft, grid))
    return bands


def _color_table(band: ET.Element, bands: OutputBands) -> None:
    table: dict[int, tuple[int, ...]] | None = None
    if bands.kind == "classes" and bands.colors:
        table = {k: (*c, 255) for k, c in enumerate(bands.colors)}
        if bands.dtype.name == "uint8":
            table.setdefault(int(bands.nodata), (0, 0, 0, 0))
    elif bands.kind == "classes" and bands.colormap:
        table = bands.colormap
    if table:
        ET.SubElement(band, "ColorInterp").text = "Palette"
        ct = ET.SubElement(band, "ColorTable")
        for k in range(max(table) + 1):
            c = table.get(k, (0, 0, 0, 0))
            ET.SubElement(ct, "Entry", c1=str(c[0]), c2=str(c[1]), c3=str(c[2]), c4=str(c[3]))


def _source(
    band: ET.Element, f: FileInfo, lb: int, grid: Grid, base: Path, nodata: float | None
) -> None:
    """A ``ComplexSource``: band ``lb`` of file ``f`` at its place on the grid."""
    t = grid.transform
    src = ET.SubElement(band, "ComplexSource")
    abspath = f.path.resolve()
    try:
        rel = os.path.relpath(abspath, base)
        ET.SubElement(src, "SourceFilename", relativeToVRT="1").text = rel
    except ValueError:  # another drive
        ET.SubElement(src, "SourceFilename", relativeToVRT="0").text = str(abspath)
    ET.SubElement(src, "SourceBand").text = str(lb)
    by, bx = f.block_shapes[lb - 1]
    ET.SubElement(
        src,
        "SourceProperties",
        RasterXSize=str(f.width),
        RasterYSize=str(f.height),
        DataType=_GDAL_TYPES[f.dtypes[lb - 1]],
        BlockXSize=str(bx),
        BlockYSize=str(by),
    )
    col, row = whole((f.transform.c - t.c) / t.a), whole((t.f - f.transform.f) / -t.e)
    size = {"xSize": str(f.width), "ySize": str(f.height)}
    ET.SubElement(src, "SrcRect", xOff="0", yOff="0", **size)
    ET.SubElement(src, "DstRect", xOff=str(col), yOff=str(row), **size)
    src_nodata = nodata if nodata is not None else f.nodatas[lb - 1]
    if src_nodata is not None:
        ET.SubElement(src, "NODATA").text = (
            "nan" if math.isnan(src_nodata) else repr(float(src_nodata))
        )
    elif f.mask_flags[lb - 1] & _PER_DATASET_MASK:
        ET.SubElement(src, "UseMaskBand").text = "true"


def write_vrt(
    out: Path,
    grid: Grid,
    sources: Sequence[Source],
    bands: OutputBands,
    *,
    method: Method,
    nodata: float | None,
) -> None:
    """Write a VRT whose sources are the input files placed on the output grid.

    Args:
        out: The target (replaced atomically).
        grid: The output grid (every input on it).
        sources: The inputs, in the order given.
        bands: What the bands hold.
        method: ``first`` or ``last`` (GDAL paints later sources over earlier ones).
        nodata: The nodata value forced on every input, or None to use each file's.

    Raises:
        GeoreferenceError: A file of an input is not on the grid.
        DiskFullError, OutputError: From ``atomic_output``.
    """
    root = ET.Element("VRTDataset", rasterXSize=str(grid.width), rasterYSize=str(grid.height))
    if grid.crs is not None:
        ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = grid.crs.to_wkt()
    t = grid.transform
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e)
    )
    if bands.names is not None:
        md = ET.SubElement(root, "Metadata")
        ET.SubElement(md, "MDI", key=CLASSES_TAG).text = json.dumps(bands.names)
    placements = [_band_files(s, bands.count, grid) for s in sources]
    # GDAL paints later sources over earlier ones where they are valid.
    order = list(range(len(sources)))
    if method == "first":
        order.reverse()
    base = out.parent.resolve()
    for i in range(bands.count):
        band = ET.SubElement(
            root, "VRTRasterBand", dataType=_GDAL_TYPES[bands.dtype.name], band=str(i + 1)
        )
        if bands.kind == "classes":
            ET.SubElement(band, "Description").text = CLASS_BAND_DESCRIPTION
        elif bands.descriptions and bands.descriptions[i]:
            ET.SubElement(band, "Description").text = bands.descriptions[i]
        ET.SubElement(band, "NoDataValue").text = (
            "nan" if math.isnan(bands.nodata) else repr(bands.nodata)
        )
        _color_table(band, bands)
        for si in order:
            f, lb = placements[si][i]
            _source(band, f, lb, grid, base, nodata)
    ET.indent(root)
    text = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    with atomic_output(out, needed_bytes=len(text)) as tmp:
        tmp.write_bytes(text)
