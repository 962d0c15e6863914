"""Context windows of known models, from the price map LiteLLM ships with its package.

Read once at startup from the installed file (no LiteLLM import, no network). Unknown models
fall back to the policy's default window.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path

import orjson

logger = logging.getLogger("memshadow.model_info")
_MAP_FILE = "model_prices_and_context_window_backup.json"


def load_context_windows() -> dict[str, int]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / _MAP_FILE
    try:
        table = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        logger.warning("no model context windows (%s): using the policy default", error)
        return {}
    windows: dict[str, int] = {}
    for name, info in table.items():
        if isinstance(info, dict):
            window = info.get("max_input_tokens") or info.get("max_tokens")
            if isinstance(window, int) and window > 0:
                windows[name] = window
    return windows


def context_window(windows: Mapping[str, int], model: str) -> int | None:
    """The window for ``model`` (``provider/name`` or bare name), or None if unknown."""
    return windows.get(model) or windows.get(model.rsplit("/", 1)[-1])
