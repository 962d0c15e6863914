"""Turns that say nothing on their own are not captured ("ok", "Thanks!", "Got it.").

Every captured turn is embedded, stored, listed in the user's memories and then competes in
each of their recalls. A bare acknowledgement holds nothing a later question could need (what
it agreed to is in the turn before it, stored on its own), and short generic texts sit close
to short generic questions in embedding space. A turn is chatter when it has no word outside
a small set of English acknowledgements, greetings and thanks: a name, a number or any word
of content keeps it, and so does every turn in another language. Explicit stores
(``POST /v1/memories``) are never filtered: there the user chose what to keep. Pure.
"""

from __future__ import annotations

import re

__all__ = ["is_chatter"]

_WORD = re.compile(r"[^\W_]+")
_CHATTER_WORDS = frozenset(
    """
    ok okay k kk alright sure yes yeah yep yup no nope nah fine good great cool nice perfect
    awesome excellent wonderful thanks thank thx ty you very much so a lot of course np
    problem worries welcome got it that this is s re m ll i me all right noted understood
    will do sounds hi hello hey bye goodbye cheers see later morning night please lol haha
    wow oh ah at
    """.split()
)


def is_chatter(text: str) -> bool:
    """Whether ``text`` says nothing worth remembering on its own (see the module)."""
    return all(word in _CHATTER_WORDS for word in _WORD.findall(text.casefold()))
