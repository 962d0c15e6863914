"""One serial lane per key over a few threads: the store's writer, one lane per tenant.

A tenant's operations (writes, scope loads, peers' changes) run one at a time, in the order
they were submitted, so each table keeps one writer and a scope read can never interleave
with a write of its tenant. Different tenants' lanes run side by side: a slow operation (a
100k-memory scope takes ~10 s to load) holds up only its own tenant, where one writer thread
for the whole store held up every tenant's writes and cold recalls behind it.

Lanes take turns: after each task its lane goes to the back of the pool's queue, so a tenant
with a long backlog cannot keep a thread from the others. The standard library has no keyed
serial executor; this is the small one the store needs.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["Lanes"]

T = TypeVar("T")


class Lanes:
    """Runs each key's tasks serially, different keys' concurrently on ``threads`` threads."""

    def __init__(self, threads: int, thread_name_prefix: str) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=thread_name_prefix)
        self._queues: dict[Hashable, deque[tuple[Callable[[], Any], Future[Any]]]] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._closing = False

    def submit(self, key: Hashable, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closing:
                raise RuntimeError("cannot schedule new tasks after shutdown")
            queue = self._queues.setdefault(key, deque())
            queue.append((fn, future))
            if len(queue) == 1:  # the lane was idle: start it
                self._pool.submit(self._run_next, key)
        return future

    def _run_next(self, key: Hashable) -> None:
        with self._lock:
            fn, future = self._queues[key][0]
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn())
            except BaseException as error:  # delivered to the submitter
                future.set_exception(error)
        with self._lock:
            queue = self._queues[key]
            queue.popleft()
            if queue:
                self._pool.submit(self._run_next, key)
            else:
                del self._queues[key]
                if not self._queues:
                    self._idle.notify_all()

    def shutdown(self) -> None:
        """Refuse new tasks, run every queued one, then stop the threads."""
        with self._lock:
            self._closing = True
            while self._queues:
                self._idle.wait()
        self._pool.shutdown(wait=True)
