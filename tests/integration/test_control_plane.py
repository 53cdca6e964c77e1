"""The control plane against a real broker: instances converge, refuse alike, replay, sign.

Several :class:`ControlPlane` instances run in this process on the same uniquely named control
and control-events topics, as several scorer processes would; ``sentinel control`` is run
in-process against them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from schemas.manifest import read_manifest
from streams.cli import main
from streams.config import KafkaSettings, TopicNames
from streams.control.commands import new_command
from streams.control.plane import ControlPlane, ModelsDirLoader
from streams.control.state import BundleLoader
from streams.metrics import ScorerMetrics
from streams.model.loader import ModelBundle
from tests.fixtures.kafka import TopicFactory

pytestmark = pytest.mark.integration

KEY = b"fleet-shared-key"
Events = list[dict[str, Any]]


def read_events(bootstrap: str, topic: str, until: Callable[[Events], bool]) -> Events:
    """JSON events of ``topic`` from the beginning, read until ``until(events)`` (or 60 s)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    events: Events = []
    deadline = time.monotonic() + 60
    try:
        while not until(events) and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.2):
                if message.error() is None:
                    events.append(json.loads(message.value() or b""))
    finally:
        consumer.close()
    return events


@pytest.fixture
def topics(new_topic: TopicFactory) -> TopicNames:
    return TopicNames(
        control=new_topic("control", config={"retention.ms": "-1"}),
        control_events=new_topic("control-events"),
    )


class Fleet:
    """Control planes started in this process, closed at the end of the test."""

    def __init__(self, bootstrap: str, topics: TopicNames, models_dir: Path) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.models_dir = models_dir
        self.planes: list[ControlPlane] = []
        self.metrics: dict[str, ScorerMetrics] = {}

    def start(
        self,
        scorer_id: str,
        key: bytes | None = None,
        loader: BundleLoader | None = None,
        stats: dict[str, int] | None = None,
    ) -> ControlPlane:
        metrics = ScorerMetrics(CollectorRegistry())
        plane = ControlPlane(
            KafkaSettings(self.bootstrap),
            self.topics,
            scorer_id,
            self.models_dir,
            metrics,
            keys=None if key is None else {"default": key},
            heartbeat_interval_s=0.5,
            stats=lambda: dict(stats or {}),
            loader=loader,
        )
        plane.start()
        self.planes.append(plane)
        self.metrics[scorer_id] = metrics
        return plane

    def publish(self, value: bytes) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap})
        producer.produce(self.topics.control, value)
        assert producer.flush(15) == 0

    def command(self, name: str, key: bytes | None = None, **args: Any) -> str:
        command = new_command(name, args, "tests@ci", signing_key=key)
        self.publish(command.encode())
        return command.command_id

    def events(self, until: Callable[[Events], bool]) -> Events:
        """Events on control-events from the beginning, read until ``until(events)`` holds."""
        return read_events(self.bootstrap, self.topics.control_events, until)

    def acks(self, command_id: str, scorers: int) -> dict[str, dict[str, Any]]:
        """The acks of ``command_id`` by scorer id, once ``scorers`` instances answered."""

        def found(events: Events) -> dict[str, dict[str, Any]]:
            return {
                e["scorer_id"]: e
                for e in events
                if e["type"] == "ack" and e["command_id"] == command_id
            }

        acks = found(self.events(until=lambda events: len(found(events)) >= scorers))
        assert len(acks) >= scorers, f"only {sorted(acks)} acked {command_id}"
        return acks

    def close(self) -> None:
        for plane in self.planes:
            plane.close()


@pytest.fixture
def fleet(
    kafka_bootstrap: str, topics: TopicNames, models_dir: Path, second_bundle: Any
) -> Iterator[Fleet]:
    running = Fleet(kafka_bootstrap, topics, models_dir)
    yield running
    running.close()


