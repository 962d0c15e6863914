"""Shared fixtures: a clean environment, explicit settings, the app in-process, keys."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from config import Settings
from proxy.app import create_app
from proxy.keys import TenantRegistry
from tests.fakes import FakeEmbedder, FakeUpstream

# LiteLLM fetches a model price map from the internet at import unless told not to.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

UPSTREAM = "https://upstream.test/v1"
ASGI_BASE = "http://memshadow.test"  # the in-process app; respx lets this host through
ADMIN_KEY = "admin-secret-for-tests"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's provider keys or MemShadow settings."""
    for name in list(os.environ):
        if name.startswith(("MEMSHADOW_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "AZURE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        upstream_base_url=UPSTREAM,
        upstream_api_key="sk-upstream",
        data_dir=tmp_path / "data",
        admin_key=ADMIN_KEY,
    )


@pytest.fixture
def registry(settings: Settings) -> TenantRegistry:
    return TenantRegistry(str(settings.data_dir / "registry"))


@pytest.fixture
def tenant_key(registry: TenantRegistry) -> str:
    key, _ = registry.create_key("acme")
    return key


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    """respx on every httpx client; the in-process app and loopback servers pass through.

    ``using="httpx"`` patches the client rather than httpcore, so it also intercepts the
    aiohttp transport the proxy uses in production. Tests add routes for other hosts.
    """
    with respx.mock(assert_all_called=False, using="httpx") as mock:
        mock.route(url__startswith=ASGI_BASE).pass_through()
        mock.route(host="127.0.0.1").pass_through()
        yield mock


@pytest.fixture
def upstream(router: respx.MockRouter) -> FakeUpstream:
    """The default upstream, scripted; every other host is refused."""
    fake = FakeUpstream()
    router.route(url__startswith=UPSTREAM).mock(side_effect=fake.handle)
    return fake


def build_app(settings: Settings, **collaborators: Any) -> FastAPI:
    """The app with the fake embedder unless a test asks otherwise (the model is slow)."""
    collaborators.setdefault("embedder", FakeEmbedder())
    return create_app(settings, **collaborators)


@pytest.fixture
def app(settings: Settings, registry: TenantRegistry) -> FastAPI:
    return build_app(settings, registry=registry)


@asynccontextmanager
async def in_process(
    app: FastAPI, key: str | None = None, *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """A client for ``app`` in-process, with its lifespan run (ASGITransport skips it)."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(
            transport=transport, base_url=ASGI_BASE, headers=headers
        ) as http:
            yield http


@pytest.fixture
async def client(app: FastAPI, tenant_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(app, tenant_key) as http:
        yield http


@pytest.fixture
def no_aiohttp() -> Iterator[None]:
    """LiteLLM's aiohttp transport bypasses respx; use its httpx transport in tests.

    LiteLLM also caches its HTTP clients per process; each test has its own event loop, so
    the cache is flushed around every test that uses it.
    """
    import litellm

    previous = litellm.disable_aiohttp_transport
    litellm.disable_aiohttp_transport = True
    litellm.in_memory_llm_clients_cache.flush_cache()
    yield
    litellm.in_memory_llm_clients_cache.flush_cache()
    litellm.disable_aiohttp_transport = previous


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LoopbackServer:
    """An ASGI app on a real loopback port, served by uvicorn in a thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("loopback server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture
def live_memshadow(tmp_path: Path) -> Iterator[tuple[str, str, FakeUpstream]]:
    """MemShadow on loopback (its URL, a tenant key) in front of a scripted upstream on
    loopback: what an SDK in another thread or process talks to."""
    fake = FakeUpstream()
    with LoopbackServer(fake.asgi()) as upstream_server:
        settings = Settings(
            upstream_base_url=f"{upstream_server.url}/v1", data_dir=tmp_path / "live"
        )
        registry = TenantRegistry(str(settings.data_dir / "registry"))
        key, _ = registry.create_key("acme")
        with LoopbackServer(build_app(settings, registry=registry)) as proxy_server:
            yield proxy_server.url, key, fake


class RedisServer:
    """A real ``redis-server`` on a free loopback port, nothing persisted; restartable."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self._directory = directory
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (make redis-server installs it)")
        self._directory.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self._directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self._answers():
            if time.monotonic() > deadline or self._process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill it (SIGKILL: an outage, not a shutdown)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
