"""The memshadow command: keys create/list/revoke against the embedded store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proxy.auth import Authenticator
from proxy.cli import app
from proxy.errors import AuthenticationFailed
from proxy.keys import TenantRegistry
from proxy.metrics import Metrics
from proxy.shared_state import RedisState
from tests.conftest import RedisServer


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEMSHADOW_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


async def test_key_lifecycle(data_dir: Path) -> None:
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--tenant", "acme"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("msk-")

    registry = TenantRegistry(str(data_dir / "registry"))
    assert (await Authenticator(registry).authenticate(f"Bearer {key}")).tenant.id == "acme"

    listed = runner.invoke(app, ["keys", "list"], terminal_width=200)
    assert "acme" in listed.stdout and key not in listed.stdout
    key_id = registry.list_keys()[0].id
    assert key_id in listed.stdout

    revoked = runner.invoke(app, ["keys", "revoke", key_id])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    with pytest.raises(AuthenticationFailed):
        await Authenticator(registry).authenticate(f"Bearer {key}")


def test_bad_input_is_a_clear_error(data_dir: Path) -> None:
    runner = CliRunner()
    bad_name = runner.invoke(app, ["keys", "create", "--tenant", "Not Valid"])
    assert bad_name.exit_code == 2 and "tenant names" in bad_name.stderr
    unknown = runner.invoke(app, ["keys", "revoke", "key_nope"])
    assert unknown.exit_code == 2 and "no key" in unknown.stderr
    missing = runner.invoke(app, ["serve", "--config", str(data_dir / "missing.yaml")])
    assert missing.exit_code == 2 and "config file not found" in missing.stderr
    for days in ("0", "-1", "1e300"):  # 0 once issued a key that never expired
        lifetime = ["keys", "create", "--tenant", "acme", "--expires-in-days", days]
        refused = runner.invoke(app, lifetime)
        assert refused.exit_code == 2 and "expires-in-days" in refused.stderr, refused.output
    assert not TenantRegistry(str(data_dir / "registry")).list_keys()


async def test_revoke_tells_every_replica_through_redis(
    data_dir: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMSHADOW_REDIS_URL", redis_server.url)
    runner = CliRunner()
    key = runner.invoke(app, ["keys", "create", "--tenant", "acme"]).stdout.strip().split()[-1]
    registry = TenantRegistry(str(data_dir / "registry"))
    shared = RedisState(redis_server.url, Metrics())
    replica = Authenticator(registry, ttl_s=300, shared=shared)
    await shared.start()
    try:
        while not shared.healthy:
            await asyncio.sleep(0.02)
        await replica.authenticate(f"Bearer {key}")  # cached for 300 s
        revoked = runner.invoke(app, ["keys", "revoke", registry.list_keys()[0].id])
        assert revoked.exit_code == 0 and "warning" not in revoked.output
        for _ in range(100):
            try:
                await replica.authenticate(f"Bearer {key}")
            except AuthenticationFailed:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the replica kept accepting the revoked key")
    finally:
        await shared.aclose()
