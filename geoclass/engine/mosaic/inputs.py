"""Mosaic inputs, opened and described once: kind, class metadata, bands and file properties.

Each file of an input is described once with rasterio (class names, colours, colour table, band
dtypes and descriptions, mask flags): everything later stages need, so no stage opens an input
again just to look at it. The shared reader (``open_scene``) then opens the input for reading
(stacks, nodata, masks, located grids); it also names, in one typed line, a first file that
rasterio cannot describe.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

from geoclass.errors import BandError, ConfigError, LabelError
from geoclass.io.class_map import CLASSES_TAG, read_class_metadata
from geoclass.io.reader import Scene, open_scene
from geoclass.progress import Reporter

if TYPE_CHECKING:
    from geoclass.engine.mosaic.config import Kind, Method

__all__ = [
    "FileInfo",
    "MosaicInput",
    "PathLike",
    "Source",
    "check_classes",
    "class_dtype",
    "confidence_sibling",
    "open_source",
]

PathLike = str | os.PathLike[str]

_CLASS_RESAMPLING = ("nearest", "mode")


@dataclass(frozen=True)
class MosaicInput:
    """One mosaic input: a file, or a stack of files read as one scene (bands concatenated).

    Attributes:
        paths: The file, or the files of the stack in band order.
        bands: 1-based bands to take from it (default: all; band 1 of a class map).
    """

    paths: tuple[Path, ...]
    bands: tuple[int, ...] | None = None

    @classmethod
    def of(cls, spec: MosaicInput | PathLike | Sequence[PathLike]) -> MosaicInput:
        """A ``MosaicInput`` from a path, a sequence of paths (a stack), or itself."""
        if isinstance(spec, MosaicInput):
            return spec
        if isinstance(spec, (str, os.PathLike)):
            return cls((Path(spec),))
        paths = tuple(Path(p) for p in spec)
        if not paths:
            raise ConfigError("mosaic: an input stack with no files was given")
        return cls(paths)

    @property
    def label(self) -> str:
        """Name for messages: the file, or ``a.tif+b.tif+...`` for a stack."""
        return "+".join(str(p) for p in self.paths)


def confidence_sibling(path: PathLike) -> Path:
    """Where a class map's separate confidence raster lives: ``X.tif`` -> ``X.confidence.tif``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.confidence{p.suffix}")


@dataclass(frozen=True)
class FileInfo:
    """One input file as rasterio sees it (what the VRT and the class checks need).

    Attributes:
        path: The file.
        count, width, height: Bands and size.
        transform, crs: Its own grid (``crs`` as the file declares it).
        nodatas, dtypes, block_shapes, descriptions: Per band.
        mask_flags: Per band, the ``MaskFlags`` bits summed.
        colormap: Band 1's colour table, or None.
        class_meta: ``(names, colours)`` from the ``GEOCLASS_CLASSES`` tags, or None.
    """

    path: Path
    count: int
    width: int
    height: int
    transform: Affine
    crs: CRS | None
    nodatas: tuple[float | None, ...]
    dtypes: tuple[str, ...]
    block_shapes: tuple[tuple[int, int], ...]
    descriptions: tuple[str | None, ...]
    mask_flags: tuple[int, ...]
    colormap: dict[int, tuple[int, ...]] | None
    class_meta: tuple[list[str], list[tuple[int, int, int]]] | None

    @property
    def has_confidence_band(self) -> bool:
        """A second band described ``confidence`` (``predict --confidence``)."""
        return self.count >= 2 and (self.descriptions[1] or "").strip().lower() == "confidence"


