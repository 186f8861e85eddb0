"""The shared windowed scene reader.

Every command streams scenes through ``open_scene``: one file, or a stack of files (bands in the
order given) aligned on the grid of the finest-resolution member. Reads are always windowed, so
memory is bounded by the window size and never by the scene size.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geoclass.errors import (
    BandError,
    ConfigError,
    GeoreferenceError,
    InputNotFoundError,
    RasterOpenError,
)
from geoclass.io.extent import boxes_overlap, format_bounds, ordered_bounds
from geoclass.io.regrid import GridSpec, OnGrid, grid_offset, open_on_grid
from geoclass.io.stats import BandStatistics, StatsAccumulator
from geoclass.io.windows import (
    GridWindow,
    iter_window_grid,
    num_windows,
    window_bounds,
    window_grid,
    window_transform,
)

__all__ = ["BandStatistics", "Scene", "open_scene"]

PathLike = str | os.PathLike[str]

_MASK_FLAGS_NEEDING_READ = MaskFlags.per_dataset | MaskFlags.alpha
_OPEN_LOCK = threading.Lock()
_VECTOR_SUFFIXES = {".shp", ".gpkg", ".geojson", ".json", ".kml", ".fgb", ".gml", ".csv"}


def _is_remote(path: str) -> bool:
    return path.startswith("/vsi") or "://" in path


def _short_reason(exc: BaseException, path: str) -> str:
    """GDAL's message on one short line, without repeating the path."""
    text = " ".join(str(exc).split())
    cause = exc.__cause__ or exc.__context__
    if "previous exception" in text and cause is not None:
        text = " ".join(str(cause).split())  # rasterio keeps GDAL's own message here
    name = Path(path).name
    for p in (f"'{path}'", f'"{path}"', path, f"{name},", f"{name}:"):
        text = text.replace(p, "").strip()
    text = text.lstrip(":").strip()
    if len(text) > 160:
        text = text[:157] + "..."
    return text or type(exc).__name__


def _crs_str(crs: CRS | None) -> str:
    if crs is None:
        return "no CRS"
    return str(crs.to_string())


def _open_dataset(path: str) -> rasterio.io.DatasetReader:
    """Open a raster, turning every failure into a typed one-line error naming the file."""
    if not _is_remote(path):
        p = Path(path)
        if not p.exists():
            raise InputNotFoundError(f"{path}: file not found (expected a raster file)")
        if p.is_dir():
            raise RasterOpenError(f"{path}: is a directory, expected a raster file")
    try:
        # catch_warnings swaps global state; the lock keeps our threads from interleaving it.
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except RasterioError as exc:
        reason = _short_reason(exc, path)
        if Path(path).suffix.lower() in _VECTOR_SUFFIXES:
            reason = "it looks like a vector file"
        raise RasterOpenError(f"{path}: not a raster GDAL can read ({reason})") from exc
    except OSError as exc:
        raise RasterOpenError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if ds.count == 0:
        subs = ds.subdatasets
        ds.close()
        hint = f"; it has {len(subs)} subdatasets, open one of them" if subs else ""
        raise RasterOpenError(f"{path}: has no raster bands{hint}")
    return ds


@dataclass(frozen=True)
class _Member:
    """What the reader needs to know about one file of a scene (small and picklable)."""

    path: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    nodatas: tuple[float | None, ...]
    mask_flags: tuple[int, ...]  # per band, MaskFlags bits
    descriptions: tuple[str | None, ...]
    crs: CRS | None
    transform: Affine
    # Direct members are read with windows shifted by (col_shift, row_shift); others are warped.
    warp: bool = False
    col_shift: int = 0
    row_shift: int = 0
    # Located by ground control points or RPCs instead of a geotransform (then ``transform`` is
    # the identity and ``crs`` None): ``(gcps, gcp_crs)``, and whether RPCs are present.
    gcps: tuple[tuple[Any, ...], CRS | None] | None = None
    rpcs: bool = False

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return window_bounds(self.transform, Window(0, 0, self.width, self.height))


