"""The local broker's address is chosen once per state directory and survives restarts."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from ops.kafka_broker import LocalBroker
from schemas.errors import BrokerError


def test_ports_are_chosen_once_and_reused(tmp_path: Path) -> None:
    first = LocalBroker(tmp_path).ports()
    assert LocalBroker(tmp_path).ports() == first
    assert first[0] != first[1]
    stored = json.loads((tmp_path / "ports.json").read_text())
    assert (stored["port"], stored["controller_port"]) == first


def test_a_pinned_port_replaces_the_stored_one_and_sticks(tmp_path: Path) -> None:
    _, controller = LocalBroker(tmp_path).ports()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        pinned = sock.getsockname()[1]
    assert LocalBroker(tmp_path, port=pinned).ports() == (pinned, controller)
    assert LocalBroker(tmp_path).ports() == (pinned, controller)  # later starts keep it


def test_a_pinned_port_equal_to_the_controller_port_moves_the_controller(tmp_path: Path) -> None:
    _, controller = LocalBroker(tmp_path).ports()
    port, new_controller = LocalBroker(tmp_path, port=controller).ports()
    assert port == controller and new_controller != controller


def test_an_invalid_port_or_ports_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match=r"1\.\.65535"):
        LocalBroker(tmp_path, port=70000)
    (tmp_path / "ports.json").write_text("not json")
    with pytest.raises(BrokerError, match="unreadable"):
        LocalBroker(tmp_path).ports()


def test_a_start_on_a_taken_stored_port_names_it(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        broker = LocalBroker(tmp_path, port=taken)
        with pytest.raises(BrokerError, match=f"port {taken} .* taken"):
            broker.start()
