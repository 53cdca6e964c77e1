"""A/B testing end to end: two ``sentinel score`` processes in one group, steered over Kafka.

What an operator and a payment system would see: the share of cards on B, each card on one
variant whichever instance scores it, promote and abort taking effect for every later
transaction, a restarted instance serving the fleet's state from its first decision, 50 model
swaps under load losing nothing, and signed commands.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from schemas.decision_codec import decode_decision
from schemas.features import FEATURE_NAMES
from streams.cli import main
from streams.config import KafkaSettings, TopicNames
from streams.control.commands import new_command
from streams.scoring.route import variant_b_mask
from streams.tools.replayer import ReplayOptions, ReplayResult, replay
from tests.fixtures.scorer import ScorerLauncher, topic_flags

pytestmark = pytest.mark.integration

Event = dict[str, Any]
Source = tuple[np.ndarray, np.ndarray]
FLEET = ("scorer-0", "scorer-1")
INITIAL = {"a_version": "v1", "b_version": None, "split_percent": 0, "applied_offset": -1}


@pytest.fixture(scope="module")
def source() -> Source:
    from training.synth import generate

    frame = generate(rows=4_000, seed=11)
    return frame[list(FEATURE_NAMES)].to_numpy(np.float64), frame["Class"].to_numpy(np.int8)


def send(bootstrap: str, topics: TopicNames, source: Source, **options: Any) -> ReplayResult:
    """Replay transactions; ``result.labels`` holds every good transaction id sent."""
    features, labels = source
    return replay(
        KafkaSettings(bootstrap), topics.transactions, features, labels, ReplayOptions(**options)
    )


class Operator:
    """Publishes control commands and follows control-events from the beginning."""

    def __init__(self, bootstrap: str, topics: TopicNames) -> None:
        self.topics = topics
        self.producer = Producer({"bootstrap.servers": bootstrap})
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
        )
        self.consumer.assign([TopicPartition(topics.control_events, 0, OFFSET_BEGINNING)])
        self.events: list[Event] = []

    def pump(self, until: Callable[[list[Event]], bool], what: str) -> None:
        deadline = time.monotonic() + 90
        while not until(self.events):
            assert time.monotonic() < deadline, f"gave up waiting for {what}"
            for message in self.consumer.consume(500, timeout=0.2):
                if message.error() is None:
                    self.events.append(json.loads(message.value() or b""))

    def heartbeats_after(self, moment: float, scorers: Iterable[str] = FLEET) -> dict[str, Event]:
        """The first heartbeat of each scorer built after ``moment`` (epoch seconds)."""
        found: dict[str, Event] = {}

        def seen(events: list[Event]) -> bool:
            for e in events:
                if e["type"] == "heartbeat" and when(e) > moment:
                    found.setdefault(e["scorer_id"], e)
            return set(scorers) <= set(found)

        self.pump(seen, f"heartbeats of {sorted(scorers)}")
        return found

    def send(self, name: str, scorers: Iterable[str] = FLEET, **args: Any) -> dict[str, Event]:
        """Publish a command; the acks of ``scorers`` (the test fails if one never answers)."""
        command = new_command(name, args, "tests@ci")
        self.producer.produce(self.topics.control, command.encode())
        assert self.producer.flush(15) == 0

        def acks(events: list[Event]) -> dict[str, Event]:
            return {
                e["scorer_id"]: e
                for e in events
                if e["type"] == "ack" and e["command_id"] == command.command_id
            }

        self.pump(lambda events: set(scorers) <= set(acks(events)), f"acks of {name}")
        return acks(self.events)

    def acks_of(self, scorer: str) -> list[Event]:
        return [e for e in self.events if e["type"] == "ack" and e["scorer_id"] == scorer]

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def operator(kafka_bootstrap: str, scorer_topics: TopicNames) -> Iterable[Operator]:
    op = Operator(kafka_bootstrap, scorer_topics)
    yield op
    op.close()


def when(event: Event) -> float:
    return datetime.fromisoformat(event["time"]).timestamp()


def start_fleet(scorers: ScorerLauncher, operator: Operator) -> None:
    """Start the fleet; return once every member owns partitions (a group join takes seconds)
    and every member's heartbeat is on control-events."""
    began = time.time()
    fleet = [scorers.start(scorer_id=scorer_id) for scorer_id in FLEET]
    for scorer in fleet:
        scorer.wait_assigned()
    operator.heartbeats_after(began - 1)


