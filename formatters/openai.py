"""OpenAI chat models: a plain dated list in a ``system`` or ``developer`` message."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from formatters.note import PREAMBLE, Note, one_line

# Reasoning models take instructions in a developer message; system still works for the rest.
_DEVELOPER_PREFIXES = ("o1", "o3", "o4", "gpt-5")


def render(notes: Sequence[Note]) -> str:
    lines = [f"- [{note.date}] {one_line(note.content)}" for note in notes]
    return "\n".join([PREAMBLE, "", *lines])


def instruction_role(model: str, messages: Sequence[dict[str, Any]]) -> str:
    """``developer`` when the request already uses it or the model expects it."""
    if any(m.get("role") == "developer" for m in messages):
        return "developer"
    bare = model.rsplit("/", 1)[-1]
    return "developer" if bare.startswith(_DEVELOPER_PREFIXES) else "system"