def acks_of(offsets: range, scorers: int) -> Callable[[Events], bool]:
    """True once each offset in ``offsets`` has been acked by ``scorers`` instances."""

    def done(events: Events) -> bool:
        acked = {(e["offset"], e["scorer_id"]) for e in events if e["type"] == "ack"}
        return all(sum(o == offset for o, _ in acked) >= scorers for offset in offsets)

    return done


def sha256_of(models_dir: Path, version: str) -> str:
    """The model sha256 a command naming ``version`` carries (what the CLI resolves)."""
    return read_manifest(models_dir, version).onnx.sha256


def setup_args(models_dir: Path, version: str) -> dict[str, Any]:
    """The arguments of ``ab_setup`` of ``version`` as found in ``models_dir``."""
    return {"candidate_version": version, "model_sha256": sha256_of(models_dir, version)}


def summary(models_dir: Path, b: str | None, split: int, applied: int) -> dict[str, object]:
    """The state summary of an instance serving v1 as A and ``b`` as B, as acks carry it."""
    return {
        "a_version": "v1",
        "a_sha256": sha256_of(models_dir, "v1"),
        "b_version": b,
        "b_sha256": None if b is None else sha256_of(models_dir, b),
        "split_percent": split,
        "applied_offset": applied,
    }


def split_30(fleet: Fleet) -> list[dict[str, Any]]:
    fleet.command("ab_setup", **setup_args(fleet.models_dir, "v2"))
    last = fleet.command("ab_split", percent=30)
    return list(fleet.acks(last, scorers=2).values())


def sample(metrics: ScorerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_two_instances_converge_on_ab_setup_and_split(fleet: Fleet) -> None:
    first, second = fleet.start("scorer-1"), fleet.start("scorer-2")
    assert first.state.summary()["a_version"] == "v1"
    acks = split_30(fleet)
    # Offset 0 is the genesis reload the first instance published (a brand-new log).
    expected = summary(fleet.models_dir, "v2", split=30, applied=2)
    assert [(a["result"], a["replayed"], a["state"]) for a in acks] == [("ok", False, expected)] * 2
    assert first.state.summary() == second.state.summary() == expected
    for metrics in fleet.metrics.values():
        assert sample(metrics, "sentinel_ab_split_percent") == 30
        model_b = first.state.b
        assert model_b is not None
        info = {"variant": "B", "version": "v2", "sha256": model_b.sha256}
        assert sample(metrics, "sentinel_model_info", **info) == 1
        ok = {"command": "ab_split", "result": "ok"}
        assert sample(metrics, "sentinel_control_commands_total", **ok) == 1


def broken_bundles(models_dir: Path, into: Path) -> Path:
    """A copy of ``models_dir`` plus bundles failing load_bundle's checks: ``v5`` has a tampered
    model.onnx (sha256), ``v3`` takes 10 features (shape), ``v4`` misses its parity sample."""
    from onnx import TensorProto, helper

    shutil.copytree(models_dir, into)
    for version in ("v3", "v4", "v5"):
        shutil.copytree(into / "v2", into / version)
        manifest = json.loads((into / "v2" / "manifest.json").read_text()) | {"version": version}
        if version == "v3":
            narrow = helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 10])
            out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 10])
            node = helper.make_node("Identity", ["features"], ["probabilities"])
            graph = helper.make_graph([node], "narrow", [narrow], [out])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
            model.ir_version = 8
            payload = model.SerializeToString()
            (into / version / "model.onnx").write_bytes(payload)
            manifest["onnx"]["sha256"] = hashlib.sha256(payload).hexdigest()
        if version == "v4":
            sample = manifest["parity_sample"]
            sample["probabilities"] = [min(p + 0.1, 1.0) for p in sample["probabilities"]]
        if version == "v5":
            with open(into / version / "model.onnx", "ab") as model_file:
                model_file.write(b"tampered")
        (into / version / "manifest.json").write_text(json.dumps(manifest))
    return into