def decided(bootstrap: str, topics: TopicNames, sent: ReplayResult) -> list[Event]:
    """The decisions of the transactions of ``sent``; fails if one is never decided (lost)."""
    wanted = {tx.decode() for tx in sent.labels}
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    partitions = consumer.list_topics(topics.decisions, timeout=15).topics[topics.decisions]
    consumer.assign(
        [TopicPartition(topics.decisions, p, OFFSET_BEGINNING) for p in partitions.partitions]
    )
    found: list[Event] = []
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    try:
        while not wanted <= seen and time.monotonic() < deadline:
            for message in consumer.consume(1_000, timeout=0.5):
                if message.error() is None:
                    decision = decode_decision(message.value() or b"")
                    if decision["transaction_id"] in wanted:
                        found.append(decision)
                        seen.add(decision["transaction_id"])
    finally:
        consumer.close()
    assert wanted <= seen, f"{len(wanted - seen)} of {len(wanted)} transactions never decided"
    return found


def versions(decisions: list[Event]) -> set[tuple[str, str]]:
    return {(d["variant"], d["model_version"]) for d in decisions}


def test_a_30_percent_split_is_sticky_by_card_then_promote_and_abort_apply_to_all(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    operator: Operator,
    source: Source,
    second_bundle: Any,
) -> None:
    start_fleet(scorers, operator)
    operator.send("ab_setup", candidate_version="v2")
    acks = operator.send("ab_split", percent=30)
    expected = {"a_version": "v1", "b_version": "v2", "split_percent": 30, "applied_offset": 1}
    assert [(a["result"], a["state"]) for a in acks.values()] == [("ok", expected)] * 2

    sent = send(kafka_bootstrap, scorer_topics, source, count=20_000, n_cards=20_000, seed=5)
    decisions = decided(kafka_bootstrap, scorer_topics, sent)
    variants: dict[str, set[str]] = defaultdict(set)
    for d in decisions:
        variants[d["card_id"]].add(d["variant"])
    assert len(variants) >= 2_000
    assert all(len(v) == 1 for v in variants.values()), "a card was scored by both variants"
    cards = sorted(variants)
    on_b = [variants[card] == {"B"} for card in cards]
    assert 0.27 <= np.mean(on_b) <= 0.33
    # The routing is the documented stable hash, whichever instance scored the card.
    assert on_b == variant_b_mask([c.encode() for c in cards], 30).tolist()
    assert {d["scorer_id"] for d in decisions} == set(FLEET)
    assert versions(decisions) == {("A", "v1"), ("B", "v2")}

    operator.send("promote")
    after_promote = decided(kafka_bootstrap, scorer_topics, send(
        kafka_bootstrap, scorer_topics, source, count=2_000, seed=6))  # fmt: skip
    assert versions(after_promote) == {("A", "v2")}

    operator.send("ab_setup", candidate_version="v1")
    operator.send("ab_split", percent=50)
    during = decided(kafka_bootstrap, scorer_topics, send(
        kafka_bootstrap, scorer_topics, source, count=2_000, seed=7))  # fmt: skip
    assert versions(during) == {("A", "v2"), ("B", "v1")}
    acks = operator.send("abort")
    assert {a["result"] for a in acks.values()} == {"ok"}
    after_abort = decided(kafka_bootstrap, scorer_topics, send(
        kafka_bootstrap, scorer_topics, source, count=2_000, seed=8))  # fmt: skip
    assert versions(after_abort) == {("A", "v2")}


