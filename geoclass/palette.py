"""Class colours: conventional ones for land-cover names people know, a palette for the rest."""

from __future__ import annotations

import colorsys

# A qualitative palette for classes without a known colour (tab10 + tab20b, RGB 0-255).
_PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (57, 59, 121), (82, 84, 163),
    (107, 110, 207), (156, 158, 222), (99, 121, 57), (140, 162, 82), (181, 207, 107), (206, 219, 156),
]

# Colours people expect for common land-cover names (lower-case substrings).
_NAMED_COLOURS = {
    "water": (0, 92, 230), "sea": (0, 92, 230), "lake": (0, 92, 230), "river": (64, 160, 255),
    "forest": (20, 110, 40), "tree": (20, 110, 40), "conifer": (10, 80, 30),
    "herbaceous": (150, 200, 90), "pasture": (190, 230, 120), "grass": (170, 220, 110),
    "annualcrop": (240, 210, 90), "crop": (240, 210, 90), "permanentcrop": (200, 140, 50), "agri": (240, 210, 90),
    "industrial": (150, 80, 160), "residential": (220, 60, 60), "developed": (220, 60, 60),
    "building": (220, 60, 60), "urban": (220, 60, 60),
    "built": (220, 60, 60), "settlement": (220, 60, 60), "highway": (90, 90, 90), "road": (90, 90, 90),
    "wetland": (110, 190, 190), "scrub": (120, 150, 60), "shrub": (120, 150, 60),
    "bare": (200, 180, 150), "soil": (200, 180, 150), "land": (200, 180, 150), "vegetation": (60, 170, 60),
    "cloud": (245, 245, 245), "snow": (235, 245, 255), "other": (160, 160, 160), "unlabeled": (0, 0, 0),
}


def colors_for_classes(classes: list[str]) -> list[tuple[int, int, int]]:
    """Pick a colour per class: a conventional one when the name says what it is, else a palette one."""
    colours: list[tuple[int, int, int]] = []
    for i, name in enumerate(classes):
        key = name.lower().replace(" ", "").replace("_", "")
        match = next((c for word, c in sorted(_NAMED_COLOURS.items(), key=lambda kv: -len(kv[0])) if word in key), None)
        colour = match if match is not None and match not in colours else palette_colour(i)
        colours.append(colour)
    return colours


def palette_colour(index: int) -> tuple[int, int, int]:
    """The ``index``-th colour of the qualitative palette, then golden-ratio hues beyond it."""
    if index < len(_PALETTE):
        return _PALETTE[index]
    r, g, b = colorsys.hsv_to_rgb(((index - len(_PALETTE)) * 0.618033988749895) % 1.0, 0.65, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)
