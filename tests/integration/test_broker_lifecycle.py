"""The local dev broker's life cycle, each test with its OWN broker (not the session one).

Covers the user path (`sentinel broker start|status|stop` as subprocesses), a restart that works
offline from the jar cache with no Maven on PATH, and a start while port 9092 is taken.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ops.kafka_broker import DEFAULT_CACHE_DIR, LocalBroker, ensure_classpath

pytestmark = pytest.mark.integration

SENTINEL = str(Path(sys.executable).with_name("sentinel"))
# The jar cache the user (and the session fixture) already has: no second download.
CACHE_DIR = Path(os.environ.get("SENTINEL_KAFKA_CACHE") or DEFAULT_CACHE_DIR)


def _cli(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``sentinel broker ...`` as a user would, against the local broker only."""
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["SENTINEL_KAFKA_CACHE"] = str(CACHE_DIR)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [SENTINEL, "broker", *args], capture_output=True, text=True, env=env, timeout=300
    )


def _create_topic(bootstrap: str) -> str:
    topic = f"lifecycle-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the request
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    futures[topic].result(timeout=30)
    return topic


def _produce(bootstrap: str, topic: str, value: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=b"card-1", value=value.encode())
    assert producer.flush(30) == 0


def _read_first(bootstrap: str, topic: str) -> tuple[bytes | None, bytes | None]:
    """The key and value of the first record of ``topic`` (fails if none arrives)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "lifecycle", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    try:
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is not None:
                assert msg.error() is None, msg.error()
                return msg.key(), msg.value()
        raise AssertionError(f"no record arrived on {topic}")
    finally:
        consumer.close()


def _round_trip(bootstrap: str) -> None:
    """A plain confluent-kafka client can produce to and consume from ``bootstrap``."""
    topic = _create_topic(bootstrap)
    _produce(bootstrap, topic, "hello")
    assert _read_first(bootstrap, topic) == (b"card-1", b"hello")


def _java_running_with(config_file: str) -> list[int]:
    """Pids of live processes whose command line names ``config_file`` (zombies have none)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):  # the process exited while we looked
                if config_file.encode() in (proc / "cmdline").read_bytes().split(b"\0"):
                    pids.append(int(proc.name))
    return pids


def _running(pid: int) -> bool:
    """True while any thread of ``pid`` is neither a zombie nor dead."""
    states = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            states.append((task / "stat").read_text().rsplit(") ", 1)[-1][:1])
    return any(state not in ("Z", "X") for state in states)


def test_cli_start_status_round_trip_stop(tmp_path: Path) -> None:
    broker_dir = tmp_path / "broker"
    start = _cli("start", "--broker-dir", str(broker_dir))
    assert start.returncode == 0, start.stderr
    info = LocalBroker(broker_dir, CACHE_DIR).status()
    assert info is not None
    try:
        assert f"Kafka broker running at {info.bootstrap} (pid {info.pid}," in start.stdout
        assert f"export KAFKA_BOOTSTRAP_SERVERS={info.bootstrap}" in start.stdout

        status = _cli("status", "--broker-dir", str(broker_dir))
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith(f"running: {info.bootstrap} (pid {info.pid},")

        _round_trip(info.bootstrap)

        stop = _cli("stop", "--broker-dir", str(broker_dir))
        assert stop.returncode == 0, stop.stderr
        assert stop.stdout.strip() == "broker stopped"

        after = _cli("status", "--broker-dir", str(broker_dir))
        assert after.returncode == 1
        assert "no local broker is running" in after.stdout
        assert LocalBroker(broker_dir, CACHE_DIR).status() is None
        assert not _running(info.pid)
        assert _java_running_with(info.config_file) == []
    finally:
        LocalBroker(broker_dir, CACHE_DIR).stop()


def test_restart_works_offline_from_the_jar_cache_and_keeps_data(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path / "broker", CACHE_DIR)
    first = broker.start()
    try:
        topic = _create_topic(first.bootstrap)
        _produce(first.bootstrap, topic, "kept across restarts")
    finally:
        broker.stop()
    assert ensure_classpath(CACHE_DIR) == (CACHE_DIR / "libs", False)

    java = shutil.which("java")
    assert java is not None
    no_maven = tmp_path / "bin"
    no_maven.mkdir()
    (no_maven / "java").symlink_to(java)
    start = _cli("start", "--broker-dir", str(broker.state_dir), path=str(no_maven))
    try:
        assert start.returncode == 0, start.stderr
        assert "fetched Kafka jars" not in start.stdout
        second = broker.status()
        assert second is not None
        assert _read_first(second.bootstrap, topic) == (b"card-1", b"kept across restarts")
        assert second.bootstrap == first.bootstrap  # clients of the first start reconnect
    finally:
        broker.stop()


def test_start_while_the_default_port_is_taken(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        # If something already listens on 9092 (a user's own broker), that is the case under test.
        with contextlib.suppress(OSError):
            squatter.bind(("127.0.0.1", 9092))
            squatter.listen()
        broker = LocalBroker(tmp_path / "broker", CACHE_DIR)
        info = broker.start()
        try:
            assert not info.bootstrap.endswith(":9092")
            _round_trip(info.bootstrap)
        finally:
            broker.stop()