def test_a_restarted_instance_replays_the_log_before_its_first_decision(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    operator: Operator,
    source: Source,
    second_bundle: Any,
) -> None:
    start_fleet(scorers, operator)
    operator.send("ab_setup", candidate_version="v2")
    operator.send("ab_split", percent=30)
    operator.send("ab_setup", candidate_version="v9")  # refused: stays refused on replay
    assert scorers.started[0].terminate() == 0
    restarted_at = time.time()
    scorers.start(scorer_id="scorer-0")

    operator.pump(lambda _: len([e for e in operator.acks_of("scorer-0") if e["replayed"]]) >= 3,
                  "the restarted instance's replay")  # fmt: skip
    replayed = [e for e in operator.acks_of("scorer-0") if e["replayed"]]
    assert [(e["offset"], e["result"]) for e in replayed] == [(0, "ok"), (1, "ok"), (2, "refused")]
    beats = operator.heartbeats_after(restarted_at)
    assert beats["scorer-0"]["state"] == beats["scorer-1"]["state"] == replayed[-1]["state"]
    assert replayed[-1]["state"]["split_percent"] == 30

    wait_until_both_consume(kafka_bootstrap, scorers.group_id)
    sent = send(kafka_bootstrap, scorer_topics, source, count=4_000, seed=9)
    decisions = decided(kafka_bootstrap, scorer_topics, sent)
    mine = [d for d in decisions if d["scorer_id"] == "scorer-0"]
    assert mine, "the restarted instance got no partitions"
    assert min(d["scored_at"] for d in mine) / 1e6 > when(replayed[-1])
    expected_b = variant_b_mask([d["card_id"].encode() for d in decisions], 30)
    assert [d["variant"] == "B" for d in decisions] == expected_b.tolist()


