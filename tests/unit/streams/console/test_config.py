"""The console refuses to start exposed without a token and keeps its secrets out of repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.errors import ConfigError
from streams.config import KafkaSettings, TopicNames
from streams.console.config import ConsoleConfig, is_loopback


def config(**overrides: object) -> ConsoleConfig:
    base: dict[str, object] = {
        "kafka": KafkaSettings("127.0.0.1:9092"),
        "topics": TopicNames(),
        "models_dir": Path("models"),
    }
    return ConsoleConfig(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
     ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("example.org", False)],
)  # fmt: skip
def test_loopback_means_127_0_0_0_8_localhost_and_ipv6_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_non_loopback_console_needs_a_token() -> None:
    with pytest.raises(ConfigError, match=r"refusing to bind 0\.0\.0\.0"):
        config(host="0.0.0.0")
    with pytest.raises(ConfigError, match="at least 16"):
        config(host="0.0.0.0", token="short")
    assert not config(host="0.0.0.0", token="x" * 16).loopback


def test_secrets_stay_out_of_repr() -> None:
    text = repr(config(token="console-token-123456", signing_key=b"fleet-key"))
    assert "console-token-123456" not in text and "fleet-key" not in text
