"""The pure pieces of the overview: URLs shown, histogram estimates, key tallies, durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from proxy.keys import KeyRecord
from proxy.metrics import Metrics
from proxy.overview import bucket_quantile, key_figures, latencies, public_url
from proxy.routes.dashboard import duration

INF = float("inf")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("https://user:pass@host.test:8443/v1?key=secret#frag", "https://host.test:8443/v1"),
        ("redis://:pw@10.0.0.5:6379/0", "redis://10.0.0.5:6379/0"),
        ("http://[::1]:11434/v1", "http://[::1]:11434/v1"),
        ("http://user@host.test:notaport/v1", "http://host.test/v1"),
    ],
)
def test_public_url_drops_credentials_and_query(url: str, shown: str) -> None:
    assert public_url(url) == shown


def test_bucket_quantile_interpolates_like_prometheus() -> None:
    # 10 observations: 4 up to 10 ms, 4 more up to 20 ms, 2 beyond 40 ms.
    buckets = [(0.01, 4.0), (0.02, 8.0), (0.04, 8.0), (INF, 10.0)]
    assert bucket_quantile(0.2, buckets) == pytest.approx(0.005)
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.0125)
    assert bucket_quantile(0.8, buckets) == pytest.approx(0.02)
    assert bucket_quantile(0.95, buckets) == pytest.approx(0.04)  # the last finite bound


def test_latencies_per_kind_from_the_histogram() -> None:
    metrics = Metrics()
    for seconds in (0.003, 0.004, 0.2):
        metrics.upstream_seconds.labels("openai").observe(seconds)
    metrics.upstream_seconds.labels("litellm")  # a label seen but never observed
    [row] = latencies(metrics.upstream_seconds)
    assert (row.kind, row.count, row.mean_ms) == ("openai", 3, 69.0)
    assert row.p50_ms == pytest.approx(3.75)  # 1.5th of 3 in the 0-5 ms bucket
    assert row.p95_ms == pytest.approx(227.5)  # 0.85 of the way through 100-250 ms


def _key(
    tenant: str, hint: str, *, expires: timedelta | None = None, revoked: bool = False
) -> KeyRecord:
    now = datetime.now(UTC)
    return KeyRecord(
        id=f"key_{hint}", tenant=tenant, key_hash="0" * 64, hint=hint, created_at=now,
        expires_at=now + expires if expires is not None else None,
        revoked_at=now if revoked else None,
    )  # fmt: skip


def test_keys_are_tallied_per_tenant_with_hints_of_active_ones_only() -> None:
    records = [
        _key("acme", "msk-aaaa…1111"),
        _key("acme", "msk-bbbb…2222", expires=timedelta(days=3)),
        _key("acme", "msk-cccc…3333", expires=timedelta(days=-1)),
        _key("acme", "msk-dddd…4444", expires=timedelta(days=-1), revoked=True),
        _key("beta", "msk-eeee…5555", revoked=True),
    ]
    figures = key_figures(records, datetime.now(UTC))
    assert figures["acme"].model_dump() == {
        "active": 2, "revoked": 1, "expired": 1,
        "active_hints": ["msk-aaaa…1111", "msk-bbbb…2222"],
    }  # fmt: skip
    assert figures["beta"].model_dump() == {
        "active": 0, "revoked": 1, "expired": 0, "active_hints": []
    }  # fmt: skip


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "unknown"),
        (42.7, "42 s"),
        (185, "3 min 5 s"),
        (7500, "2 h 5 min"),
        (90061, "1 d 1 h"),
    ],
)
def test_durations_read_at_a_glance(seconds: float | None, shown: str) -> None:
    assert duration(seconds) == shown