def describe_file(path: Path) -> FileInfo:
    """Describe one file with rasterio (errors are rasterio's: see ``_describe_first``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # checked later, with a reason
        ds = rasterio.open(path)
    with ds:
        try:
            cmap = ds.colormap(1)
        except ValueError:
            cmap = None
        return FileInfo(
            path=path,
            count=ds.count,
            width=ds.width,
            height=ds.height,
            transform=ds.transform,
            crs=ds.crs,
            nodatas=tuple(ds.nodatavals),
            dtypes=tuple(ds.dtypes),
            block_shapes=tuple(tuple(s) for s in ds.block_shapes),  # type: ignore[misc]
            descriptions=tuple(ds.descriptions),
            mask_flags=tuple(sum(int(f) for f in flags) for flags in ds.mask_flag_enums),
            colormap=cmap,
            class_meta=read_class_metadata(ds),
        )


@dataclass(frozen=True)
class Source:
    """One opened input: its reader, its kind, its class metadata and its files described.

    Attributes:
        spec: The input as given.
        scene: The reader of the bands to mosaic (with the confidence band last for
            ``max-confidence``).
        kind: ``classes`` or ``scene``.
        files: The files the scene reads, described (a confidence file beside a map included).
        classes, colors: Class names and colours of a class map with names, else None.
        colormap: A class map's colour table, else None.
    """

    spec: MosaicInput
    scene: Scene
    kind: Literal["classes", "scene"]
    files: tuple[FileInfo, ...]
    classes: list[str] | None = None
    colors: list[tuple[int, int, int]] | None = None
    colormap: dict[int, tuple[int, ...]] | None = None

    @property
    def label(self) -> str:
        """Name for messages."""
        return self.spec.label

    @property
    def class_dtype(self) -> str:
        """dtype of the class band itself (a stack with a float confidence reads as float)."""
        return self.files[0].dtypes[self.scene.bands[0] - 1]

    @property
    def descriptions(self) -> list[str] | None:
        """Band descriptions of a single-file input, if it has any."""
        if len(self.spec.paths) != 1:
            return None
        descs = [self.files[0].descriptions[b - 1] for b in self.scene.bands]
        return [d or "" for d in descs] if any(descs) else None


def _describe_first(path: Path) -> FileInfo:
    """Describe an input's first file; a file rasterio cannot describe is named by the reader.

    Raises:
        InputNotFoundError, RasterOpenError: The reader's one-line error for this file.
    """
    try:
        info = describe_file(path)
    except Exception:
        open_scene(path).close()  # raises the reader's typed error for this file
        raise
    if info.count == 0:
        open_scene(path).close()  # the reader names a file without bands (and its subdatasets)
    return info


def _detect_kind(spec: MosaicInput, info: FileInfo, hint: Kind) -> Literal["classes", "scene"]:
    """``classes`` for a single file with class tags, a colour table, or 8-bit integer classes."""
    if hint != "auto":
        return hint
    if len(spec.paths) == 1 and (
        info.class_meta is not None
        or info.colormap is not None
        or (info.dtypes[0] in ("uint8", "int8") and (info.count == 1 or info.has_confidence_band))
    ):
        return "classes"
    return "scene"


def open_source(
    spec: MosaicInput,
    *,
    kind_hint: Kind,
    method: Method,
    resampling: str | None,
    nodata: float | None,
) -> Source:
    """Open and describe one input.

    Raises:
        InputNotFoundError, RasterOpenError, GeoreferenceError: From the reader.
        ConfigError: A class map with a kernel resampling; max-confidence without a confidence
            (or on a raw scene).
        BandError: A class map input with more than one band selected.
    """
    info = _describe_first(spec.paths[0])
    kind = _detect_kind(spec, info, kind_hint)
    default = "nearest" if kind == "classes" else "bilinear"
    resampling = resampling or default
    if kind == "classes" and resampling not in _CLASS_RESAMPLING:
        raise ConfigError(
            f"{spec.label}: is a class map; class ids can only be resampled with "
            f"{' or '.join(_CLASS_RESAMPLING)}, not {resampling}"
        )
    bands: list[int] | None = list(spec.bands) if spec.bands is not None else None
    paths: list[Path] = list(spec.paths)
    if kind == "classes":
        if bands is None:
            bands = [1]
        if len(bands) != 1:
            raise BandError(f"{spec.label}: a class map input takes one band, got bands {bands}")
        if method == "max-confidence":
            if len(paths) == 1 and info.has_confidence_band:
                bands = [bands[0], 2]
            elif len(paths) == 1 and confidence_sibling(paths[0]).is_file():
                paths.append(confidence_sibling(paths[0]))
                bands = [bands[0], info.count + 1]
            else:
                raise ConfigError(
                    f"{spec.label}: --method max-confidence needs a confidence for every map: "
                    f"a second band described 'confidence' (predict --confidence) or a file "
                    f"{confidence_sibling(paths[0]).name} beside it; neither was found"
                )
    elif method == "max-confidence":
        raise ConfigError(
            f"{spec.label}: --method max-confidence works on class maps with confidence; "
            "for raw scenes use first or last"
        )
    scene = open_scene(paths, bands, resampling=resampling, nodata=nodata)
    files = (info, *(describe_file(p) for p in paths[1:]))  # opened by the reader just now
    meta = info.class_meta if kind == "classes" else None
    return Source(
        spec=spec,
        scene=scene,
        kind=kind,
        files=files,
        classes=meta[0] if meta else None,
        colors=meta[1] if meta else None,
        colormap=info.colormap if kind == "classes" else None,
    )


def check_classes(
    sources: list[Source], reporter: Reporter
) -> tuple[list[str] | None, list[tuple[int, int, int]] | None]:
    """The class names and colours shared by the class maps (the first named map's colours).

    Raises:
        LabelError: Two maps name different classes (the first difference is named).
    """
    named = [s for s in sources if s.classes is not None]
    if not named:
        return None, None
    ref = named[0]
    assert ref.classes is not None
    for s in named[1:]:
        assert s.classes is not None
        if s.classes != ref.classes:
            raise LabelError(_class_difference(ref, s))
        if s.colors != ref.colors:
            reporter.warn(
                f"{s.label}: class colours differ from {ref.label}'s; using {ref.label}'s"
            )
    for s in sources:
        if s.classes is None:
            reporter.warn(
                f"{s.label}: has no class names ({CLASSES_TAG} tag); assuming the classes of "
                f"{ref.label}"
            )
    return list(ref.classes), list(ref.colors or [])


def class_dtype(sources: list[Source]) -> np.dtype:
    """The dtype that holds every map's class ids.

    Raises:
        BandError: The maps' class bands combine to a non-integer dtype.
    """
    dtype = np.result_type(*[np.dtype(s.class_dtype) for s in sources])
    if dtype.kind not in "iu":
        raise BandError(
            f"class maps hold integer class ids, but {sources[0].label} and the others "
            f"combine to dtype {dtype.name}"
        )
    return dtype


def _class_difference(a: Source, b: Source) -> str:
    ca, cb = a.classes or [], b.classes or []
    head = (
        f"class maps disagree on their classes: {a.label} has {len(ca)} {ca}, "
        f"{b.label} has {len(cb)} {cb}"
    )
    for i, (x, y) in enumerate(zip(ca, cb)):
        if x != y:
            return f"{head}; class id {i} is {x!r} in {a.label} but {y!r} in {b.label}"
    longer, extra = (a, ca[len(cb) :]) if len(ca) > len(cb) else (b, cb[len(ca) :])
    return f"{head}; only {longer.label} has {extra}"
