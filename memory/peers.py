"""Keeping the RAM scope indexes of replicas that share one LanceDB store fresh.

Each replica answers recall from RAM indexes of the (tenant, user) scopes it touched,
which its own writes keep in sync. Writes of *other* replicas reach it two ways:

- a :class:`TableChange` announced by the writer through a :class:`PeerFeed` (Redis
  pub/sub in the proxy): changed ids are re-read from the table, forgotten scopes and
  deleted ids are dropped from RAM the moment the message arrives, and the writer awaits
  the announcement of a forget before acknowledging it;
- a fallback for announcements that never arrived: every table commit has a version, and
  :class:`VersionLedger` knows which versions this replica's caches account for (its own
  and the announced ones). A table whose latest version has one it does not know of was
  changed behind its back: its cached scopes are dropped and reload on next use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import orjson

__all__ = ["PeerFeed", "TableChange", "VersionLedger"]


@dataclass(frozen=True, slots=True)
class TableChange:
    """Commits ``first_version..last_version`` of a tenant's table, and what they touched.

    ``ids`` were written (re-read them) or, with ``removed``, deleted; ``user`` (with an
    optional ``session``) was forgotten. A change with neither (compaction) only accounts
    for its versions. ``dropped``: the whole table is gone (the tenant was deleted); its
    versions are 0, and a table created later under the name starts its own.
    """

    tenant: str
    first_version: int
    last_version: int
    ids: tuple[str, ...] = ()
    removed: bool = False
    user: str | None = None
    session: str | None = None
    dropped: bool = False

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "tenant": self.tenant,
                "versions": [self.first_version, self.last_version],
                "ids": list(self.ids),
                "removed": self.removed,
                "user": self.user,
                "session": self.session,
                "dropped": self.dropped,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> TableChange:
        body = orjson.loads(raw)
        first, last = body["versions"]
        return cls(
            tenant=str(body["tenant"]),
            first_version=int(first),
            last_version=int(last),
            ids=tuple(str(i) for i in body.get("ids") or ()),
            removed=bool(body.get("removed")),
            user=body.get("user"),
            session=body.get("session"),
            dropped=bool(body.get("dropped")),
        )


class PeerFeed(Protocol):
    """How a store tells the other replicas what it changed, and hears what they did."""

    async def publish(self, change: TableChange) -> None:
        """Announce a change; never raises (a lost announcement is what the version
        check heals)."""
        ...

    def subscribe(
        self, on_change: Callable[[TableChange], None], on_gap: Callable[[], None]
    ) -> None:
        """``on_change`` for every change another replica announces; ``on_gap`` when some
        may have been missed (the feed was cut off)."""
        ...


@dataclass
class VersionLedger:
    """Per tenant, the table versions that this replica's cached scopes account for.

    ``base`` is the version every cached scope of the tenant reflects at least; versions
    above it are accounted for one by one as this replica commits or hears of them. Each
    tenant's entries are used from that tenant's writer lane only (:mod:`memory.lanes`).
    """

    _base: dict[str, int] = field(default_factory=dict)
    _seen: dict[str, set[int]] = field(default_factory=dict)

    def start(self, tenant: str, version: int) -> None:
        """The tenant's first scope is cached, from ``version``; later loads read newer."""
        if tenant not in self._base:
            self._base[tenant] = version
            self._seen[tenant] = set()

    def note(self, tenant: str, first: int, last: int) -> None:
        """Versions ``first..last`` are reflected in the cache (or changed nothing in it)."""
        if tenant in self._base:
            self._seen[tenant].update(range(max(first, self._base[tenant] + 1), last + 1))

    def forget(self, tenant: str) -> None:
        """The tenant's cached scopes are gone: nothing to account for until one is loaded."""
        self._base.pop(tenant, None)
        self._seen.pop(tenant, None)

    def missed(self, tenant: str, latest: int) -> bool:
        """Whether some version up to ``latest`` is unaccounted for; either way the ledger
        then accounts up to ``latest`` (the caller drops the tenant's scopes if it was)."""
        base = self._base.get(tenant)
        if base is None:
            return False
        seen = self._seen[tenant]
        # Below the base: the table was dropped and created again, unannounced.
        missing = latest < base or any(
            version not in seen for version in range(base + 1, latest + 1)
        )
        self._base[tenant] = max(base, latest)
        self._seen[tenant] = {version for version in seen if version > latest}
        return missing
