"""Background work yields the cores to requests: threads at a lower scheduling priority.

Embedding what was captured is the proxy's heaviest background work: after a burst of
traffic, thousands of exchanges wait to be embedded, and even one request's own capture is
embedded while the next request recalls. At equal priority they share the cores with the
recalls: ``bench/overhead.py`` (memory on, 10k memories, concurrency 1) measured 37.3 ms
added p50 (p99 88.6) with capture on against 21-23 ms in read mode, where nothing is
ingested; at nice 10, 31.8 ms (p99 57.4), minutes apart on the same machine. The rest of the
gap is the cores themselves: the foreground query runs on one thread while ingestion holds
the other, and LanceDB's writes run on its own threads. Ingestion still uses every idle
cycle, so a store becomes searchable within seconds of a quiet moment.

Linux sets the priority of a single thread (``setpriority`` on its thread id), and threads
inherit it from the thread that creates them: ONNX Runtime's intra-op pool threads of a
session created in a background thread are background threads too. Elsewhere, or where
the call is refused, the work simply runs at normal priority.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["BACKGROUND_NICE", "background_executor", "lower_thread_priority"]

BACKGROUND_NICE = 10


def lower_thread_priority() -> None:
    """Move the calling thread (only it, and the threads it will create) to background:
    ``BACKGROUND_NICE`` steps below where it was, at most to the lowest priority, 19."""
    if sys.platform == "linux":
        thread = threading.get_native_id()
        with contextlib.suppress(OSError):
            current = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, min(19, current + BACKGROUND_NICE))


def background_executor(name: str, workers: int = 1) -> ThreadPoolExecutor:
    """A thread pool whose threads run at background priority."""
    return ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=lower_thread_priority)
