"""The routing table: exact and wildcard routes, providers, credential precedence."""

from __future__ import annotations

from config import ModelRoute
from proxy.keys import TenantUpstream
from proxy.routing import ModelRouter

ROUTES = [
    ModelRoute(
        model_name="claude",
        litellm_params={"model": "anthropic/claude-sonnet-4-5", "api_key": "sk-ant-global"},
    ),
    ModelRoute(
        model_name="anthropic/*", litellm_params={"model": "anthropic/*", "api_key": "sk-ant-wild"}
    ),
    ModelRoute(
        model_name="local-llama",
        litellm_params={"model": "openai/llama3", "api_base": "http://127.0.0.1:8000/v1/"},
    ),
    ModelRoute(
        model_name="gemini-*", litellm_params={"model": "gemini/gemini-*", "temperature": 0.1}
    ),
]


def _router() -> ModelRouter:
    return ModelRouter(
        ROUTES, default_base_url="https://api.openai.com/v1", default_api_key="sk-global"
    )


def test_unrouted_models_go_to_the_default_upstream_unchanged() -> None:
    target = _router().resolve("gpt-4o-mini")
    assert (target.kind, target.model, target.base_url, target.api_key) == (
        "openai",
        "gpt-4o-mini",
        "https://api.openai.com/v1",
        "sk-global",
    )


def test_exact_and_wildcard_routes() -> None:
    router = _router()
    claude = router.resolve("claude")
    assert (claude.kind, claude.model, claude.provider, claude.api_key) == (
        "litellm",
        "anthropic/claude-sonnet-4-5",
        "anthropic",
        "sk-ant-global",
    )
    wild = router.resolve("anthropic/claude-haiku-4-5")
    assert (wild.model, wild.api_key) == ("anthropic/claude-haiku-4-5", "sk-ant-wild")
    gemini = router.resolve("gemini-2.5-flash")
    assert gemini.model == "gemini/gemini-2.5-flash"
    assert gemini.params == {"temperature": 0.1}
    assert router.public_models == ["claude", "local-llama"]


def test_openai_compatible_routes_skip_litellm() -> None:
    target = _router().resolve("local-llama")
    assert (target.kind, target.model, target.base_url) == (
        "openai",
        "llama3",
        "http://127.0.0.1:8000/v1",
    )


def test_tenant_and_passthrough_credentials_take_precedence() -> None:
    router = _router()
    tenant = TenantUpstream(
        base_url="http://tenant/v1",
        api_key="sk-tenant",
        provider_keys={"anthropic": "sk-ant-tenant"},
    )
    assert router.resolve("gpt-4o", tenant).api_key == "sk-tenant"
    assert router.resolve("gpt-4o", tenant).base_url == "http://tenant/v1"
    assert router.resolve("claude", tenant).api_key == "sk-ant-tenant"
    assert (
        router.resolve("claude", tenant, provider_key="sk-callers-own").api_key == "sk-callers-own"
    )
