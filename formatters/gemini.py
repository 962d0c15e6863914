"""Gemini models (through LiteLLM): a dated list, delivered as the system instruction."""

from __future__ import annotations

from collections.abc import Sequence

from formatters.note import PREAMBLE, Note, one_line


def render(notes: Sequence[Note]) -> str:
    lines = [f"* {note.date}: {one_line(note.content)}" for note in notes]
    return "\n".join([PREAMBLE, "", *lines])
