"""The ``memshadow`` command: ``serve``, ``keys create|list|revoke``, ``tenants delete``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table

from config import Settings, load_settings
from proxy.cli_memories import DEFAULT_URL, UrlOption, memories_app
from proxy.keys import MAX_KEY_LIFETIME_DAYS, RegistryError, TenantRegistry, registry_uri
from proxy.memory_client import Failure, MemoryClient

app = typer.Typer(no_args_is_help=True, help="MemShadow: an OpenAI-compatible proxy with memory.")
keys_app = typer.Typer(no_args_is_help=True, help="Issue, list and revoke tenant API keys.")
app.add_typer(keys_app, name="keys")
app.add_typer(memories_app, name="memories")
tenants_app = typer.Typer(no_args_is_help=True, help="Offboard tenants of a running MemShadow.")
app.add_typer(tenants_app, name="tenants")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="YAML settings file (under MEMSHADOW_* env).")
]
stderr = Console(stderr=True)


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except (FileNotFoundError, ValueError) as exc:
        stderr.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _registry(settings: Settings) -> TenantRegistry:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return TenantRegistry(registry_uri(settings))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080).")] = None,
    config: ConfigOption = None,
    access_log: Annotated[bool, typer.Option(help="Log every request line.")] = False,
) -> None:
    """Run the proxy on its embedded defaults (LanceDB under MEMSHADOW_DATA_DIR, no Redis)."""
    import uvicorn

    from proxy.app import create_app

    settings = _settings(config, host=host, port=port)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every upstream call at INFO: a formatter run per request on the hot path.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=access_log,
        server_header=False,
    )


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name; created if new.")],
    expires_in_days: Annotated[
        float | None,
        typer.Option(min=0.0, max=MAX_KEY_LIFETIME_DAYS, help="Expire after N days (> 0)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Issue a key. It is printed once, as the last line of stdout, and stored only as a hash."""
    if expires_in_days == 0:  # typer's min is inclusive; a key that expires now is no key
        raise typer.BadParameter("must be more than 0", param_hint="--expires-in-days")
    registry = _registry(_settings(config))
    expires_at = (
        datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days is not None else None
    )
    try:
        key, record = registry.create_key(tenant, expires_at=expires_at)
    except RegistryError as exc:
        stderr.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    stderr.print(
        f"Created key {record.id} for tenant {record.tenant}. Store it now: it is not shown again."
    )
    typer.echo(key)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    config: ConfigOption = None,
) -> None:
    """List keys (ids and hints, never the keys)."""
    records = _registry(_settings(config)).list_keys(tenant)
    table = Table("tenant", "created", "expires", "revoked")
    # Ids and hints are copied into other commands: never wrap them.
    table.add_column("id", no_wrap=True, min_width=20)
    table.add_column("hint", no_wrap=True)
    when = "%Y-%m-%d %H:%M"
    for r in records:
        table.add_row(
            r.tenant,
            r.created_at.strftime(when),
            r.expires_at.strftime(when) if r.expires_at else "-",
            r.revoked_at.strftime(when) if r.revoked_at else "-",
            r.id,
            r.hint,
        )
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, as shown by 'keys list'.")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key: with Redis every replica is told at once, else within the key cache TTL."""
    settings = _settings(config)
    try:
        record = _registry(settings).revoke_key(key_id)
    except RegistryError as exc:
        stderr.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    typer.echo(f"revoked {record.id} ({record.tenant})")
    if settings.redis_url is not None:
        _tell_replicas(settings)


def _tell_replicas(settings: Settings) -> None:
    from redis.exceptions import RedisError

    from proxy.auth import KEYS_CHANNEL
    from proxy.shared_state.redis import publish_once

    try:
        publish_once(str(settings.redis_url), KEYS_CHANNEL, b"invalidate")
    except (RedisError, OSError) as exc:
        stderr.print(
            f"[yellow]warning:[/yellow] replicas not told ({exc}); they stop accepting the key"
            f" within {settings.key_cache_ttl_s:g} s"
        )


@tenants_app.command("delete")
def tenants_delete(
    name: Annotated[str, typer.Argument(help="The tenant to delete.")],
    admin_key: Annotated[
        str,
        typer.Option("--admin-key", envvar="MEMSHADOW_ADMIN_KEY", help="The server's admin key."),
    ],
    url: UrlOption = DEFAULT_URL,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a tenant: its keys, its memories and what feedback taught about them.

    Done by the running server (DELETE /admin/tenants/NAME), for every replica at once.
    """
    if not yes:
        typer.confirm(f"Delete tenant {name!r}, its keys and every memory it stored?", abort=True)
    try:
        with MemoryClient(url, admin_key) as client:
            deleted = client.call("DELETE", f"/admin/tenants/{quote(name, safe='')}")
    except Failure as failure:
        stderr.print(f"[red]error:[/red] {failure}")
        raise typer.Exit(1) from None
    typer.echo(
        f"deleted tenant {name}: keys revoked {deleted['keys_revoked']}, "
        f"memories deleted {deleted['memories_deleted']}"
    )
