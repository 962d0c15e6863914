"""Model routing: which upstream serves a model name, with which credentials.

The table is LiteLLM's ``model_list`` shape (see :class:`config.ModelRoute`). A model that
matches no route goes to the default OpenAI-compatible upstream unchanged, which is what an
app that only changed its base URL expects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from config import ModelRoute
from proxy.keys import TenantUpstream

# Providers that speak OpenAI's wire format; these skip LiteLLM and go over plain httpx.
OPENAI_COMPATIBLE = frozenset({"openai", "text-completion-openai", "hosted_vllm", ""})


@dataclass(frozen=True, slots=True)
class Target:
    """Where one request goes."""

    kind: Literal["openai", "litellm"]
    model: str
    provider: str
    base_url: str | None
    api_key: str | None
    params: Mapping[str, Any] = field(default_factory=dict)
    context_window: int | None = None


def _split_provider(model: str) -> tuple[str, str]:
    provider, sep, rest = model.partition("/")
    return (provider, rest) if sep else ("", model)


@dataclass(frozen=True, slots=True)
class _Compiled:
    route: ModelRoute
    prefix: str
    wildcard: bool


class ModelRouter:
    def __init__(
        self,
        routes: Sequence[ModelRoute],
        *,
        default_base_url: str,
        default_api_key: str | None,
    ) -> None:
        self._exact = {r.model_name: r for r in routes if not r.model_name.endswith("*")}
        # Longest prefix first, so "anthropic/claude-*" wins over "anthropic/*".
        self._wildcards = sorted(
            (_Compiled(r, r.model_name[:-1], True) for r in routes if r.model_name.endswith("*")),
            key=lambda c: -len(c.prefix),
        )
        self._default_base_url = default_base_url
        self._default_api_key = default_api_key

    @property
    def public_models(self) -> list[str]:
        return sorted(self._exact)

    def resolve(
        self, model: str, tenant: TenantUpstream | None = None, provider_key: str | None = None
    ) -> Target:
        """Pick the target for ``model``; tenant credentials override the global ones."""
        tenant = tenant or TenantUpstream()
        route, suffix = self._match(model)
        if route is None:
            return Target(
                kind="openai",
                model=model,
                provider="openai",
                base_url=tenant.base_url or self._default_base_url,
                api_key=provider_key or tenant.api_key or self._default_api_key,
            )
        params = dict(route.litellm_params)
        upstream_model = str(params.pop("model", model)).replace("*", suffix)
        api_base = params.pop("api_base", None)
        route_key = params.pop("api_key", None)
        provider, bare_model = _split_provider(upstream_model)
        if provider in OPENAI_COMPATIBLE:
            return Target(
                kind="openai",
                model=bare_model,
                provider="openai",
                base_url=str(api_base or tenant.base_url or self._default_base_url).rstrip("/"),
                api_key=provider_key or tenant.api_key or route_key or self._default_api_key,
                context_window=route.context_window,
            )
        return Target(
            kind="litellm",
            model=upstream_model,
            provider=provider,
            base_url=api_base,
            api_key=provider_key or tenant.provider_keys.get(provider) or route_key,
            params=params,
            context_window=route.context_window,
        )

    def _match(self, model: str) -> tuple[ModelRoute | None, str]:
        exact = self._exact.get(model)
        if exact is not None:
            return exact, ""
        for compiled in self._wildcards:
            if model.startswith(compiled.prefix):
                return compiled.route, model[len(compiled.prefix) :]
        return None, ""
