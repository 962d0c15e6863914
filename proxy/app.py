"""The app factory and its lifespan: every collaborator is built here, once."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TypedDict

import aiohttp
import httpx
from fastapi import FastAPI
from httpx_aiohttp import AiohttpTransport
from starlette.middleware.cors import CORSMiddleware

from config import Settings
from memory.embedder import Embedder, load_embedder
from memory.service import MemoryService
from memory.stream_ingest import StreamConfig
from proxy.auth import AdminGuard, Authenticator
from proxy.background import BackgroundResponses
from proxy.capture import CaptureQueue
from proxy.chains import ChainContext
from proxy.direct import DirectRoutes
from proxy.errors import install_error_handlers
from proxy.feedback import CalibrationBook
from proxy.ingest_stream import RedisIngestStream
from proxy.injection import MemoryInjector
from proxy.keys import TenantRegistry, registry_uri
from proxy.memory_feed import SharedOutcomeFeed, SharedPeerFeed
from proxy.metrics import Metrics
from proxy.middleware import RequestIdMiddleware
from proxy.model_info import load_context_windows
from proxy.pipeline import ChatMemory, NoMemory
from proxy.rate_limit import RateLimiter
from proxy.receipts import ReceiptStore
from proxy.routes import admin, chat, dashboard, feedback, forward, health, passthrough
from proxy.routes import memories as memories_routes
from proxy.routes import receipts as receipts_routes
from proxy.routing import ModelRouter
from proxy.services import Services
from proxy.shared_state import RedisState, SharedState, open_shared_state
from proxy.upstream import LiteLLMUpstream, OpenAIUpstream

logger = logging.getLogger("memshadow")


class State(TypedDict):
    services: Services


def _secret(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return getter() if getter is not None else None


class _Cookieless(httpx.Cookies):
    """Upstream cookies are never kept: the one client is shared by every tenant. A jar that
    refuses them is not enough: httpx builds urllib request and response shims for every
    response before it asks the jar (a tenth of a proxied request's CPU, measured in-process)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class UpstreamClient(httpx.AsyncClient):
    """httpx's client without cookie handling (see :class:`_Cookieless`)."""

    _cookieless = _Cookieless()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._cookieless

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        raise TypeError("the upstream client keeps no cookies")


def _aiohttp_session(limits: httpx.Limits) -> Callable[[], aiohttp.ClientSession]:
    """The pool under the client, created lazily inside the running event loop."""

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections or 0, keepalive_timeout=limits.keepalive_expiry
        )
        # aiohttp keeps cookies per session too; tenants share this one, so keep none.
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    return session


def build_http_client(settings: Settings) -> httpx.AsyncClient:
    """One pooled client for every OpenAI-compatible upstream call.

    httpx's API over aiohttp's connection pool: measured on this machine, httpcore's pool
    costs ~1.2 ms of CPU per request at concurrency 32 (it scans every pooled connection per
    request), aiohttp's ~0.3 ms, and the throughput of the proxy follows.
    """
    limits = httpx.Limits(
        max_connections=settings.upstream_max_connections,
        max_keepalive_connections=settings.upstream_max_connections,
        keepalive_expiry=60.0,
    )
    timeout = httpx.Timeout(
        settings.upstream_timeout_s, connect=settings.upstream_connect_timeout_s
    )
    # trust_env=False: proxies and netrc from the environment must not redirect tenant traffic.
    transport = AiohttpTransport(limits=limits, client=_aiohttp_session(limits))
    return UpstreamClient(transport=transport, timeout=timeout, trust_env=False)


async def open_memories(
    settings: Settings, embedder: Embedder | None, shared: SharedState, metrics: Metrics
) -> MemoryService | None:
    """The memory engine, or None (plain proxy, logged) when it is off or cannot start.

    With Redis the tables may be shared by replicas: their changes are announced to each
    other (see memory.peers), stores are acknowledged in the shared ingestion stream and
    applied by one writer per tenant (see memory.stream_ingest). The write-ahead log stays
    under this host's data directory, the fallback while Redis is unreachable.
    """
    if not settings.memory.enabled:
        return None
    try:
        if embedder is None:
            embedder = await asyncio.to_thread(
                load_embedder, settings.memory.embedder_model, settings.data_dir / "models"
            )
        service = MemoryService(
            settings.data_dir / "memory",
            embedder,
            store_uri=f"{settings.store_uri.rstrip('/')}/memory/lancedb"
            if settings.store_uri
            else None,
            peers=SharedPeerFeed(shared) if settings.redis_url else None,
            outcome_feed=SharedOutcomeFeed(shared) if settings.redis_url else None,
            stream=_stream_config(settings, shared, metrics),
            refresh_s=settings.store_refresh_s,
            max_content_chars=settings.memory.max_content_chars,
            prewarm_rows=settings.memory.prewarm_rows,
        )
        await service.start()
        metrics.ingest_writer_tenants.set_function(lambda: service.writing)
        metrics.scope_cache_rows.set_function(lambda: service.cached_rows)
    except (OSError, RuntimeError, ValueError) as error:
        logger.error("memory engine unavailable, serving as a plain proxy: %s", error)
        return None
    return service


def _gauge_backlogs(metrics: Metrics, capture: CaptureQueue, engine: MemoryService) -> None:
    """``/metrics`` reads what waits behind the answers at scrape time (no polling task)."""
    metrics.capture_queue.set_function(lambda: capture.depth)
    metrics.ingest_backlog.set_function(lambda: engine.ingest_backlog)


