"""Colour-coded masks: which colour is which class, and masks decoded to class ids.

Published segmentation sets often ship masks as RGB images, one colour per class. A colour map
says which colour is which class (``--label-colors FILE``) in one of three layouts:

- JSON ``{"Water": "#E2A929", "Road": "#6EC1E4", ..., "ignore": ["#9B9B9B", "#000000"]}``: a
  class may have several colours (a list); the key ``ignore`` lists colours that label nothing;
- the ``classes.json`` layout of annotation tools: ``{"classes": [{"title": "Water", "color":
  "#E2A929"}, ...]}``; a class titled Unlabeled/Unlabelled/Ignore/Void/Nodata is ignored;
- a QGIS colour map export: ``value,R,G,B,A,label`` lines (``#`` comments, ``INTERPOLATION:``).

Ignored colours decode to ``IGNORE`` (255), the ignore index of training and evaluation. A colour
found in a mask but not in the map is an error listing the unknown colours and their pixel
counts, so a map that does not fit the masks is caught before any chip is cut.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoclass.errors import InputNotFoundError, LabelError

__all__ = ["IGNORE", "IGNORE_NAMES", "ColorMap", "read_color_map"]

IGNORE = 255
IGNORE_NAMES = frozenset({"unlabeled", "unlabelled", "ignore", "void", "nodata", "no data"})
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def _rgb(text: Any, where: str) -> tuple[int, int, int]:
    """``"#RRGGBB"`` (or ``[r, g, b]``) as a tuple."""
    if isinstance(text, (list, tuple)) and len(text) in (3, 4) and all(isinstance(v, int) for v in text):
        r, g, b = (int(v) for v in text[:3])
        if all(0 <= v <= 255 for v in (r, g, b)):
            return r, g, b
    if isinstance(text, str):
        m = _HEX.match(text.strip())
        if m:
            v = int(m.group(1), 16)
            return (v >> 16) & 255, (v >> 8) & 255, v & 255
    raise LabelError(f"{where}: expected a colour as \"#RRGGBB\", found {text!r}")


def hex_color(rgb: tuple[int, int, int]) -> str:
    return "#{:02X}{:02X}{:02X}".format(*rgb)


@dataclass
class ColorMap:
    """Which mask colour is which class.

    Attributes:
        classes: Class names in id order (ignored colours are not classes).
        colors: Display colour of each class (its first colour).
        lookup: Every known colour -> class id, or ``IGNORE``.
        source: Where the map came from (for messages).
    """

    classes: list[str]
    colors: list[tuple[int, int, int]]
    lookup: dict[tuple[int, int, int], int]
    source: str = "colour map"
    _keys: np.ndarray = field(init=False, repr=False)
    _ids: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.classes:
            raise LabelError(f"{self.source}: names no class (only ignored colours)")
        if len(self.classes) >= IGNORE:
            raise LabelError(f"{self.source}: {len(self.classes)} classes; at most {IGNORE - 1} fit a mask")
        items = sorted((_pack(*rgb), cid) for rgb, cid in self.lookup.items())
        self._keys = np.array([k for k, _ in items], np.int64)
        self._ids = np.array([c for _, c in items], np.uint8)

    @property
    def ignored(self) -> list[tuple[int, int, int]]:
        return [rgb for rgb, cid in self.lookup.items() if cid == IGNORE]

    def decode(self, rgb: np.ndarray, where: str) -> np.ndarray:
        """``(3, H, W)`` uint8 colours -> ``(H, W)`` uint8 class ids (``IGNORE`` for ignored).

        Raises:
            LabelError: Colours the map does not know, listed with their pixel counts.
        """
        keys = _pack(rgb[0].astype(np.int64), rgb[1].astype(np.int64), rgb[2].astype(np.int64))
        pos = np.clip(np.searchsorted(self._keys, keys), 0, len(self._keys) - 1)
        known = self._keys[pos] == keys
        if not known.all():
            raise self.unknown_error(keys[~known], where)
        return self._ids[pos]

    def unknown_colors(self, rgb: np.ndarray) -> dict[int, int]:
        """Packed colours of ``rgb`` the map does not know -> their pixel counts."""
        keys = _pack(rgb[0].astype(np.int64), rgb[1].astype(np.int64), rgb[2].astype(np.int64))
        values, counts = np.unique(keys.ravel(), return_counts=True)
        pos = np.clip(np.searchsorted(self._keys, values), 0, len(self._keys) - 1)
        unknown = self._keys[pos] != values
        return {int(v): int(n) for v, n in zip(values[unknown], counts[unknown], strict=True)}

    def unknown_error(self, packed: np.ndarray | dict[int, int], where: str) -> LabelError:
        """The one-line error for colours the map lacks (packed colours, or colour -> count)."""
        if isinstance(packed, dict):
            found = packed
        else:
            values, counts = np.unique(np.asarray(packed).ravel(), return_counts=True)
            found = {int(v): int(n) for v, n in zip(values, counts, strict=True)}
        top = sorted(found.items(), key=lambda kv: -kv[1])
        listed = ", ".join(f"{hex_color(_unpack(k))} ({n:,} px)" for k, n in top[:8])
        more = f" and {len(top) - 8} more" if len(top) > 8 else ""
        known = ", ".join(f"{name} {hex_color(c)}" for name, c in zip(self.classes, self.colors, strict=True))
        return LabelError(
            f"{where}: colours not in {self.source}: {listed}{more}; the map has {known}"
            f"{' (ignored: ' + ', '.join(map(hex_color, self.ignored)) + ')' if self.ignored else ''}. "
            "Is it the colour map of these masks? Add the colours, or list them under \"ignore\""
        )


def _pack(r: Any, g: Any, b: Any) -> Any:
    return (r << 16) | (g << 8) | b


def _unpack(key: int) -> tuple[int, int, int]:
    return (key >> 16) & 255, (key >> 8) & 255, key & 255


def read_color_map(path: str | os.PathLike[str]) -> ColorMap:
    """Read a colour map file (JSON ``{name: colour}``, ``classes.json``, or QGIS export).

    Raises:
        InputNotFoundError: No such file.
        LabelError: Not one of the layouts, a malformed colour, a colour given to two classes.
    """
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(f"{p}: colour map file not found")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"{p}: not a text file ({exc})") from None
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabelError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(data, dict) and isinstance(data.get("classes"), list):
            pairs = _from_classes_json(data["classes"], str(p))
        else:
            pairs = _from_name_map(data, str(p))
    else:
        pairs = _from_qgis(text, str(p))
    return _build(pairs, str(p))


def color_map_from(spec: dict[str, Any], source: str = "colour map") -> ColorMap:
    """A colour map from a ``{name: colour(s)}`` mapping (key ``ignore``: ignored colours)."""
    return _build(_from_name_map(spec, source), source)


def _from_name_map(data: Any, where: str) -> list[tuple[str | None, tuple[int, int, int]]]:
    if not isinstance(data, dict) or not data:
        raise LabelError(f"{where}: expected {{\"class\": \"#RRGGBB\", ...}}, found {type(data).__name__}")
    pairs: list[tuple[str | None, tuple[int, int, int]]] = []
    for name, value in data.items():
        values = value if isinstance(value, list) and value and not isinstance(value[0], int) else [value]
        is_ignore = str(name).strip().lower() == "ignore"
        for v in values:
            pairs.append((None if is_ignore else str(name), _rgb(v, f"{where}: {name}")))
    return pairs


def _from_classes_json(items: list[Any], where: str) -> list[tuple[str | None, tuple[int, int, int]]]:
    pairs: list[tuple[str | None, tuple[int, int, int]]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "title" not in item or "color" not in item:
            raise LabelError(f"{where}: classes[{i}] needs \"title\" and \"color\"")
        name = str(item["title"])
        ignored = name.strip().lower() in IGNORE_NAMES
        pairs.append((None if ignored else name, _rgb(item["color"], f"{where}: {name}")))
    return pairs


def _from_qgis(text: str, where: str) -> list[tuple[str | None, tuple[int, int, int]]]:
    rows: list[tuple[float, str | None, tuple[int, int, int]]] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#") or line.upper().startswith("INTERPOLATION"):
            continue
        parts = [x.strip() for x in line.split(",")]
        try:
            value = float(parts[0])
            r, g, b = (int(x) for x in parts[1:4])
        except (ValueError, IndexError):
            raise LabelError(f"{where}: line {n}: expected a colour map (JSON, or QGIS "
                             f"'value,R,G,B,A,label' lines), found {line[:60]!r}") from None
        label = ",".join(parts[5:]) if len(parts) > 5 else f"{value:g}"
        ignored = label.strip().lower() in IGNORE_NAMES
        rows.append((value, None if ignored else label, _rgb([r, g, b], f"{where}: line {n}")))
    if not rows:
        raise LabelError(f"{where}: no colours found")
    return [(name, rgb) for _, name, rgb in sorted(rows, key=lambda r: r[0])]


def _build(pairs: list[tuple[str | None, tuple[int, int, int]]], where: str) -> ColorMap:
    classes: list[str] = []
    colors: list[tuple[int, int, int]] = []
    lookup: dict[tuple[int, int, int], int] = {}
    owner: dict[tuple[int, int, int], str] = {}
    for name, rgb in pairs:
        label = name if name is not None else "ignore"
        if rgb in lookup and owner[rgb] != label:
            raise LabelError(f"{where}: {hex_color(rgb)} is given to both {owner[rgb]} and {label}")
        if name is None:
            lookup[rgb] = IGNORE
        else:
            if name not in classes:
                classes.append(name)
                colors.append(rgb)
            lookup[rgb] = classes.index(name)
        owner[rgb] = label
    return ColorMap(classes, colors, lookup, where)
