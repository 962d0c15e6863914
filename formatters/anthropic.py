"""Anthropic models (through LiteLLM): XML-tagged notes, delivered in the ``system`` field."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from formatters.note import PREAMBLE, Note, one_line


def render(notes: Sequence[Note]) -> str:
    # Escaping keeps a note that contains "</memories>" from closing the block early.
    items = [
        f'<memory date="{note.date}">{escape(one_line(note.content), quote=False)}</memory>'
        for note in notes
    ]
    return "\n".join([PREAMBLE, "<memories>", *items, "</memories>"])
