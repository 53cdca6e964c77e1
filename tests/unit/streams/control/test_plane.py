"""The control plane without a broker: confluent_kafka's Consumer and Producer are replaced in
``streams.control.plane`` by fakes over one in-memory log per topic. Tests read what operators
read: the acks and events on ``control-events``, the records on ``control``, the served state.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, TopicPartition
from prometheus_client import CollectorRegistry

from schemas.errors import BrokerError, ConfigError, ModelLoadError
from streams.config import KafkaSettings, TopicNames
from streams.control import plane
from streams.control.commands import new_command, parse_command
from streams.control.plane import ControlPlane, ControlPlaneFailed
from streams.metrics import ScorerMetrics
from tests.unit.streams.control.test_commands import FakeLoader, model_args, sha

TOPICS = TopicNames(
    transactions="tx", decisions="dec", drift="drift", control="ctl", control_events="ev", dlq="dlq"
)
KEYS = {"default": b"fleet-secret"}


class FakeBroker:
    """One log per topic (a single partition each); ``refuse`` fails every produce."""

    def __init__(self, topics: tuple[str, ...] = (TOPICS.control, TOPICS.control_events)) -> None:
        self.logs: dict[str, list[tuple[bytes | None, bytes]]] = {t: [] for t in topics}
        self.refuse: KafkaError | None = None
        self.consumers: list[FakeConsumer] = []
        self.producers: list[FakeProducer] = []

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(value) for _, value in self.logs[TOPICS.control_events]]

    def acks(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["type"] == "ack"]

    def publish(self, record: bytes) -> None:
        self.logs[TOPICS.control].append((None, record))


class FakeMessage:
    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self._partition, self._offset, self._value = partition, offset, value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None


class FakeConsumer:
    """Assign-only reader of the broker's logs (no subscribe: joining a group would fail)."""

    def __init__(self, broker: FakeBroker, config: dict[str, Any]) -> None:
        self.broker, self.config = broker, config
        self.position: dict[tuple[str, int], int] = {}
        self.failure: BaseException | None = None
        self.closed = False

    def list_topics(self, topic: str, timeout: float) -> Any:
        topics = {
            name: SimpleNamespace(error=None, partitions={0: None})
            for name in self.broker.logs
            if name == topic
        }
        return SimpleNamespace(topics=topics)

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        return 0, len(self.broker.logs[tp.topic])

    def assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            end = len(self.broker.logs[tp.topic])
            offset = {OFFSET_BEGINNING: 0, OFFSET_END: end}.get(tp.offset, tp.offset)
            self.position[(tp.topic, tp.partition)] = offset

    def poll(self, timeout: float) -> FakeMessage | None:
        if self.failure is not None:
            raise self.failure
        for (topic, partition), at in self.position.items():
            log = self.broker.logs[topic]
            if at < len(log):
                self.position[(topic, partition)] = at + 1
                return FakeMessage(partition, at, log[at][1])
        time.sleep(0.002)  # nothing new: a real poll would wait up to ``timeout``
        return None

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Appends to the broker at once; delivery reports run inside poll() and flush()."""

    def __init__(self, broker: FakeBroker, config: dict[str, Any]) -> None:
        self.broker, self.config = broker, config
        self._reports: list[tuple[Callable[..., None], KafkaError | None]] = []
        self._lock = threading.Lock()

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        on_delivery: Callable[..., None] | None = None,
    ) -> None:
        assert value is not None
        error = self.broker.refuse
        if error is None:
            self.broker.logs[topic].append((key, value))
        if on_delivery is not None:
            with self._lock:
                self._reports.append((on_delivery, error))

    def poll(self, timeout: float = 0) -> int:
        with self._lock:
            reports, self._reports = self._reports, []
        for callback, error in reports:
            callback(error, SimpleNamespace(topic=lambda: "topic"))
        return len(reports)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FakeBroker:
    fake = FakeBroker()

    def consumer(config: dict[str, Any]) -> FakeConsumer:
        fake.consumers.append(FakeConsumer(fake, config))
        return fake.consumers[-1]

    def producer(config: dict[str, Any]) -> FakeProducer:
        fake.producers.append(FakeProducer(fake, config))
        return fake.producers[-1]

    monkeypatch.setattr(plane, "Consumer", consumer)
    monkeypatch.setattr(plane, "Producer", producer)
    return fake


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A models directory whose ``current`` names v1 (the bundles come from FakeLoader)."""
    (tmp_path / "current").write_text("v1\n")
    return tmp_path