def _describe(path: str, ds: rasterio.io.DatasetReader) -> _Member:
    gcps, gcp_crs = ds.gcps
    ungridded = ds.transform.is_identity and bool(gcps or ds.rpcs)
    # A CRS with no geotransform (nor GCPs) places nothing: read it as a plain pixel grid rather
    # than write maps with that CRS on a made-up identity transform.
    grid_crs = None if ds.transform.is_identity else ds.crs
    return _Member(
        path=path,
        width=ds.width,
        height=ds.height,
        count=ds.count,
        dtypes=tuple(ds.dtypes),
        nodatas=tuple(ds.nodatavals),
        mask_flags=tuple(int(sum(int(f) for f in flags)) for flags in ds.mask_flag_enums),
        descriptions=tuple(ds.descriptions),
        crs=grid_crs,
        transform=ds.transform,
        gcps=(tuple(gcps), gcp_crs) if ungridded and gcps else None,
        rpcs=ungridded and bool(ds.rpcs),
    )


def _pixel_area_in(member: _Member, crs: CRS | None) -> float:
    """Approximate pixel area of ``member`` in the units of ``crs`` (for picking the finest)."""
    if crs is None or member.crs is None or member.crs == crs:
        t = member.transform
        return abs(t.a * t.e - t.b * t.d)
    try:
        left, bottom, right, top = transform_bounds(member.crs, crs, *member.bounds, densify_pts=21)
    except RasterioError:
        return math.inf
    return abs((right - left) * (top - bottom)) / (member.width * member.height)


def _grid(member: _Member) -> GridSpec:
    return GridSpec(member.crs, member.transform, member.width, member.height)


def _is_nodata(arr: np.ndarray, nodata: float) -> np.ndarray:
    if isinstance(nodata, float) and math.isnan(nodata):
        return np.isnan(arr)
    return arr == nodata


def _representable(value: float, dtype: np.dtype) -> bool:
    if math.isnan(value):
        return dtype.kind == "f"
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(value).is_integer() and info.min <= value <= info.max
    return True


def _intersect(window: Window, width: int, height: int) -> tuple[int, int, int, int] | None:
    """``(col0, row0, col1, row1)`` of the part of a window inside the raster, or None."""
    c0 = max(0, int(window.col_off))
    r0 = max(0, int(window.row_off))
    c1 = min(width, int(window.col_off) + int(window.width))
    r1 = min(height, int(window.row_off) + int(window.height))
    if c0 >= c1 or r0 >= r1:
        return None
    return c0, r0, c1, r1


def _as_int_window(window: Window) -> Window:
    vals = (window.col_off, window.row_off, window.width, window.height)
    ints = tuple(round(v) for v in vals)
    if any(abs(v - i) > 1e-6 for v, i in zip(vals, ints, strict=True)):
        raise ConfigError(f"window {window!r}: offsets and sizes must be whole pixels")
    if ints[2] < 0 or ints[3] < 0:
        raise ConfigError(f"window {window!r}: width and height must be >= 0")
    return Window(*ints)