def _stream_config(
    settings: Settings, shared: SharedState, metrics: Metrics
) -> StreamConfig | None:
    if not isinstance(shared, RedisState):
        return None  # one process: its own write-ahead log is the durable queue
    return StreamConfig(
        RedisIngestStream(shared),
        lease_ttl_s=settings.ingest_lease_ttl_s,
        wait_s=settings.ingest_wait_s,
        on_fallback=metrics.ingest_fallback.inc,
    )


def _injector(
    settings: Settings,
    engine: MemoryService | None,
    capture: CaptureQueue | None,
    receipts: ReceiptStore,
    calibration: CalibrationBook,
    metrics: Metrics,
    shared: SharedState,
    chains: ChainContext,
    background: BackgroundResponses | None,
) -> ChatMemory:
    if engine is None or capture is None:
        return NoMemory()
    return MemoryInjector(
        engine,
        capture,
        receipts,
        calibration,
        metrics,
        shared,
        policy=settings.memory.policy,
        windows=load_context_windows(),
        max_inflight=settings.memory.max_concurrent_recalls,
        chains=chains,
        background=background,
    )


def create_app(
    settings: Settings,
    *,
    registry: TenantRegistry | None = None,
    http_client: httpx.AsyncClient | None = None,
    litellm: LiteLLMUpstream | None = None,
    embedder: Embedder | None = None,
    memories: MemoryService | None = None,
    chat_memory: ChatMemory | None = None,
) -> FastAPI:
    """Build the ASGI app. Collaborators given here are used as-is (tests pass fakes)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        async with AsyncExitStack() as stack:
            metrics = Metrics()
            shared = await stack.enter_async_context(open_shared_state(settings, metrics))
            client = http_client or build_http_client(settings)
            if http_client is None:
                stack.push_async_callback(client.aclose)
            engine = memories or await open_memories(settings, embedder, shared, metrics)
            if engine is not None and memories is None:
                stack.push_async_callback(engine.aclose)
            limiter = RateLimiter(shared)
            await limiter.start()
            stack.push_async_callback(limiter.aclose)
            services = await stack.enter_async_context(
                _memory_side(settings, shared, engine, metrics, client, limiter)
            )
            logger.info(
                "memshadow ready: upstream %s, data in %s, store %s, shared state %s",
                settings.upstream_base_url,
                settings.data_dir,
                settings.store_root,
                "redis" if settings.redis_url else "in-process",
            )
            # Imports and start-up leave ~170k long-lived objects (FastAPI, LanceDB, ONNX
            # Runtime, pydantic schemas). A full collection scans them all, a 30-100 ms pause
            # on this machine every few thousand requests: move them out of the collector's
            # sight until shutdown. (No gc.collect() first: it costs ~100 ms per app start,
            # and refcounting frees the acyclic start-up garbage anyway.)
            gc.freeze()
            try:
                yield {"services": services}
            finally:
                gc.unfreeze()

    @asynccontextmanager
    async def _memory_side(
        settings: Settings,
        shared: SharedState,
        engine: MemoryService | None,
        metrics: Metrics,
        client: httpx.AsyncClient,
        limiter: RateLimiter,
    ) -> AsyncIterator[Services]:
        """Receipts, calibration and capture over the shared state; the services. Closed
        (capture drained, receipts written, calibration saved) before the engine is."""
        tenants = registry or TenantRegistry(registry_uri(settings))
        receipts = ReceiptStore(shared)
        # One process keeps calibration in a file; with Redis, Redis keeps it.
        path = None if settings.redis_url else settings.data_dir / "calibration.json"
        calibration = CalibrationBook(shared, path, refresh_s=settings.store_refresh_s)
        await calibration.start()
        capture = background = None
        chains = ChainContext(shared)
        if engine is not None:
            background = BackgroundResponses(shared, receipts, engine)
            capture = CaptureQueue(engine, shared, receipts, calibration, metrics, chains=chains)
            await capture.start()
            _gauge_backlogs(metrics, capture, engine)
        injector = chat_memory or _injector(
            settings, engine, capture, receipts, calibration, metrics, shared, chains, background
        )
        try:
            yield Services(
                settings=settings,
                registry=tenants,
                auth=Authenticator(
                    tenants,
                    ttl_s=settings.key_cache_ttl_s,
                    passthrough=settings.auth_mode == "passthrough",
                    shared=shared if settings.redis_url else None,
                ),
                admin=AdminGuard(_secret(settings.admin_key)),
                router=ModelRouter(
                    settings.model_list,
                    default_base_url=settings.upstream_base_url,
                    default_api_key=_secret(settings.upstream_api_key),
                ),
                openai=OpenAIUpstream(client),
                litellm=litellm or LiteLLMUpstream(),
                chat_memory=injector,
                memories=engine,
                capture=capture,
                receipts=receipts,
                calibration=calibration,
                metrics=metrics,
                limiter=limiter,
            )
        finally:
            if capture is not None:
                await capture.aclose()
            await receipts.aclose()
            await calibration.aclose()

    app = FastAPI(
        title="MemShadow",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    install_error_handlers(app)
    routers = (
        chat,
        passthrough,
        memories_routes,
        receipts_routes,
        feedback,
        health,
        admin,
        dashboard,
        forward,  # last: every /v1 path nothing above serves
    )
    for module in routers:
        app.include_router(module.router)
    hot = {
        ("POST", "/v1/chat/completions"): chat.chat_completions,
        ("POST", "/v1/responses"): chat.responses,
    }
    app.add_middleware(DirectRoutes, routes=hot)
    if settings.cors_origins:
        # Bearer keys only, no cookies (allow_credentials stays off), so a page on another
        # origin gains nothing it could not do with the key; answers' own headers
        # (X-Memory-*, X-Request-Id, the upstream's rate limits) are readable to it.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["*"],
            max_age=600,
        )
    app.add_middleware(RequestIdMiddleware)
    return app
