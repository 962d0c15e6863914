"""Typed configuration: :class:`Settings` and :func:`load_settings`."""

from __future__ import annotations

from config.settings import MemorySettings, ModelRoute, Settings, load_settings

__all__ = ["MemorySettings", "ModelRoute", "Settings", "load_settings"]
