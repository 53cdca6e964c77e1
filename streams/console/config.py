"""The console's settings: validated once, frozen, secrets kept out of ``repr``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from schemas.errors import ConfigError
from streams.config import KafkaSettings, TopicNames
from streams.registry import RegistrySettings

MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ::1 (not for 0.0.0.0)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ConsoleConfig:
    """Everything ``sentinel console`` needs; ConfigError names the first bad value.

    ``token`` guards mutations: required (>= 16 characters) whenever ``host`` is not loopback,
    honoured on loopback too when set. ``signing_key`` (named ``key_id``) signs control commands on
    the server; it never leaves this process.
    """

    kafka: KafkaSettings
    topics: TopicNames
    models_dir: Path
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = field(default=None, repr=False)
    signing_key: bytes | None = field(default=None, repr=False)
    key_id: str | None = None
    issuer: str = "sentinel-console"
    scrape_urls: tuple[str, ...] = ("http://127.0.0.1:9464/metrics",)
    refresh_s: float = 1.0
    control_timeout_s: float = 15.0
    replay_csv: Path | None = None
    schema_registry: RegistrySettings | None = None  # to read Confluent-framed decisions

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"console port must be 0-65535, got {self.port}")
        if not is_loopback(self.host) and not self.token:
            raise ConfigError(
                f"refusing to bind {self.host}: a non-loopback console needs a token for "
                "mutations; set SENTINEL_CONSOLE_TOKEN (or bind 127.0.0.1)"
            )
        if self.token is not None and len(self.token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"SENTINEL_CONSOLE_TOKEN must be at least {MIN_TOKEN_CHARS} chars")
        for url in self.scrape_urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"scrape target {url!r} is not an http(s) URL")
        if not 0.2 <= self.refresh_s <= 60:
            raise ConfigError(f"refresh must be 0.2-60 s, got {self.refresh_s}")
        if not self.control_timeout_s > 0:
            raise ConfigError(f"control timeout must be > 0 s, got {self.control_timeout_s}")

    @property
    def loopback(self) -> bool:
        """Bound to loopback only."""
        return is_loopback(self.host)
