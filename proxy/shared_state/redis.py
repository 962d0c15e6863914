"""The shared state of N replicas: one Redis, through redis-py's asyncio client.

Failure is routine here, never a chat error: every command runs under a short socket
timeout with no client-side retries, and after a failure commands fail fast (as
:class:`proxy.errors.SharedStateUnavailable`) for ``retry_s`` instead of each waiting for
a timeout of its own. The outage is logged once, counted, and shown on the gauge
``memshadow_shared_state_up``; it ends when a command or the subscription gets through.
A lost connection drops the pool's idle connections with it (they died with the server).
Broadcasts ride one pattern subscription (``<namespace>*``) on a task that reconnects
every ``retry_s``; after a reconnection every subscriber is told of the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from redis import Redis as BlockingRedis
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry

from proxy.errors import SharedStateUnavailable
from proxy.metrics import Metrics
from proxy.shared_state.base import GapHandler, MessageHandler

__all__ = ["RedisState"]

logger = logging.getLogger("memshadow.shared_state")
T = TypeVar("T")
_ORIGIN_SEPARATOR = b"\n"
NAMESPACE = "memshadow:"


class RedisState:
    """:class:`proxy.shared_state.base.SharedState` over Redis (``MEMSHADOW_REDIS_URL``)."""

    def __init__(
        self,
        url: str,
        metrics: Metrics,
        *,
        timeout_s: float = 0.5,
        retry_s: float = 1.0,
        namespace: str = NAMESPACE,
    ) -> None:
        self._client: Redis = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # The breaker below decides when to try again; redis-py's retries would only
            # multiply each timeout.
            retry=Retry(NoBackoff(), 0),
        )
        self._metrics = metrics
        self._retry_s = retry_s
        self._namespace = namespace
        self._origin = secrets.token_hex(8).encode()
        self._handlers: dict[str, list[tuple[MessageHandler, GapHandler]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._listening = False
        self._subscribed = asyncio.Event()  # the first subscription, awaited by start()
        self._failing_until = 0.0
        self._down = False  # an outage is logged once, when it starts
        metrics.shared_state_up.set_function(lambda: 1.0 if self.healthy else 0.0)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, *, wait_s: float = 2.0) -> None:
        """Start listening; wait (at most ``wait_s``) for the subscription, so that a replica
        whose Redis answers does not serve its first requests degraded."""
        self._listener = asyncio.create_task(self._listen(), name="memshadow-redis-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), wait_s)

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        await self._client.aclose()

    @property
    def healthy(self) -> bool:
        return self._listening and time.monotonic() >= self._failing_until

    def _set_up(self, up: bool, error: BaseException | None = None) -> None:
        """Log the start and the end of an outage, once each."""
        if not up and not self._down:
            self._down = True
            logger.warning(
                "shared state (Redis) unavailable: memory runs degraded until it is back: %s",
                error,
            )
        elif up and self._down:
            self._down = False
            logger.info("shared state (Redis) is back")

    async def _run(self, op: str, command: Callable[[], Awaitable[T]]) -> T:
        if time.monotonic() < self._failing_until:
            raise SharedStateUnavailable("Shared state (Redis) is unavailable; retry shortly.")
        try:
            result = await command()
        except (RedisError, OSError) as error:
            self._failing_until = time.monotonic() + self._retry_s
            self._metrics.shared_state_errors.labels(op).inc()
            self._set_up(False, error)
            if isinstance(error, RedisConnectionError | OSError):
                # The server went away: every idle pooled connection is dead too. Without
                # this each one failed its next command in turn, and after a restart the
                # replica flapped for as many breaker periods as it had pooled connections.
                await self._client.connection_pool.disconnect(inuse_connections=False)
            raise SharedStateUnavailable(
                "Shared state (Redis) is unavailable; retry shortly."
            ) from error
        if self._down:
            self._set_up(True)
        return result

    def _key(self, key: str) -> str:
        return self._namespace + key

    # -- for modules that speak Redis themselves (the ingestion stream) ---------------------
    def namespaced(self, key: str) -> str:
        """The full Redis key of a relative one."""
        return self._key(key)

    def script(self, source: str) -> AsyncScript:
        """A Lua script, to call with ``client=`` inside :meth:`execute`."""
        return self._client.register_script(source)

    async def execute(self, op: str, command: Callable[[Redis], Awaitable[T]]) -> T:
        """Run ``command`` on the client under this state's breaker: it fails fast while
        Redis is failing, and its failure is counted, logged once and raised as
        :class:`proxy.errors.SharedStateUnavailable` like any command here."""
        return await self._run(op, lambda: command(self._client))

    # -- hashes and values -------------------------------------------------------------
    async def _pipeline(self, op: str, build: Callable[[Any], None]) -> list[Any]:
        async def execute() -> list[Any]:
            async with self._client.pipeline(transaction=True) as pipe:
                build(pipe)
                results: list[Any] = await pipe.execute()
                return results

        return await self._run(op, execute)

    async def claim(self, key: str, fields: Mapping[str, str], ttl_s: float | None) -> list[str]:
        if not fields:
            return []
        names = list(fields)

        def build(pipe: Any) -> None:
            for name in names:
                pipe.hsetnx(self._key(key), name, fields[name])
            if ttl_s is not None:
                pipe.pexpire(self._key(key), math.ceil(ttl_s * 1000))

        results = await self._pipeline("claim", build)
        return [name for name, won in zip(names, results, strict=False) if won]

    async def release(self, key: str, fields: Sequence[str]) -> None:
        if fields:
            await self._run("release", lambda: self._client.hdel(self._key(key), *fields))

    async def fields(self, key: str) -> dict[str, str]:
        raw = await self._run("fields", lambda: self._client.hgetall(self._key(key)))
        return {_text(name): _text(value) for name, value in raw.items()}

    async def add(self, key: str, deltas: Mapping[str, float]) -> dict[str, float]:
        def build(pipe: Any) -> None:
            for name, delta in deltas.items():
                pipe.hincrbyfloat(self._key(key), name, delta)
            pipe.hgetall(self._key(key))

        totals: dict[bytes, bytes] = (await self._pipeline("add", build))[-1]
        return {_text(name): float(value) for name, value in totals.items()}

    async def swap(self, key: str, value: bytes, ttl_s: float) -> bytes | None:
        previous = await self._run(
            "swap",
            lambda: self._client.set(self._key(key), value, px=math.ceil(ttl_s * 1000), get=True),
        )
        return previous if isinstance(previous, bytes) else None

    async def get(self, key: str) -> bytes | None:
        value = await self._run("get", lambda: self._client.get(self._key(key)))
        return value if isinstance(value, bytes) else None

    # -- broadcast ---------------------------------------------------------------------
    async def publish(self, channel: str, message: bytes) -> None:
        framed = self._origin + _ORIGIN_SEPARATOR + message
        await self._run("publish", lambda: self._client.publish(self._key(channel), framed))

    def subscribe(self, channel: str, on_message: MessageHandler, on_gap: GapHandler) -> None:
        self._handlers.setdefault(self._key(channel), []).append((on_message, on_gap))

    async def _listen(self) -> None:
        connected_before = False
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(self._namespace + "*")
                self._listening = True
                self._subscribed.set()
                self._set_up(True)
                if connected_before:
                    self._gap()
                connected_before = True
                async for message in pubsub.listen():
                    self._dispatch(message)
            except (RedisError, OSError) as error:
                self._listening = False
                self._set_up(False, error)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(self._retry_s)

    def _gap(self) -> None:
        for handlers in self._handlers.values():
            for _, on_gap in handlers:
                on_gap()

    def _dispatch(self, message: dict[str, Any]) -> None:
        origin, _, data = bytes(message["data"]).partition(_ORIGIN_SEPARATOR)
        if origin == self._origin:
            return
        for on_message, _ in self._handlers.get(bytes(message["channel"]).decode(), []):
            try:
                on_message(data)
            except (ValueError, KeyError, TypeError) as error:
                # A malformed message (another version's?) must not stop the listener.
                logger.warning("ignored a message on %s: %s", message["channel"], error)


def publish_once(url: str, channel: str, message: bytes, *, timeout_s: float = 2.0) -> None:
    """Broadcast from a process that is not a replica (the CLI); raises ``RedisError``."""
    client = BlockingRedis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.publish(NAMESPACE + channel, b"cli" + _ORIGIN_SEPARATOR + message)
    finally:
        client.close()


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
