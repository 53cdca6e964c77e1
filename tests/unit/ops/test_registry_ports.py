"""The local schema registry keeps its port per state directory, like the broker."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from ops.schema_registry import LocalRegistry
from schemas.errors import BrokerError


def test_the_port_is_chosen_once_and_a_pinned_one_replaces_it(tmp_path: Path) -> None:
    first = LocalRegistry(tmp_path).port()
    assert LocalRegistry(tmp_path).port() == first
    assert json.loads((tmp_path / "port.json").read_text()) == {"port": first}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        pinned = sock.getsockname()[1]
    assert LocalRegistry(tmp_path, port=pinned).port() == pinned
    assert LocalRegistry(tmp_path).port() == pinned  # later starts keep it


def test_bad_ports_and_port_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match=r"1\.\.65535"):
        LocalRegistry(tmp_path, port=0 - 1)
    (tmp_path / "port.json").write_text("{}")
    with pytest.raises(BrokerError, match="unreadable"):
        LocalRegistry(tmp_path).port()


def test_a_start_on_a_taken_port_names_it_before_downloading_anything(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        registry = LocalRegistry(tmp_path / "state", tmp_path / "empty-cache", port=taken)
        with pytest.raises(BrokerError, match=f"port {taken} .* taken"):
            registry.start()
    assert not (tmp_path / "empty-cache").exists()
    assert registry.status() is None