class Instance:
    def __init__(self, models_dir: Path, **kwargs: Any) -> None:
        self.registry = CollectorRegistry()
        self.loader = kwargs.pop("loader", FakeLoader())
        self.plane = ControlPlane(
            KafkaSettings("fake:9092"),
            TOPICS,
            "scorer-1",
            models_dir,
            ScorerMetrics(self.registry),
            loader=self.loader,
            **kwargs,
        )

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
def instances(models_dir: Path) -> Any:
    started: list[Instance] = []

    def make(**kwargs: Any) -> Instance:
        started.append(Instance(models_dir, **kwargs))
        return started[-1]

    yield make
    for instance in started:
        instance.plane.close()


def command(name: str, signing_key: bytes | None = None, **args: Any) -> bytes:
    if "version" in args:
        args = model_args(str(args.pop("version")), name) | args
    key_id = "default" if signing_key else None
    return new_command(name, args, "ops@host", signing_key=signing_key, key_id=key_id).encode()


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


# --- replay -------------------------------------------------------------------------------------


def test_an_empty_log_is_seeded_with_a_genesis_reload_of_models_current(
    broker: FakeBroker, instances: Callable[..., Instance]
) -> None:
    instance = instances()
    state = instance.plane.start()

    assert (state.a.version, state.a.sha256, state.b) == ("v1", sha("v1"), None)
    ((_, record),) = broker.logs[TOPICS.control]
    genesis = parse_command(record)
    assert (genesis.command, genesis.version, genesis.model_sha256) == ("reload", "v1", sha("v1"))
    assert "genesis" in genesis.issuer and "scorer-1" in genesis.issuer
    # every instance (this one included) folds the genesis record like any other command
    (ack,) = broker.acks()
    assert (ack["command_id"], ack["offset"], ack["result"]) == (genesis.command_id, 0, "ok")
    assert ack["replayed"] is False and ack["state"]["a_version"] == "v1"


def test_with_keys_the_genesis_reload_is_signed_so_the_fleet_accepts_it(
    broker: FakeBroker, instances: Callable[..., Instance]
) -> None:
    instances(keys=KEYS).plane.start()
    ((_, record),) = broker.logs[TOPICS.control]
    assert parse_command(record, KEYS).signature is not None  # raises if the signature is bad
    assert [a["result"] for a in broker.acks()] == ["ok"]


def test_replay_folds_the_whole_log_and_acks_every_record(
    broker: FakeBroker, instances: Callable[..., Instance]
) -> None:
    for record in (
        command("reload", version="v1"),
        command("ab_setup", version="v2"),
        command("ab_split", percent=30),
    ):
        broker.publish(record)
    instance = instances()
    state = instance.plane.start()

    assert (state.a.version, state.b and state.b.version, state.split_percent) == ("v1", "v2", 30)
    assert state.applied_offset == 2
    assert len(broker.logs[TOPICS.control]) == 3  # no genesis: the log already had a reload
    acks = broker.acks()
    assert [(a["offset"], a["command"], a["result"], a["replayed"]) for a in acks] == [
        (0, "reload", "ok", True),
        (1, "ab_setup", "ok", True),
        (2, "ab_split", "ok", True),
    ]
    assert all(a["scorer_id"] == "scorer-1" and a["issuer"] == "ops@host" for a in acks)
    assert [key for key, _ in broker.logs[TOPICS.control_events]] == [b"scorer-1"] * 3
    assert acks[-1]["state"] == state.summary()
    assert instance.metric("sentinel_ab_split_percent") == 30
    assert instance.metric("sentinel_control_applied_offset") == 2
    info = "sentinel_model_info"
    assert instance.metric(info, variant="A", version="v1", sha256=sha("v1")) == 1
    assert instance.metric(info, variant="B", version="v2", sha256=sha("v2")) == 1
    assert instance.loader.loads == ["v1", "v2"]


def test_refused_records_are_acked_with_a_reason_and_leave_the_state_alone(
    broker: FakeBroker, instances: Callable[..., Instance]
) -> None:
    for record in (
        command("reload", version="v1"),
        b"{not json",
        command("reload", version="v9"),  # its bundle fails its checks here
        command("promote"),  # no B set up
    ):
        broker.publish(record)
    instance = instances()
    state = instance.plane.start()

    assert state.a.version == "v1" and state.applied_offset == 0
    acks = broker.acks()
    assert [(a["offset"], a["result"]) for a in acks] == [
        (0, "ok"),
        (1, "refused"),
        (2, "refused"),
        (3, "refused"),
    ]
    assert "unparseable JSON" in acks[1]["reason"] and acks[1]["command"] is None
    assert "sha256 does not match" in acks[2]["reason"]
    assert "no candidate B" in acks[3]["reason"]
    assert all(a["state"]["a_version"] == "v1" for a in acks)
    count = "sentinel_control_commands_total"
    assert instance.metric(count, command="invalid", result="refused") == 1
    assert instance.metric(count, command="reload", result="refused") == 1
    assert instance.metric(count, command="reload", result="ok") == 1


