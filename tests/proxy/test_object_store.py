"""Two replicas whose shared store is S3 (moto's S3 server on loopback), and one Redis."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from proxy.keys import TenantRegistry
from tests.conftest import RedisServer, build_app, free_port, in_process
from tests.proxy.test_memories_api import eventually
from tests.proxy.test_scale_out import TEA, TEA_QUERY, _found, _store, replica_settings

pytestmark = pytest.mark.usefixtures("upstream")


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An S3 endpoint on loopback, reached through the usual AWS environment variables."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="mem")
    yield "s3://mem/memshadow"
    server.stop()


async def test_replicas_share_tenants_and_memories_on_s3(
    tmp_path: Path, redis_server: RedisServer, s3_bucket: str
) -> None:
    registry = TenantRegistry(f"{s3_bucket}/registry")
    key, _ = registry.create_key("acme")
    async with AsyncExitStack() as stack:
        a, b = [
            await stack.enter_async_context(
                in_process(
                    build_app(
                        replica_settings(tmp_path, name, redis_server.url).model_copy(
                            update={"store_uri": s3_bucket}
                        )
                    ),
                    key,
                )
            )
            for name in ("a", "b")
        ]
        tea = await _store(a, TEA)
        await eventually(lambda: _found(b, TEA_QUERY, TEA), seconds=20)
        assert (await a.delete(f"/v1/memories/{tea}")).status_code == 200
        assert not await _found(b, TEA_QUERY, TEA)
    assert not any(tmp_path.glob("*/registry")) and not any(tmp_path.glob("*/memory/lancedb"))