def wait_until_both_consume(bootstrap: str, group: str) -> None:
    """Block until the group's rebalance has given partitions to both scorer instances."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 90
    while True:
        description = admin.describe_consumer_groups([group])[group].result(timeout=15)
        owners = {m.client_id for m in description.members if m.assignment.topic_partitions}
        if owners >= set(FLEET):
            return
        assert time.monotonic() < deadline, f"partitions owned only by {sorted(owners)}"
        time.sleep(0.2)


SWAP_CYCLE: list[tuple[str, dict[str, Any]]] = [
    ("ab_setup", {"candidate_version": "v2"}),
    ("ab_split", {"percent": 30}),
    ("ab_split", {"percent": 70}),
    ("promote", {}),
    ("reload", {}),  # models/current still names v1: A goes back to v1
    ("ab_setup", {"candidate_version": "v2"}),
    ("ab_split", {"percent": 50}),
    ("abort", {}),
]


def test_fifty_swaps_under_load_lose_nothing_and_stamp_the_version_then_serving(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    operator: Operator,
    source: Source,
    second_bundle: Any,
) -> None:
    start_fleet(scorers, operator)
    sent_ids: set[bytes] = set()
    for i in range(50):
        chunk = send(kafka_bootstrap, scorer_topics, source, count=400, seed=100 + i)
        sent_ids |= set(chunk.labels)
        name, args = SWAP_CYCLE[i % len(SWAP_CYCLE)]
        acks = operator.send(name, **args)
        assert {a["result"] for a in acks.values()} == {"ok"}, acks
    everything = ReplayResult(labels=dict.fromkeys(sent_ids, 0))
    decisions = decided(kafka_bootstrap, scorer_topics, everything)
    assert len(sent_ids) == 20_000
    assert dlq_size(kafka_bootstrap, scorer_topics.dlq) == 0

    timelines = {scorer: timeline(operator.acks_of(scorer)) for scorer in FLEET}
    stale = [d for d in decisions if not served_then(d, timelines[d["scorer_id"]])]
    assert not stale, f"{len(stale)} decisions name a model not serving then, e.g. {stale[0]}"
    # Which versions got traffic between two swaps is up to the scheduler; the first chunk was
    # sent before any command, so v1 on A is certain.
    served = versions(decisions)
    assert ("A", "v1") in served
    assert served <= {("A", "v1"), ("A", "v2"), ("B", "v2")}


def timeline(acks: list[Event]) -> list[tuple[float, dict[str, Any]]]:
    """(ack time, state after the command) per command, starting from the initial state."""
    ordered = sorted(acks, key=lambda e: e["offset"])
    return [(float("-inf"), INITIAL)] + [(when(e), e["state"]) for e in ordered]


def served_then(decision: Event, states: list[tuple[float, dict[str, Any]]]) -> bool:
    """Could the scorer have served this decision's variant/version when it read its state?

    It read the state between the transaction's event time and the decision's ``scored_at``.
    State j was swapped in after ack j-1 was published and before ack j, and swapped out before
    ack j+1 (ack times are truncated to the millisecond, hence the 1 ms of slack).
    """
    read_from, read_to = decision["event_time"] / 1e3, decision["scored_at"] / 1e6
    for j, (_, state) in enumerate(states):
        begins = states[j - 1][0] if j > 0 else float("-inf")
        ends = states[j + 1][0] + 0.001 if j + 1 < len(states) else float("inf")
        if begins <= read_to and read_from <= ends:
            variant, version = decision["variant"], decision["model_version"]
            if variant == "A" and state["a_version"] == version:
                return True
            if variant == "B" and state["b_version"] == version and state["split_percent"] > 0:
                return True
    return False


def dlq_size(bootstrap: str, topic: str) -> int:
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused"})
    try:
        partitions = probe.list_topics(topic, timeout=15).topics[topic].partitions
        ends = [
            probe.get_watermark_offsets(TopicPartition(topic, p), timeout=15) for p in partitions
        ]
    finally:
        probe.close()
    return sum(high - low for low, high in ends)


def control(bootstrap: str, topics: TopicNames, *argv: str) -> int:
    return main(["control", *argv, f"--bootstrap-servers={bootstrap}", *topic_flags(topics)])


def test_signed_commands_through_the_cli_and_status_counts_per_variant(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    operator: Operator,
    source: Source,
    second_bundle: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SENTINEL_CONTROL_KEY", "fleet-secret")  # inherited by the scorers
    start_fleet(scorers, operator)

    monkeypatch.delenv("SENTINEL_CONTROL_KEY")
    assert control(kafka_bootstrap, scorer_topics, "ab-setup", "v2") == 1
    out = capsys.readouterr().out
    assert out.count("unsigned command: a signing key is configured") == 2

    monkeypatch.setenv("SENTINEL_CONTROL_KEY", "fleet-secret")
    assert control(kafka_bootstrap, scorer_topics, "ab-setup", "v2") == 0
    assert control(kafka_bootstrap, scorer_topics, "ab-split", "50") == 0
    capsys.readouterr()

    sent = send(kafka_bootstrap, scorer_topics, source, count=3_000, seed=12)
    decisions = decided(kafka_bootstrap, scorer_topics, sent)
    # Stats count decisions when the broker acknowledges them; a heartbeat built a second after
    # we read them all back includes every one.
    operator.heartbeats_after(time.time() + 1.0)
    assert control(kafka_bootstrap, scorer_topics, "status") == 0
    table = [line.split() for line in capsys.readouterr().out.splitlines()]
    totals = {(row[1], row[2]): int(row[-1]) for row in table if row and row[0] == "(fleet)"}
    per_variant: dict[tuple[str, str], int] = defaultdict(int)
    for d in decisions:
        per_variant[(d["variant"], d["model_version"])] += 1
    assert totals == dict(per_variant)
    assert set(totals) == {("A", "v1"), ("B", "v2")}
