"""Render recalled memories for a model family and place them in the messages (pure)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from formatters import anthropic, gemini, openai, plain
from formatters.note import Note
from formatters.placement import place

Family = Literal["openai", "anthropic", "gemini", "plain"]

_RENDERERS: dict[Family, Callable[[Sequence[Note]], str]] = {
    "openai": openai.render,
    "anthropic": anthropic.render,
    "gemini": gemini.render,
    "plain": plain.render,
}
_PROVIDER_FAMILIES: dict[str, Family] = {
    "anthropic": "anthropic",
    "bedrock": "anthropic",
    "vertex_ai": "gemini",
    "gemini": "gemini",
    "ollama": "plain",
    "ollama_chat": "plain",
    "text-completion-openai": "plain",
    "huggingface": "plain",
}


def family_for(provider: str, model: str) -> Family:
    """The format a target understands best; OpenAI-compatible unless known otherwise."""
    family = _PROVIDER_FAMILIES.get(provider, "openai")
    if provider == "bedrock" and "claude" not in model:
        return "plain"
    return family


def render_block(family: Family, notes: Sequence[Note]) -> str:
    return _RENDERERS[family](notes)


__all__ = ["Family", "Note", "family_for", "place", "render_block"]
