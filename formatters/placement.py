"""Where the memory block goes in the messages (pure; returns a new list).

``before_last_user`` (the default) inserts the block as its own message right before the last
user turn. Everything before that point stays byte-identical from turn to turn, so provider
prompt caches keep hitting. ``system_append`` adds it to the first system message;
``user_prefix`` puts it in front of the last user turn's content.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from policies.decision import Placement

Message = dict[str, Any]


def _last_user_index(messages: Sequence[Message]) -> int | None:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            return index
    return None


def _prefix_content(content: Any, block: str, text_part: str) -> Any:
    if isinstance(content, list):
        return [{"type": text_part, "text": block}, *content]
    return f"{block}\n\n{content or ''}"


def place(
    messages: Sequence[Message],
    block: str,
    placement: Placement,
    role: str = "system",
    *,
    text_part: str = "text",
) -> list[Message]:
    """``messages`` with ``block`` placed; ``text_part`` is the type of a text content part
    (``text`` in chat completions, ``input_text`` in the Responses API's input items)."""
    out = list(messages)
    last_user = _last_user_index(out)
    if placement == "user_prefix" and last_user is not None:
        message = out[last_user]
        out[last_user] = {
            **message,
            "content": _prefix_content(message.get("content"), block, text_part),
        }
        return out
    if placement == "system_append":
        for index, message in enumerate(out):
            if message.get("role") in ("system", "developer") and isinstance(
                message.get("content"), str
            ):
                out[index] = {**message, "content": f"{message['content']}\n\n{block}"}
                return out
        return [{"role": role, "content": block}, *out]
    position = last_user if last_user is not None else len(out)
    out.insert(position, {"role": role, "content": block})
    return out
