"""The one typed configuration of MemShadow.

Sources, highest priority first: explicit keyword arguments, environment variables
(prefix ``MEMSHADOW_``; nested groups use ``__``, e.g. ``MEMSHADOW_MEMORY__RECALL_DEADLINE_MS``),
the YAML file given with ``--config``, then the shipped ``defaults.yaml``, then the field
defaults below. Built once by the app factory (or the CLI) and passed down; nothing else
reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from policies.decision import MemoryPolicy

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
_ENV_REFERENCE = "os.environ/"


class ModelRoute(BaseModel):
    """One entry of the model routing table, in LiteLLM's ``model_list`` style.

    ``model_name`` is what clients send (a trailing ``*`` matches any suffix);
    ``litellm_params.model`` is the provider model (``anthropic/claude-…``). Routes whose
    provider is OpenAI-compatible (``openai/…`` or no prefix) with an ``api_base`` go over the
    pooled httpx client; every other provider goes through LiteLLM.
    """

    model_name: str
    litellm_params: dict[str, Any] = Field(default_factory=dict)
    context_window: int | None = None

    @field_validator("litellm_params")
    @classmethod
    def _resolve_env_references(cls, params: dict[str, Any]) -> dict[str, Any]:
        """LiteLLM's ``os.environ/NAME`` convention, resolved here, where config is read."""
        resolved = dict(params)
        for name, value in params.items():
            if isinstance(value, str) and value.startswith(_ENV_REFERENCE):
                variable = value.removeprefix(_ENV_REFERENCE)
                if variable not in os.environ:
                    raise ValueError(f"litellm_params.{name} names ${variable}, which is not set")
                resolved[name] = os.environ[variable]
        return resolved


class MemorySettings(BaseModel):
    """Memory engine knobs; the policies that use them live in ``policies/``."""

    enabled: bool = True
    embedder_model: str | None = Field(
        default=None,
        description="Path or name of a sentence-transformers model; default: bundled MiniLM.",
    )
    max_content_chars: int = 32_000
    prewarm_rows: int = Field(
        default=200_000,
        ge=0,
        description=(
            "At start, load the RAM search structures of the most recently active users, up to"
            " this many memories, so their first recall does not wait for a load (0: off)."
        ),
    )
    max_concurrent_recalls: int = Field(
        default=16,
        ge=1,
        description=(
            "Ceiling of the adaptive limit on recalls in flight; past the limit requests skip"
            " memory at once (degraded: overload)."
        ),
    )
    policy: MemoryPolicy = Field(
        default_factory=MemoryPolicy,
        description="Deployment-wide memory policy; each tenant may override any field.",
    )


class Settings(BaseSettings):
    """Everything MemShadow can be told. Secrets are ``SecretStr`` so they never print."""

    model_config = SettingsConfigDict(
        env_prefix="MEMSHADOW_",
        env_nested_delimiter="__",
        extra="ignore",
        yaml_file=None,
    )

    # --- the public contract (DESIGN.md) -------------------------------------------------
    upstream_base_url: str = "https://api.openai.com/v1"
    upstream_api_key: SecretStr | None = None
    data_dir: Path = Path("./memshadow-data")
    admin_key: SecretStr | None = None
    redis_url: str | None = None

    # --- scale-out ------------------------------------------------------------------------
    store_uri: str | None = Field(
        default=None,
        description=(
            "Where the LanceDB tables (memories, registry) live: a directory or s3://bucket/"
            "prefix that several replicas share. Default: MEMSHADOW_DATA_DIR. The write-ahead"
            " log and the models stay under MEMSHADOW_DATA_DIR, on each replica's disk."
        ),
    )
    redis_timeout_s: float = Field(
        default=0.5,
        gt=0,
        description="Socket timeout of every Redis command; past it the command has failed.",
    )
    store_refresh_s: float = Field(
        default=5.0,
        gt=0,
        description=(
            "With Redis: how often a replica checks a shared table's version for changes it"
            " was not told about (a missed broadcast), and reloads what it caches if so."
        ),
    )
    ingest_lease_ttl_s: float = Field(
        default=5.0,
        gt=0,
        description=(
            "With Redis: how long a tenant's writer lease lives without renewal; a replica"
            " that dies stops applying the tenant's stream, and another takes it over,"
            " within about this long."
        ),
    )
    ingest_wait_s: float = Field(
        default=10.0,
        gt=0,
        description=(
            "With Redis: how long reads that must see what was acknowledged (get, list,"
            " update, forget, export) wait for its writer before answering 503."
        ),
    )

    # --- serving --------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    cors_origins: list[str] = Field(
        default=["*"],
        description=(
            "Browser origins allowed to call the API (CORS), as OpenAI's API allows any: a "
            "browser app authenticates with its bearer key, never with cookies. [] turns "
            "CORS off; a list of origins (https://app.example) restricts it."
        ),
    )

    # --- upstreams ------------------------------------------------------------------------
    upstream_timeout_s: float = Field(default=600.0, gt=0)
    upstream_connect_timeout_s: float = Field(default=10.0, gt=0)
    upstream_max_connections: int = Field(default=512, gt=0)
    model_list: list[ModelRoute] = Field(default_factory=list)

    # --- auth -----------------------------------------------------------------------------
    auth_mode: Literal["keys", "passthrough"] = Field(
        default="keys",
        description=(
            "keys: callers present a MemShadow tenant key. passthrough: callers may present "
            "their own provider key, which is forwarded; the tenant is derived from its hash."
        ),
    )
    key_cache_ttl_s: float = Field(default=30.0, ge=0)

    memory: MemorySettings = Field(default_factory=MemorySettings)

    @property
    def store_root(self) -> str:
        """The LanceDB root: ``store_uri``, else the data directory (the embedded default)."""
        return (self.store_uri or str(self.data_dir)).rstrip("/")

    @field_validator("upstream_base_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            YamlConfigSettingsSource(settings_cls),
            YamlConfigSettingsSource(settings_cls, yaml_file=DEFAULTS_FILE),
        )


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, layering ``config_file`` (YAML) under the environment."""
    if config_file is None:
        return Settings(**overrides)
    if not config_file.is_file():
        raise FileNotFoundError(f"config file not found: {config_file}")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(yaml_file=config_file)

    return FileSettings(**overrides)