class _Handles:
    """The open datasets of one thread (and one process, and one generation of ``close``)."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.pid = os.getpid()
        self.datasets: dict[int, OnGrid] = {}
        self.sources: list[Any] = []

    def close(self) -> None:
        for ds in list(self.datasets.values()) + self.sources:
            try:
                ds.close()
            except Exception:
                pass
        self.datasets.clear()
        self.sources.clear()


class Scene:
    """A raster scene (one file or a stack of files) read window by window.

    Attributes:
        paths: The files, in stacking order.
        bands: Selected bands, 1-based indices into the stacked band list.
        width: Width of the reference grid in pixels.
        height: Height of the reference grid in pixels.
        count: Number of selected bands.
        dtype: Numpy dtype name of what ``read`` returns (common dtype of the selection).
        crs: CRS of the reference grid, or None for a file without one.
        transform: Affine transform of the reference grid.
        res: ``(x, y)`` pixel size of the reference grid.
        bounds: Bounds of the reference grid.
        nodata: The sources' nodata value (the first selected band's that has one), or None.
        band_names: One name per selected band, from band descriptions or file names.
        gcps: ``(ground control points, their CRS)`` for a scene located by GCPs instead of a
            geotransform (opened with ``keep_gcps``), else None.

    Thread-safe: each thread gets its own dataset handles. Pickles as its arguments plus a little
    metadata and reopens files lazily in the new process (e.g. DataLoader workers).
    """

    paths: tuple[Path, ...]
    bands: tuple[int, ...]
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS | None
    transform: Affine
    res: tuple[float, float]
    bounds: BoundingBox
    nodata: float | None
    band_names: tuple[str, ...]
    gcps: tuple[tuple[Any, ...], CRS | None] | None

    def __init__(
        self,
        members: Sequence[_Member],
        bands: Sequence[int],
        ref_index: int,
        resampling: str,
        require_crs: bool,
        nodata_override: float | None = None,
    ) -> None:
        self._members = tuple(members)
        self._ref_index = ref_index
        self._resampling = resampling
        self._require_crs = require_crs
        self._nodata_override = nodata_override
        self._setup(bands)

    # -- construction -------------------------------------------------------------------------

    def _setup(self, bands: Sequence[int]) -> None:
        ref = self._members[self._ref_index]
        self.paths = tuple(Path(m.path) for m in self._members)
        self.bands = tuple(int(b) for b in bands)
        self.width, self.height = ref.width, ref.height
        self.count = len(self.bands)
        self.crs = ref.crs
        self.transform = ref.transform
        self.gcps = ref.gcps
        self.res = (
            float(math.hypot(ref.transform.a, ref.transform.d)),
            float(math.hypot(ref.transform.b, ref.transform.e)),
        )
        self.bounds = BoundingBox(
            *window_bounds(ref.transform, Window(0, 0, ref.width, ref.height))
        )

        # Global band b -> (member index, local 1-based band).
        lookup: list[tuple[int, int]] = []
        for mi, m in enumerate(self._members):
            lookup.extend((mi, lb) for lb in range(1, m.count + 1))
        sel = [lookup[b - 1] for b in self.bands]
        dtypes = [np.dtype(self._members[mi].dtypes[lb - 1]) for mi, lb in sel]
        self._np_dtype = np.result_type(*dtypes)
        self.dtype = self._np_dtype.name

        nodatas = [self._members[mi].nodatas[lb - 1] for mi, lb in sel]
        first = next((v for v in nodatas if v is not None), None)
        if first is not None and not _representable(first, self._np_dtype):
            first = None
        self.nodata = None if first is None else float(first)

        names = []
        for mi, lb in sel:
            m = self._members[mi]
            desc = m.descriptions[lb - 1]
            stem = Path(m.path).stem if not _is_remote(m.path) else m.path.rsplit("/", 1)[-1]
            names.append(desc if desc else (stem if m.count == 1 else f"{stem}_b{lb}"))
        self.band_names = tuple(names)

        # Per member: selected local bands (unique, sorted) and where each selected band goes.
        plan: dict[int, list[tuple[int, int]]] = {}
        for out_i, (mi, lb) in enumerate(sel):
            plan.setdefault(mi, []).append((lb, out_i))
        self._plan = plan
        self._may_be_invalid = any(
            self._members[mi].warp
            or (self._members[mi].col_shift, self._members[mi].row_shift) != (0, 0)
            or (self._members[mi].width, self._members[mi].height) != (self.width, self.height)
            or self._members[mi].nodatas[lb - 1] is not None
            or self._members[mi].mask_flags[lb - 1] & int(_MASK_FLAGS_NEEDING_READ)
            or np.dtype(self._members[mi].dtypes[lb - 1]).kind in "fc"
            for mi, lb in sel
        )

        self._lock = threading.Lock()
        self._local = threading.local()
        self._generation = 0
        self._all_handles: list[_Handles] = []

    @property
    def resampling(self) -> str:
        """Resampling used to align stack members onto the reference grid."""
        return self._resampling

    @property
    def name(self) -> str:
        """Short name for messages: the file, or the first file of a stack and how many more."""
        if len(self._members) == 1:
            return self._members[0].path
        return f"{self._members[0].path} (+{len(self._members) - 1} stacked files)"

    def __repr__(self) -> str:
        return (
            f"Scene({self.name!r}, {self.width}x{self.height}, bands={list(self.bands)}, "
            f"dtype={self.dtype}, crs={_crs_str(self.crs)})"
        )

    # -- pickling and handles -----------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {
            "paths": tuple(m.path for m in self._members),
            "bands": self.bands,
            "resampling": self._resampling,
            "require_crs": self._require_crs,
            "nodata": self._nodata_override,
            "members": self._members,
            "ref_index": self._ref_index,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._members = tuple(state["members"])
        self._ref_index = state["ref_index"]
        self._resampling = state["resampling"]
        self._require_crs = state["require_crs"]
        self._nodata_override = state.get("nodata")
        self._setup(state["bands"])

    def _handles(self) -> _Handles:
        h: _Handles | None = getattr(self._local, "handles", None)
        # A forked child inherits the parent's handles; GDAL handles must not be shared.
        if h is None or h.generation != self._generation or h.pid != os.getpid():
            h = _Handles(self._generation)
            self._local.handles = h
            with self._lock:
                self._all_handles.append(h)
        return h

    def _dataset(self, mi: int) -> OnGrid:
        h = self._handles()
        on = h.datasets.get(mi)
        if on is None:
            m = self._members[mi]
            src = _open_dataset(m.path)
            h.sources.append(src)
            ref = self._members[self._ref_index]
            try:
                on = open_on_grid(
                    src,
                    _grid(ref),
                    resampling=Resampling[self._resampling],
                    src_crs=m.crs,
                    src_transform=m.transform,
                    src_nodata=self._nodata_override,
                    warp=m.warp,
                )
            except RasterioError as exc:
                raise GeoreferenceError(
                    f"{m.path}: cannot be resampled onto the grid of "
                    f"{ref.path} ({_short_reason(exc, m.path)})"
                ) from exc
            h.datasets[mi] = on
        return on

    def close(self) -> None:
        """Close every handle of every thread. A later read reopens files lazily."""
        with self._lock:
            handles, self._all_handles = self._all_handles, []
            self._generation += 1
        for h in handles:
            if h.pid == os.getpid():
                h.close()

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- reading ------------------------------------------------------------------------------

    def _fill_value(self, fill: float | None) -> float:
        value = fill if fill is not None else (self.nodata if self.nodata is not None else 0)
        if not _representable(float(value), self._np_dtype):
            raise ConfigError(
                f"{self.name}: fill value {value} does not fit the scene's dtype {self.dtype}"
            )
        return value

    def _read_member(
        self, mi: int, box: tuple[int, int, int, int], want_mask: bool
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Selected bands of one member over ``box`` (scene pixels).

        Returns:
            ``(data, covered, valid)``: data ``(k, h, w)`` in the member's dtype; ``covered``, a
            ``(h, w)`` bool of the pixels the member has data for (None: all); ``valid``,
            ``covered`` further reduced by nodata, NaN and masks when ``want_mask`` (None: all).
        """
        m = self._members[mi]
        locals_ = sorted({lb for lb, _ in self._plan[mi]})
        c0, r0, c1, r1 = box
        h, w = r1 - r0, c1 - c0
        on = self._dataset(mi)
        try:
            data, covered = on.read(locals_, Window(c0, r0, w, h))
            valid = covered
            if want_mask and on.offset is not None:
                mwin = (c0 + on.offset[0], r0 + on.offset[1], w, h)
                valid = self._direct_mask(on.dataset, m, locals_, data, covered, mwin)
        except RasterioError as exc:
            raise RasterOpenError(
                f"{m.path}: read failed at window col={c0} row={r0} {w}x{h} "
                f"({_short_reason(exc, m.path)})"
            ) from exc
        return data, covered, valid

    def _direct_mask(
        self,
        ds: Any,
        m: _Member,
        locals_: list[int],
        data: np.ndarray,
        valid: np.ndarray | None,
        mwin: tuple[int, int, int, int],
    ) -> np.ndarray | None:
        """Combine nodata values, NaNs and GDAL mask bands of a directly read member."""
        mc0, mr0, w, h = mwin
        dataset_mask_done = False
        for k, lb in enumerate(locals_):
            bad: np.ndarray | None = None
            nd = m.nodatas[lb - 1]
            if nd is not None:
                bad = _is_nodata(data[k], nd)
            if data.dtype.kind == "f":
                nan = np.isnan(data[k])
                bad = nan if bad is None else bad | nan
            flags = m.mask_flags[lb - 1]
            needs_read = flags & int(_MASK_FLAGS_NEEDING_READ)
            if needs_read and not (flags & int(MaskFlags.per_dataset) and dataset_mask_done):
                inner = _intersect(Window(mc0, mr0, w, h), m.width, m.height)
                if inner is not None:
                    ic0, ir0, ic1, ir1 = inner
                    mk = ds.read_masks(lb, window=Window(ic0, ir0, ic1 - ic0, ir1 - ir0)) == 0
                    full = np.zeros((h, w), bool)
                    full[ir0 - mr0 : ir1 - mr0, ic0 - mc0 : ic1 - mc0] = mk
                    bad = full if bad is None else bad | full
                dataset_mask_done = dataset_mask_done or bool(flags & int(MaskFlags.per_dataset))
            if bad is not None and bad.any():
                valid = ~bad if valid is None else valid & ~bad
        return valid

    def _read(
        self, window: Window, fill: float | None, want_mask: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        window = _as_int_window(window)
        h, w = int(window.height), int(window.width)
        col_off, row_off = int(window.col_off), int(window.row_off)
        fill_value = self._fill_value(fill)
        box = _intersect(window, self.width, self.height)
        if box is None:
            out = np.full((self.count, h, w), fill_value, dtype=self._np_dtype)
            return out, (np.zeros((h, w), bool) if want_mask else None)

        c0, r0, c1, r1 = box
        inside = box == (col_off, row_off, col_off + w, row_off + h)
        ih, iw = r1 - r0, c1 - c0
        inner: np.ndarray | None = None
        inner_valid: np.ndarray | None = None
        for mi, targets in self._plan.items():
            data, covered, mvalid = self._read_member(mi, box, want_mask)
            locals_ = sorted({lb for lb, _ in targets})
            if (
                len(self._plan) == 1
                and data.dtype == self._np_dtype
                and [lb for lb, _ in targets] == locals_
            ):
                inner = data  # one member read in the requested order: no copy
            else:
                if inner is None:
                    inner = np.empty((self.count, ih, iw), dtype=self._np_dtype)
                for lb, out_i in targets:
                    inner[out_i] = data[locals_.index(lb)]
            m = self._members[mi]
            self._remap_nodata(inner, targets, m)
            if covered is not None:
                # Pixels a member does not cover read as the scene's nodata (or 0).
                gap = self.nodata if self.nodata is not None else 0
                for _, out_i in targets:
                    inner[out_i][~covered] = gap
            if mvalid is not None:
                inner_valid = mvalid if inner_valid is None else inner_valid & mvalid

        assert inner is not None
        if inside:
            out = inner
        else:
            out = np.full((self.count, h, w), fill_value, dtype=self._np_dtype)
            sl = np.s_[r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off]
            out[(slice(None), *sl)] = inner
        valid: np.ndarray | None = None
        if want_mask:
            if inside:
                valid = inner_valid if inner_valid is not None else np.ones((h, w), bool)
            else:
                valid = np.zeros((h, w), bool)
                valid[sl] = True if inner_valid is None else inner_valid
        return out, valid

    def _remap_nodata(self, inner: np.ndarray, targets: list[tuple[int, int]], m: _Member) -> None:
        """Give bands whose own nodata differs from the scene's the scene's nodata value."""
        if self.nodata is None:
            return
        for lb, out_i in targets:
            nd = m.nodatas[lb - 1]
            if nd is not None and not (
                nd == self.nodata or (math.isnan(nd) and math.isnan(self.nodata))
            ):
                band = inner[out_i]
                band[_is_nodata(band, nd)] = self.nodata

    def read(self, window: Window, *, fill: float | None = None) -> np.ndarray:
        """Read the selected bands over a window.

        Args:
            window: Pixel window on the scene grid (whole pixels); may extend past the scene.
            fill: Value for the parts of the window outside the scene; default the scene's
                nodata, or 0 without one.

        Returns:
            Array ``(count, window.height, window.width)`` of dtype ``self.dtype``.
        """
        return self._read(window, fill, want_mask=False)[0]

    def read_valid(self, window: Window) -> np.ndarray:
        """``(h, w)`` bool: True where a pixel is inside the scene and valid in every selected band.

        Invalid means nodata, NaN, masked by an internal mask / alpha band, or outside the
        footprint of a stack member.
        """
        valid = self._read(window, None, want_mask=True)[1]
        assert valid is not None
        return valid

    def read_masked(
        self, window: Window, *, fill: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``read`` and ``read_valid`` of the same window in one pass."""
        data, valid = self._read(window, fill, want_mask=True)
        assert valid is not None
        return data, valid

    # -- grid ---------------------------------------------------------------------------------

    def windows(
        self, size: int, stride: int | None = None, halo: int = 0, *, skip_empty: bool = False
    ) -> Iterator[GridWindow]:
        """Lazily iterate the window grid of this scene (see ``window_grid``).

        Args:
            size: Window side in pixels.
            stride: Step between windows (default ``size``).
            halo: Context added around each read window.
            skip_empty: Drop windows whose core holds no valid pixel (this reads the core's
                masks, which the GDAL block cache makes cheap to read again).
        """
        for gw in iter_window_grid(self.width, self.height, size, stride, halo):
            if skip_empty and self._may_be_invalid and not self.read_valid(gw.core).any():
                continue
            yield gw

    def num_windows(self, size: int, stride: int | None = None) -> int:
        """Number of windows ``windows`` yields without ``skip_empty``."""
        return num_windows(self.width, self.height, size, stride)

    def window_transform(self, window: Window) -> Affine:
        """Affine transform of a window on this scene's grid."""
        return window_transform(self.transform, window)

    # -- statistics ---------------------------------------------------------------------------

    def statistics(
        self,
        *,
        max_windows: int | None = 64,
        window_size: int = 512,
        percentiles: Sequence[float] = (2.0, 98.0),
        seed: int = 0,
    ) -> BandStatistics:
        """Per-band statistics of the valid pixels, streamed window by window.

        Args:
            max_windows: Use a random sample of this many non-empty windows; None reads every
                window (exact statistics of the whole scene).
            window_size: Side of the windows read.
            percentiles: Percentiles (0-100) to estimate; exact for 8/16-bit integer data.
            seed: Seed of the window sample.

        Raises:
            RasterOpenError: No valid pixel was found.
        """
        if max_windows is not None and max_windows < 1:
            raise ConfigError(f"statistics: max_windows must be >= 1 or None, got {max_windows}")
        grid = window_grid(self.width, self.height, window_size)
        order: Sequence[int] = range(len(grid))
        budget = len(grid)
        if max_windows is not None and max_windows < len(grid):
            order = np.random.default_rng(seed).permutation(len(grid)).tolist()
            # Sampled windows may be empty (nodata borders); look a bit further, but not forever.
            budget = min(len(grid), 8 * max_windows)
        acc = StatsAccumulator(
            self.count,
            self._np_dtype,
            percentiles,
            expected_windows=min(len(grid), max_windows or len(grid)),
            seed=seed,
        )
        used = 0
        for tried, gi in enumerate(order):
            if tried >= budget or (max_windows is not None and used >= max_windows):
                break
            data, valid = self.read_masked(grid[gi].core)
            if not valid.any():
                continue
            acc.update(data[:, valid])
            used += 1
        if acc.n == 0:
            raise RasterOpenError(
                f"{self.name}: no valid (non-nodata) pixel in the {min(budget, len(grid))} "
                "windows read for statistics"
            )
        return acc.result()


def _normalise_paths(paths: PathLike | Sequence[PathLike]) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        items = [paths]
    else:
        items = list(paths)
    if not items:
        raise ConfigError("open_scene: no input files given")
    out = []
    for p in items:
        if not isinstance(p, (str, os.PathLike)):
            raise ConfigError(f"open_scene: expected a path, got {type(p).__name__}: {p!r}")
        out.append(os.fspath(p))
    return out


def open_scene(
    paths: PathLike | Sequence[PathLike],
    bands: Sequence[int] | None = None,
    *,
    resampling: str = "bilinear",
    require_crs: bool = False,
    nodata: float | None = None,
    keep_gcps: bool = False,
) -> Scene:
    """Open one raster, or stack several, as a ``Scene``.

    Args:
        paths: One file, or files to stack in order (their bands concatenate). Anything GDAL
            reads: GeoTIFF/COG, VRT, JP2, ...
        bands: 1-based band indices into the stacked band list; default all.
        resampling: How members not on the reference grid are resampled (a rasterio
            ``Resampling`` name). The reference is the finest-resolution file (ties: the first).
        require_crs: Refuse files without a CRS.
        nodata: Treat this value as nodata in every band, overriding what the files declare
            (for sources with fill but no declared nodata).
        keep_gcps: Accept a scene located by ground control points instead of a geotransform
            (its pixel grid is read as it is; ``Scene.gcps`` carries the points to the outputs).
            Otherwise such a scene, and any scene located by RPCs, is refused: labels, windows
            and mosaics need a regular grid.

    Raises:
        InputNotFoundError: A path does not exist.
        RasterOpenError: A file is not a raster GDAL can read.
        GeoreferenceError: Missing/mixed CRS, or a member that does not overlap the reference.
        BandError: A band index out of range.
        ConfigError: Unknown resampling or no paths.
    """
    files = _normalise_paths(paths)
    if resampling not in Resampling.__members__:
        raise ConfigError(
            f"unknown resampling {resampling!r}; expected one of "
            + ", ".join(sorted(Resampling.__members__))
        )
    members: list[_Member] = []
    for f in files:
        ds = _open_dataset(f)
        try:
            m = _describe(f, ds)
        finally:
            ds.close()
        if nodata is not None:
            m = _replace(m, nodatas=(float(nodata),) * m.count)
        members.append(m)

    for m in members:
        _check_located(m, members[0], keep_gcps)
        if m.crs is None and require_crs:
            raise GeoreferenceError(
                f"{m.path}: has no CRS (coordinate reference system), but a georeferenced "
                "raster is required"
            )
    with_crs = [m for m in members if m.crs is not None]
    without = [m for m in members if m.crs is None]
    if with_crs and without:
        raise GeoreferenceError(
            f"{without[0].path}: has no CRS, but {with_crs[0].path} has "
            f"{_crs_str(with_crs[0].crs)}; stacked files must all be georeferenced"
        )

    first_crs = members[0].crs
    areas = [_pixel_area_in(m, first_crs) for m in members]
    ref_index = min(range(len(members)), key=lambda i: (areas[i], i))
    ref = members[ref_index]
    ref_bounds = ordered_bounds(ref.bounds)

    resolved: list[_Member] = []
    for m in members:
        shift = grid_offset(m.crs, m.transform, _grid(ref))
        if shift is None and m.crs is None:
            raise GeoreferenceError(
                f"{m.path}: is not on the pixel grid of {ref.path} and neither has a CRS, "
                "so it cannot be resampled onto it"
            )
        if m.crs is None or m.crs == ref.crs:
            mb = ordered_bounds(m.bounds)
        else:
            try:
                mb = transform_bounds(m.crs, ref.crs, *m.bounds, densify_pts=21)
            except RasterioError as exc:
                raise GeoreferenceError(
                    f"{m.path}: bounds cannot be transformed from {_crs_str(m.crs)} to "
                    f"{_crs_str(ref.crs)} ({_short_reason(exc, m.path)})"
                ) from exc
        if m is not ref and not boxes_overlap(mb, ref_bounds):
            raise GeoreferenceError(
                f"{m.path} (bounds {format_bounds(mb)}) does not overlap {ref.path} "
                f"(bounds {format_bounds(ref_bounds)}); stacked files must cover the same area"
            )
        if shift is None:
            resolved.append(_replace(m, warp=True))
        else:
            resolved.append(_replace(m, col_shift=shift[0], row_shift=shift[1]))

    total = sum(m.count for m in resolved)
    if bands is None:
        sel = list(range(1, total + 1))
    else:
        if isinstance(bands, (str, bytes)) or not isinstance(bands, Sequence):
            raise BandError(f"bands must be a list of 1-based integers, got {bands!r}")
        sel = list(bands)
        if not sel:
            raise BandError(f"{_scene_label(files)}: an empty band selection was given")
    what = "scene" if len(files) == 1 else "stack"
    for b in sel:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
            raise BandError(f"{_scene_label(files)}: band {b!r} is not an integer band index")
        if not 1 <= b <= total:
            hint = " (band indices are 1-based)" if b == 0 else ""
            raise BandError(
                f"{_scene_label(files)}: band {b} requested but the {what} has {total} "
                f"band{'s' if total != 1 else ''}{hint}"
            )
    scene = Scene(resolved, sel, ref_index, resampling, require_crs, nodata)
    if nodata is not None and scene.nodata is None:
        raise ConfigError(
            f"{_scene_label(files)}: nodata {nodata} does not fit the scene's dtype {scene.dtype}"
        )
    return scene


def _check_located(m: _Member, first: _Member, keep_gcps: bool) -> None:
    """Refuse a member located by RPCs or (unless kept) GCPs, or with other GCPs than the first."""
    if m.rpcs or (m.gcps is not None and not keep_gcps):
        how = "rational polynomial coefficients (RPCs)" if m.rpcs else f"{len(m.gcps[0])} ground control points"  # type: ignore[index]
        raise GeoreferenceError(
            f"{m.path}: is located by {how}, not a geotransform; geoclass needs a regular grid here: "
            f"warp it first, e.g. gdalwarp {'-rpc ' if m.rpcs else ''}-r bilinear -t_srs EPSG:<code> "
            f"{m.path} warped.tif"
        )
    if m.gcps != first.gcps:
        raise GeoreferenceError(
            f"{m.path}: its ground control points differ from those of {first.path}; "
            "stacked files must share one grid (warp them first, e.g. with gdalwarp)"
        )


def _scene_label(files: Sequence[str]) -> str:
    if len(files) == 1:
        return files[0]
    return f"stack of {len(files)} files ({', '.join(Path(f).name for f in files)})"


def _replace(m: _Member, **changes: Any) -> _Member:
    from dataclasses import replace

    return replace(m, **changes)