def test_every_kind_of_bad_command_is_refused_alike_and_serving_is_unchanged(
    fleet: Fleet, tmp_path: Path
) -> None:
    loader = ModelsDirLoader(broken_bundles(fleet.models_dir, tmp_path / "broken"))
    first = fleet.start("scorer-1", loader=loader)
    second = fleet.start("scorer-2", loader=loader)
    split_30(fleet)
    serving_b = first.state.b
    template = new_command("status", {}, "tests@ci").to_json_dict()
    bad: list[tuple[bytes, str]] = [(b"{not json", "unparseable JSON")]
    wrong: list[tuple[dict[str, object], str]] = [
        ({"command": "reboot"}, "unknown command 'reboot'"),
        (
            {"command": "ab_setup"},
            "ab_setup: missing argument(s): candidate_version, model_sha256",
        ),
        ({"command": "promote", "args": {"now": True}}, "promote: unexpected argument(s): now"),
        (
            {"command": "ab_split", "args": {"percent": 101}},
            "percent must be within 0-100, got 101",
        ),
        (
            {"command": "ab_split", "args": {"percent": 12.5}},
            "percent must be an integer, got 12.5",
        ),
    ]
    for fields, reason in wrong:
        bad.append((json.dumps(template | fields).encode(), reason))
    for version, reason in [
        ("v1", "ab_setup: v1 is already serving as A"),
        ("v7", "model bundle v7 refused: files check failed"),
        ("v5", "model bundle v5 refused: sha256 check failed"),
        ("v3", "model bundle v3 refused: input shape check failed"),
        ("v4", "model bundle v4 refused: parity check failed"),
    ]:
        # The sha256 the CLI would resolve from the (broken) bundle's manifest; v7 has none.
        sha = "0" * 64 if version == "v7" else sha256_of(loader.models_dir, version)
        args = {"candidate_version": version, "model_sha256": sha}
        bad.append((new_command("ab_setup", args, "t").encode(), reason))
    for value, _ in bad:
        fleet.publish(value)

    offsets = range(3, 3 + len(bad))
    events = fleet.events(until=acks_of(offsets, 2))
    acks = [e for e in events if e["type"] == "ack" and e["offset"] in offsets]
    for offset, (_, reason) in zip(offsets, bad, strict=True):
        answers = {a["scorer_id"]: a for a in acks if a["offset"] == offset}
        assert answers["scorer-1"]["result"] == answers["scorer-2"]["result"] == "refused"
        assert answers["scorer-1"]["reason"] == answers["scorer-2"]["reason"]
        assert reason in answers["scorer-1"]["reason"]
    expected = summary(fleet.models_dir, "v2", split=30, applied=2)
    assert first.state.summary() == second.state.summary() == expected
    assert first.state.b is serving_b  # the candidate in service was kept, not reloaded
    metrics = fleet.metrics["scorer-1"]
    labels = {"command": "ab_setup", "result": "refused"}
    assert sample(metrics, "sentinel_control_commands_total", **labels) == 6
    labels = {"command": "invalid", "result": "refused"}
    assert sample(metrics, "sentinel_control_commands_total", **labels) == 2

    fleet.acks(fleet.command("abort"), scorers=2)
    no_candidate = fleet.acks(fleet.command("promote"), scorers=2)
    assert {a["reason"] for a in no_candidate.values()} == {
        "promote: no candidate B is set up (run ab_setup first)"
    }
    assert first.state.summary()["b_version"] is None


