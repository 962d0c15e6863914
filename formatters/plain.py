"""Local and plain-completion models: short, explicit, delimited text."""

from __future__ import annotations

from collections.abc import Sequence

from formatters.note import PREAMBLE, Note, one_line


def render(notes: Sequence[Note]) -> str:
    lines = [f"{note.date}: {one_line(note.content)}" for note in notes]
    return "\n".join(["### Recalled notes", PREAMBLE, *lines, "### End of recalled notes"])