def test_an_instance_that_refuses_every_reload_in_the_log_does_not_start(
    broker: FakeBroker, instances: Callable[..., Instance]
) -> None:
    broker.publish(command("reload", version="v9"))
    with pytest.raises(ModelLoadError, match="refused every reload in the control log"):
        instances().plane.start()
    assert len(broker.logs[TOPICS.control]) == 1  # no genesis over a fleet's log
    assert broker.consumers[-1].closed


def test_a_genesis_the_broker_refuses_is_a_broker_error(
    broker: FakeBroker, instances: Callable[..., Instance]
) -> None:
    broker.refuse = KafkaError(KafkaError._MSG_TIMED_OUT)
    with pytest.raises(BrokerError, match="cannot publish the genesis reload"):
        instances().plane.start()
    assert broker.consumers[-1].closed


def test_a_missing_control_topic_is_one_clear_error(
    broker: FakeBroker, instances: Callable[..., Instance]
) -> None:
    del broker.logs[TOPICS.control]
    with pytest.raises(ConfigError, match="control topic 'ctl' does not exist"):
        instances().plane.start()


def test_the_control_consumer_never_joins_or_commits_for_a_group(
    broker: FakeBroker, instances: Callable[..., Instance]
) -> None:
    instances().plane.start()
    config = broker.consumers[-1].config
    assert config["enable.auto.commit"] is False
    assert config["group.id"].startswith("sentinel-control-scorer-1-")


# --- following the log --------------------------------------------------------------------------


def test_a_live_command_is_applied_and_acked_not_replayed(
    broker: FakeBroker, instances: Callable[..., Instance]
) -> None:
    broker.publish(command("reload", version="v1"))
    instance = instances()
    instance.plane.start()
    assert instance.plane.alive

    broker.publish(command("ab_setup", version="v3"))
    wait_for(lambda: len(broker.acks()) == 2, "the ack of the live command")

    live = broker.acks()[1]
    assert (live["offset"], live["command"], live["result"]) == (1, "ab_setup", "ok")
    assert live["replayed"] is False
    state = instance.plane.state
    assert state.b is not None and state.b.version == "v3" and state.applied_offset == 1


def test_heartbeats_carry_the_state_and_stats_and_close_announces_stopped(
    broker: FakeBroker, instances: Callable[..., Instance]
) -> None:
    instance = instances(heartbeat_interval_s=0.01, stats=lambda: {"A/v1/ALLOW": 12})
    instance.plane.start()
    wait_for(lambda: any(e["type"] == "heartbeat" for e in broker.events()), "a heartbeat", 10.0)
    instance.plane.close()

    events = broker.events()
    heartbeat = next(e for e in events if e["type"] == "heartbeat")
    assert heartbeat["stats"] == {"A/v1/ALLOW": 12}
    assert heartbeat["state"]["a_version"] == "v1"
    assert events[-1]["type"] == "stopped" and events[-1]["state"]["a_version"] == "v1"
    assert not instance.plane.alive


def test_a_failing_stats_callback_does_not_stop_heartbeats(
    broker: FakeBroker, instances: Callable[..., Instance]
) -> None:
    def broken() -> dict[str, int]:
        raise ZeroDivisionError("stats bug")

    instance = instances(heartbeat_interval_s=0.01, stats=broken)
    instance.plane.start()
    wait_for(
        lambda: len([e for e in broker.events() if e["type"] == "heartbeat"]) >= 2, "heartbeats"
    )
    heartbeat = next(e for e in broker.events() if e["type"] == "heartbeat")
    assert "stats bug" in heartbeat["stats"]["error"]
    assert instance.plane.alive


def test_a_dead_control_thread_makes_state_and_check_raise(
    broker: FakeBroker, instances: Callable[..., Instance]
) -> None:
    instance = instances()
    instance.plane.start()
    instance.plane.check()  # alive: no error

    broker.consumers[-1].failure = RuntimeError("bug in the control loop")
    wait_for(lambda: not instance.plane.alive, "the control thread to die")

    with pytest.raises(ControlPlaneFailed, match="control thread died: RuntimeError"):
        instance.plane.check()
    with pytest.raises(ControlPlaneFailed, match="bug in the control loop"):
        _ = instance.plane.state
    instance.plane.close()
    stopped = [e for e in broker.events() if e["type"] == "stopped"]
    assert len(stopped) == 1  # published once, by the dying thread, with the reason
    assert "control thread died" in stopped[0]["reason"]


def test_state_before_start_is_a_programming_error(instances: Callable[..., Instance]) -> None:
    with pytest.raises(RuntimeError, match="before start"):
        _ = instances().plane.state


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"heartbeat_interval_s": 0}, "heartbeat interval must be > 0"),
        ({"keys": KEYS, "sign_with": "2027"}, "signing key id '2027' is not among"),
    ],
)
def test_bad_settings_are_refused(models_dir: Path, kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Instance(models_dir, **kwargs)