def test_an_instance_started_later_replays_to_the_fleet_state(fleet: Fleet) -> None:
    first, second = fleet.start("scorer-1"), fleet.start("scorer-2")
    split_30(fleet)
    fleet.publish(b"garbage")
    fleet.acks(fleet.command("status"), scorers=2)
    late = fleet.start("scorer-3")  # start() returns only after the replay
    assert late.state.summary() == first.state.summary() == second.state.summary()
    assert late.state.summary()["applied_offset"] == 4
    events = fleet.events(until=acks_of(range(5), 3))
    replayed = [e for e in events if e["type"] == "ack" and e["scorer_id"] == "scorer-3"]
    assert [(e["offset"], e["result"], e["replayed"]) for e in replayed] == [
        (0, "ok", True),  # the genesis reload
        (1, "ok", True),
        (2, "ok", True),
        (3, "refused", True),
        (4, "ok", True),
    ]


def test_with_a_key_unsigned_commands_are_refused_and_signed_ones_applied(fleet: Fleet) -> None:
    first, second = fleet.start("scorer-1", key=KEY), fleet.start("scorer-2", key=KEY)
    v2 = setup_args(fleet.models_dir, "v2")
    unsigned = fleet.command("ab_setup", **v2)
    for ack in fleet.acks(unsigned, scorers=2).values():
        assert ack["result"] == "refused"
        assert ack["reason"] == "unsigned command: a signing key is configured"
    forged = fleet.command("ab_setup", key=b"not-the-key", **v2)
    assert {a["reason"] for a in fleet.acks(forged, scorers=2).values()} == {
        "bad signature: does not match the command and key 'default'"
    }
    assert first.state.b is None
    signed = fleet.command("ab_setup", key=KEY, **v2)
    assert {a["result"] for a in fleet.acks(signed, scorers=2).values()} == {"ok"}
    assert first.state.summary() == second.state.summary()
    assert first.state.summary()["b_version"] == "v2"


class GatedLoader:
    """Loads real bundles, but a load of ``gated`` waits until the test opens the gate."""

    def __init__(self, models_dir: Path, gated: str) -> None:
        self.real = ModelsDirLoader(models_dir)
        self.gated = gated
        self.loading = threading.Event()
        self.gate = threading.Event()

    def current_version(self) -> str:
        return self.real.current_version()

    def load(self, version: str) -> ModelBundle:
        if version == self.gated:
            self.loading.set()
            assert self.gate.wait(60)
        return self.real.load(version)


def test_the_serving_state_stays_readable_while_a_model_loads(fleet: Fleet) -> None:
    loader = GatedLoader(fleet.models_dir, gated="v2")
    plane = fleet.start("scorer-1", loader=loader)
    command_id = fleet.command("ab_setup", **setup_args(fleet.models_dir, "v2"))
    assert loader.loading.wait(30)
    # The load is under way on the control thread: the scorer's read does not wait for it.
    assert plane.state.summary()["b_version"] is None
    loader.gate.set()
    assert fleet.acks(command_id, scorers=1)["scorer-1"]["result"] == "ok"
    assert plane.state.summary()["b_version"] == "v2"


def cli(fleet: Fleet, *argv: str) -> int:
    topic_flags = [
        f"--topic-control={fleet.topics.control}",
        f"--topic-control-events={fleet.topics.control_events}",
    ]
    common = [f"--bootstrap-servers={fleet.bootstrap}", f"--models-dir={fleet.models_dir}"]
    return main(["control", *argv, *common, *topic_flags, "--timeout=30"])


