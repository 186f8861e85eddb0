"""geoclass: land-cover classification of satellite and aerial imagery at any scale."""

from __future__ import annotations

__version__ = "0.1.0"
