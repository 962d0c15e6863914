"""Settings come from keyword arguments, MEMSHADOW_* variables, a YAML file, then defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import Settings, load_settings


def test_defaults_need_nothing() -> None:
    settings = Settings()
    assert settings.upstream_base_url == "https://api.openai.com/v1"
    assert settings.data_dir == Path("memshadow-data")
    assert settings.redis_url is None and settings.admin_key is None


def test_contract_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEMSHADOW_UPSTREAM_BASE_URL", "http://localhost:11434/v1/")
    monkeypatch.setenv("MEMSHADOW_UPSTREAM_API_KEY", "sk-env")
    monkeypatch.setenv("MEMSHADOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEMSHADOW_ADMIN_KEY", "adm")
    monkeypatch.setenv("MEMSHADOW_REDIS_URL", "redis://127.0.0.1:6390/0")
    monkeypatch.setenv("MEMSHADOW_MEMORY__POLICY__RECALL_DEADLINE_MS", "25")
    settings = load_settings()
    assert settings.upstream_base_url == "http://localhost:11434/v1"
    assert settings.upstream_api_key is not None
    assert settings.upstream_api_key.get_secret_value() == "sk-env"
    assert "sk-env" not in repr(settings)
    assert settings.data_dir == tmp_path
    assert settings.redis_url == "redis://127.0.0.1:6390/0"
    assert settings.memory.policy.recall_deadline_ms == 25


def test_yaml_file_sits_under_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "memshadow.yaml"
    config.write_text(
        "port: 9000\n"
        "upstream_base_url: http://from-yaml/v1\n"
        "model_list:\n"
        "  - model_name: claude\n"
        "    litellm_params: {model: anthropic/claude-sonnet-4-5, api_key: sk-ant}\n"
    )
    monkeypatch.setenv("MEMSHADOW_PORT", "9100")
    settings = load_settings(config)
    assert settings.port == 9100  # environment wins
    assert settings.upstream_base_url == "http://from-yaml/v1"
    assert settings.model_list[0].litellm_params["model"] == "anthropic/claude-sonnet-4-5"
    assert load_settings(config, port=1234).port == 1234  # explicit arguments win over both


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSHADOW_MAX_BODY_BYTES", "-5")
    with pytest.raises(ValueError, match="max_body_bytes"):
        load_settings()


def test_routes_resolve_litellm_env_references(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: claude\n"
        "    litellm_params: {model: anthropic/claude-sonnet-4-5, api_key: os.environ/ANT_KEY}\n"
    )
    with pytest.raises(ValueError, match="ANT_KEY"):
        load_settings(config)
    monkeypatch.setenv("ANT_KEY", "sk-ant-from-env")
    assert load_settings(config).model_list[0].litellm_params["api_key"] == "sk-ant-from-env"