def test_cli_commands_every_live_instance_and_prints_their_answers(
    fleet: Fleet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTINEL_CONTROL_KEY", KEY.decode())
    counts = {"A/v1/ALLOW": 70, "A/v1/BLOCK": 2, "B/v2/ALLOW": 28}
    fleet.start("scorer-1", key=KEY, stats=counts)
    fleet.start("scorer-2", key=KEY, stats=counts)
    fleet.acks(fleet.command("status", key=KEY), scorers=2)  # both heartbeating

    assert cli(fleet, "ab-setup", "v2") == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("scorer-")]
    v1_sha = sha256_of(fleet.models_dir, "v1")[:12]
    assert rows == [
        ["scorer-1", "ok", "v1", v1_sha, "v2", "0%", "2", "-"],
        ["scorer-2", "ok", "v1", v1_sha, "v2", "0%", "2", "-"],
    ]

    assert cli(fleet, "ab-setup", "v1") == 1  # refused by every instance: A is v1 already
    out = capsys.readouterr().out
    assert "ab_setup: v1 is already serving as A" in out
    assert "refused by: scorer-1, scorer-2" in out

    assert cli(fleet, "status") == 0
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines()]
    assert ["(fleet)", "B", "v2", "56", "0", "0", "56"] in table  # 28 on each instance
    assert ["(fleet)", "A", "v1", "140", "0", "4", "144"] in table

    with pytest.raises(SystemExit) as exit_code:
        cli(fleet, "ab-split", "150")
    assert exit_code.value.code == 2
    assert "must be within 0-100, got 150" in capsys.readouterr().err
    applied = {p.state.applied_offset for p in fleet.planes}
    assert applied == {4}  # ab-split 150 never reached the log


def test_cli_fails_when_no_instance_is_live_and_publishes_nothing(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet.start("scorer-1").close()  # heartbeated, then said "stopped"
    fleet.planes.clear()
    assert cli(fleet, "promote") == 1
    assert "no live scorer instance" in capsys.readouterr().out
    probe = Consumer({"bootstrap.servers": fleet.bootstrap, "group.id": "unused"})
    try:
        ends = probe.get_watermark_offsets(TopicPartition(fleet.topics.control, 0), timeout=15)
    finally:
        probe.close()
    assert ends == (0, 1)  # only the genesis reload scorer-1 published


def test_cli_reports_an_instance_that_does_not_answer(
    fleet: Fleet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet.start("scorer-1")
    # A heartbeat from an instance that died without saying so (killed -9).
    ghost = {
        "type": "heartbeat",
        "scorer_id": "scorer-ghost",
        "time": "2025-01-31T12:00:00.000Z",
        "state": {"a_version": "v1", "b_version": None, "split_percent": 0, "applied_offset": -1},
        "stats": {},
    }
    producer = Producer({"bootstrap.servers": fleet.bootstrap})
    producer.produce(fleet.topics.control_events, json.dumps(ghost).encode(), key=b"scorer-ghost")
    assert producer.flush(15) == 0
    fleet.acks(fleet.command("status"), scorers=1)
    monkeypatch.setenv("SENTINEL_CONTROL_TIMEOUT", "3")
    code = main(
        [
            "control",
            "reload",
            f"--bootstrap-servers={fleet.bootstrap}",
            f"--models-dir={fleet.models_dir}",
            f"--topic-control={fleet.topics.control}",
            f"--topic-control-events={fleet.topics.control_events}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "no answer within 3 s from: scorer-ghost" in out
    assert [line.split()[:2] for line in out.splitlines() if line.startswith("scorer-")] == [
        ["scorer-1", "ok"],
        ["scorer-ghost", "no"],
    ]


def test_close_announces_the_instance_stopped(fleet: Fleet) -> None:
    plane = fleet.start("scorer-1", stats={"A/v1/ALLOW": 3})
    plane.close()
    fleet.planes.clear()
    events = fleet.events(until=lambda events: any(e["type"] == "stopped" for e in events))
    stopped = [e for e in events if e["type"] == "stopped"]
    assert [(e["scorer_id"], e["stats"]) for e in stopped] == [("scorer-1", {"A/v1/ALLOW": 3})]


def test_a_missing_control_topic_is_one_clear_error(kafka_bootstrap: str, models_dir: Path) -> None:
    from schemas.errors import ConfigError

    missing = TopicNames(control=f"no-such-control-{uuid.uuid4().hex[:8]}")
    plane = ControlPlane(
        KafkaSettings(kafka_bootstrap), missing, "s", models_dir, ScorerMetrics(CollectorRegistry())
    )
    with pytest.raises(ConfigError, match="does not exist"):
        plane.start()
    plane.close()
