"""Settings: every one is documented, and the sources layer as promised."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from meterd.settings import Settings, load_settings

DOCS = Path(__file__).parents[2] / "docs" / "settings.md"


def _names(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from _names(kind, f"{prefix}{name}.")
        else:
            yield prefix + name


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text()
    missing = [name for name in _names(Settings) if f"`{name}`" not in text]
    assert not missing, f"add these settings to docs/settings.md: {missing}"


def test_file_env_and_flags_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "meterd.yaml"
    config.write_text("server:\n  port: 9000\n  host: 127.0.0.2\ningest:\n  dedup_window: P7D\n")
    monkeypatch.setenv("METERD_SERVER__PORT", "9100")
    monkeypatch.setenv("METERD_API_KEYS", "k1, k2")
    settings = load_settings(config, server={"host": "127.0.0.3", "port": None})
    assert settings.server.port == 9100  # env beats the file
    assert settings.server.host == "127.0.0.3"  # flags beat everything
    assert settings.ingest.dedup_window == timedelta(days=7)
    assert settings.api_keys == ["k1", "k2"]


def test_unknown_settings_are_rejected(tmp_path: Path) -> None:
    config = tmp_path / "meterd.yaml"
    config.write_text("server:\n  prot: 9000\n")
    with pytest.raises(ValueError, match="prot"):
        load_settings(config)


@pytest.mark.parametrize(("text", "seconds"), [("0.25", 0.25), ("2", 2.0), ("PT0.5S", 0.5), ("P1D", 86_400.0)])
def test_durations_take_seconds_or_iso_8601(monkeypatch: pytest.MonkeyPatch, text: str, seconds: float) -> None:
    monkeypatch.setenv("METERD_SINK__MAX_WAIT", text)
    assert load_settings(None).sink.max_wait.total_seconds() == seconds
