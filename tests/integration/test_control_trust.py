"""A control plane you can trust (issue 11), one test per numbered finding, on real scorers.

Each test runs real ``sentinel score`` processes against the session broker and looks only at
what an operator or a payment system sees: acks and heartbeats on control-events, decisions and
drift snapshots on their topics, exit codes and output of ``sentinel control``.

1. no record on ``control`` can break an instance (hostile bytes are refusals);
2. replay is deterministic (``models/current`` is read when a command is published, and an
   instance whose bundle has other content refuses and shows up as a divergence);
3. a promote lasts (``models/current`` follows it, so a later reload keeps it);
4. a re-published signed command is refused, live and on replay;
5. a bundle whose manifest is broken is refused by ``ab-setup`` and kills nobody;
6. drift during a split is tracked per variant, against each variant's own baseline;
7. a full local producer queue does not stop drift snapshots or decisions.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from schemas.drift_codec import DriftSnapshot, decode_snapshot
from schemas.models_dir import activate_version, current_version
from streams.config import TopicNames
from streams.control.commands import new_command
from tests.fixtures.fleet import (
    FLEET,
    Operator,
    Source,
    control,
    decided,
    model_sha256,
    send,
    synthetic_source,
    versions,
    wait_until_all_consume,
)
from tests.fixtures.kafka import TopicFactory
from tests.fixtures.scorer import ScorerLauncher, ScorerProcess, read_topic

pytestmark = pytest.mark.integration

KEY = "fleet-secret"
# Big enough for the 10 MB record of test 1 (the broker's default limit is 1 MiB).
CONTROL_MAX_BYTES = 12_000_000


@pytest.fixture
def scorer_topics(new_topic: TopicFactory) -> TopicNames:
    """The scorer fixture's topics, with a control topic that accepts a 10 MB record."""
    return TopicNames(
        transactions=new_topic("tx", partitions=4),
        decisions=new_topic("decisions", partitions=4),
        drift=new_topic("drift"),
        control=new_topic(
            "control", config={"retention.ms": "-1", "max.message.bytes": str(CONTROL_MAX_BYTES)}
        ),
        control_events=new_topic("control-events"),
        dlq=new_topic("dlq", partitions=2),
    )


@pytest.fixture(scope="module")
def source() -> Source:
    return synthetic_source(rows=2_000, seed=21)


@pytest.fixture
def fleet_models(models_dir: Path, second_bundle: Any, tmp_path: Path) -> Path:
    """A private copy of the session's models (v1 current, v2): tests here move ``current``."""
    return Path(shutil.copytree(models_dir, tmp_path / "fleet-models"))


@pytest.fixture
def operator(
    kafka_bootstrap: str, scorer_topics: TopicNames, fleet_models: Path
) -> Iterator[Operator]:
    op = Operator(kafka_bootstrap, scorer_topics, fleet_models)
    yield op
    op.close()


def start_fleet(
    scorers: ScorerLauncher,
    operator: Operator,
    names: Iterable[str] = FLEET,
    models: list[Path] | None = None,
    extra: Iterable[str] = (),
) -> list[ScorerProcess]:
    """Start scorers one after the other (the first seeds the control log with the genesis
    reload), on the operator's models or on ``models`` (one directory each); return once each
    owns partitions and has heartbeated."""
    names = list(names)
    dirs = models or [operator.models_dir] * len(names)
    began = time.time()
    started = [
        scorers.start(f"--models-dir={models_dir}", *extra, scorer_id=name)
        for name, models_dir in zip(names, dirs, strict=True)
    ]
    for scorer in started:
        scorer.wait_assigned()
    operator.heartbeats_after(began - 1, names)
    return started


def restart(scorers: ScorerLauncher, old: ScorerProcess, models: Path) -> ScorerProcess:
    """Stop ``old`` cleanly (exit 0) and start the same instance again on ``models``."""
    assert old.terminate() == 0, old.output()
    new = scorers.start(f"--models-dir={models}", scorer_id=old.scorer_id)
    new.wait_assigned()
    return new


def published_offset(out: str, command: str) -> int:
    """The control offset ``sentinel control`` printed for the command it published."""
    found = re.search(rf"^{command} \S+ published at control offset (\d+)$", out, re.M)
    assert found, out
    return int(found.group(1))


def record_at(bootstrap: str, topic: str, offset: int) -> bytes:
    """The exact bytes of the record at ``offset`` of partition 0 of ``topic``."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, offset)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                assert message.offset() == offset
                return message.value() or b""
    finally:
        consumer.close()
    raise AssertionError(f"no record at {topic}[0]@{offset}")


def alive(*scorers: ScorerProcess) -> None:
    for scorer in scorers:
        assert scorer.proc.poll() is None, f"{scorer.scorer_id} died:\n{scorer.output()}"


# -- 1. any bytes on control are at worst a refusal ------------------------------------------


def _ab_split_text(percent: str) -> bytes:
    """A well-formed ab_split command whose percent is the raw JSON text ``percent``."""
    text = new_command("ab_split", {"percent": 30}, "tests@ci").encode()
    return text.replace(b'"percent":30', b'"percent":' + percent.encode())


HOSTILE: list[tuple[bytes, str]] = [
    (b"[" * 5000 + b"]" * 5000, "JSON nested 5000 deep; a command nests at most 4"),
    (b'{"a":' * 2000 + b"1" + b"}" * 2000, "JSON nested 2000 deep; a command nests at most 4"),
    (b'{"a":"' + b"x" * 10_000_000 + b'"}', "a command is at most 16384 bytes, got 10000008"),
    (b'{"command":"\xff\xfe"}', "not UTF-8 text: invalid start byte at byte 12"),
    (b"[1, 2, 3]", "a command must be a JSON object, got list"),
    (b'"reload"', "a command must be a JSON object, got str"),
    (
        b'{"command":"promote",' + new_command("abort", {}, "tests@ci").encode()[1:],
        "duplicate key 'command' in the command",
    ),
    (_ab_split_text("9" * 30), "is beyond 64 bits"),
    (_ab_split_text("1e999"), "number 1e999 is not finite"),
    (_ab_split_text("NaN"), "NaN is not a JSON number"),
]


def test_hostile_records_on_control_are_refused_and_the_instance_scores_on_and_restarts(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    operator: Operator,
    source: Source,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (scorer,) = start_fleet(scorers, operator, ["scorer-0"])
    big = {"message.max.bytes": str(CONTROL_MAX_BYTES)}
    offsets = [operator.publish(value, **big) for value, _ in HOSTILE]
    assert offsets == list(range(1, 1 + len(HOSTILE)))  # offset 0: the genesis reload
    for offset, (_, reason) in zip(offsets, HOSTILE, strict=True):
        ack = operator.acks_at(offset, ["scorer-0"])["scorer-0"]
        assert (ack["result"], ack["replayed"]) == ("refused", False)
        assert reason in ack["reason"], ack["reason"]
        assert ack["state"]["applied_offset"] == 0  # nothing was applied

    # Scoring goes on, and the fleet can still be steered (the control thread is alive).
    decisions = decided(kafka_bootstrap, scorer_topics, send(
        kafka_bootstrap, scorer_topics, source, count=500, seed=1))  # fmt: skip
    assert versions(decisions) == {("A", "v1")}
    alive(scorer)
    assert control(kafka_bootstrap, scorer_topics, operator.models_dir, "status") == 0
    capsys.readouterr()

    # A restarted instance replays every hostile record, refuses each alike, and serves.
    restarted_at = time.time()
    scorer = restart(scorers, scorer, operator.models_dir)
    for offset, (_, reason) in zip(offsets, HOSTILE, strict=True):
        ack = operator.acks_at(offset, ["scorer-0"], replayed=True)["scorer-0"]
        assert ack["result"] == "refused" and reason in ack["reason"]
    operator.heartbeats_after(restarted_at, ["scorer-0"])
    after = decided(kafka_bootstrap, scorer_topics, send(
        kafka_bootstrap, scorer_topics, source, count=500, seed=2))  # fmt: skip
    assert versions(after) == {("A", "v1")}
    assert {d["scorer_id"] for d in after} == {"scorer-0"}
    assert "Traceback" not in scorer.output()


# -- 2. replay is deterministic; a bundle with other content is a visible divergence --------


def test_models_current_moved_without_a_reload_does_not_split_the_fleet_on_restart(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    operator: Operator,
    source: Source,
    fleet_models: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, second = start_fleet(scorers, operator)
    activate_version(fleet_models, "v2")
    assert control(kafka_bootstrap, scorer_topics, fleet_models, "reload") == 0  # resolves v2
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [row[:3] for row in rows if row and row[0] in FLEET] == [
        ["scorer-0", "ok", "v2"],
        ["scorer-1", "ok", "v2"],
    ]
    activate_version(fleet_models, "v1")  # as `train --activate` would, without a reload

    restarted_at = time.time()
    first = restart(scorers, first, fleet_models)
    beats = operator.heartbeats_after(restarted_at)
    v2 = model_sha256(fleet_models, "v2")
    for beat in beats.values():
        assert (beat["state"]["a_version"], beat["state"]["a_sha256"]) == ("v2", v2)
    assert beats["scorer-0"]["state"] == beats["scorer-1"]["state"]
    assert control(kafka_bootstrap, scorer_topics, fleet_models, "status") == 0
    assert "DIVERGENCE" not in capsys.readouterr().out

    wait_until_all_consume(kafka_bootstrap, scorers.group_id)
    decisions = decided(kafka_bootstrap, scorer_topics, send(
        kafka_bootstrap, scorer_topics, source, count=1_000, seed=3))  # fmt: skip
    assert {d["scorer_id"] for d in decisions} == set(FLEET)
    assert versions(decisions) == {("A", "v2")}
    alive(first, second)


def test_an_instance_whose_bundle_has_other_content_refuses_and_status_shows_divergence(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    operator: Operator,
    source: Source,
    fleet_models: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # scorer-1's disk holds a different "v2": v1's model under v2's name (a valid bundle).
    other = Path(shutil.copytree(fleet_models, tmp_path / "other-models"))
    shutil.rmtree(other / "v2")
    shutil.copytree(other / "v1", other / "v2")
    manifest = json.loads((other / "v2" / "manifest.json").read_text())
    (other / "v2" / "manifest.json").write_text(json.dumps(manifest | {"version": "v2"}))
    assert model_sha256(other, "v2") != model_sha256(fleet_models, "v2")
    started = start_fleet(scorers, operator, models=[fleet_models, other])

    assert control(kafka_bootstrap, scorer_topics, fleet_models, "reload", "v2") == 1
    out = capsys.readouterr().out
    assert "refused by: scorer-1" in out
    assert "bundle v2 here has model sha256" in out
    offset = published_offset(out, "reload")
    acks = operator.acks_at(offset)
    assert (acks["scorer-0"]["result"], acks["scorer-1"]["result"]) == ("ok", "refused")

    assert control(kafka_bootstrap, scorer_topics, fleet_models, "status") == 1
    out = capsys.readouterr().out
    assert "DIVERGENCE: a_version differs: scorer-0=v2, scorer-1=v1" in out
    assert "DIVERGENCE: a_sha256 differs" in out
    # Both keep scoring, each with what it can serve; nobody serves v1 under the name v2.
    wait_until_all_consume(kafka_bootstrap, scorers.group_id)
    decisions = decided(kafka_bootstrap, scorer_topics, send(
        kafka_bootstrap, scorer_topics, source, count=1_000, seed=4))  # fmt: skip
    by_scorer = {(d["scorer_id"], d["model_version"]) for d in decisions}
    assert by_scorer == {("scorer-0", "v2"), ("scorer-1", "v1")}
    alive(*started)


# -- 3. a promote lasts --------------------------------------------------------------------


def test_a_reload_after_a_promote_keeps_the_promoted_model(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    operator: Operator,
    source: Source,
    fleet_models: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    start_fleet(scorers, operator, ["scorer-0"])
    assert control(kafka_bootstrap, scorer_topics, fleet_models, "ab-setup", "v2") == 0
    assert control(kafka_bootstrap, scorer_topics, fleet_models, "promote") == 0
    assert "models/current -> v2" in capsys.readouterr().out
    assert current_version(fleet_models) == "v2"

    assert control(kafka_bootstrap, scorer_topics, fleet_models, "reload") == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("scorer-")]
    assert [row[:3] for row in rows] == [["scorer-0", "ok", "v2"]]
    decisions = decided(kafka_bootstrap, scorer_topics, send(
        kafka_bootstrap, scorer_topics, source, count=500, seed=5))  # fmt: skip
    assert versions(decisions) == {("A", "v2")}


# -- 4. a signed command applies at most once ---------------------------------------------


def test_a_republished_signed_command_is_refused_on_every_instance_and_on_replay(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    operator: Operator,
    source: Source,
    fleet_models: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SENTINEL_CONTROL_KEY", KEY)  # inherited by the scorers and the CLI
    first, second = start_fleet(scorers, operator)
    assert control(kafka_bootstrap, scorer_topics, fleet_models, "ab-setup", "v2") == 0
    assert control(kafka_bootstrap, scorer_topics, fleet_models, "ab-split", "100") == 0
    split_at = published_offset(capsys.readouterr().out, "ab_split")
    signed_split = record_at(kafka_bootstrap, scorer_topics.control, split_at)
    assert json.loads(signed_split)["signature"]
    assert control(kafka_bootstrap, scorer_topics, fleet_models, "abort") == 0
    # B is back (split 0), so a replayed "ab_split 100" would send every card to it.
    assert control(kafka_bootstrap, scorer_topics, fleet_models, "ab-setup", "v2") == 0
    capsys.readouterr()

    replay_at = operator.publish(signed_split)
    for ack in operator.acks_at(replay_at).values():
        assert ack["result"] == "refused"
        assert "was already applied or refused (a replay)" in ack["reason"]
        assert (ack["state"]["b_version"], ack["state"]["split_percent"]) == ("v2", 0)
    decisions = decided(kafka_bootstrap, scorer_topics, send(
        kafka_bootstrap, scorer_topics, source, count=1_000, seed=6))  # fmt: skip
    assert versions(decisions) == {("A", "v1")}

    restarted_at = time.time()
    first = restart(scorers, first, fleet_models)
    ack = operator.acks_at(replay_at, ["scorer-0"], replayed=True)["scorer-0"]
    assert ack["result"] == "refused" and "a replay" in ack["reason"]
    beats = operator.heartbeats_after(restarted_at)
    assert beats["scorer-0"]["state"] == beats["scorer-1"]["state"]
    assert beats["scorer-0"]["state"]["split_percent"] == 0
    wait_until_all_consume(kafka_bootstrap, scorers.group_id)
    after = decided(kafka_bootstrap, scorer_topics, send(
        kafka_bootstrap, scorer_topics, source, count=1_000, seed=7))  # fmt: skip
    assert {d["scorer_id"] for d in after} == set(FLEET)
    assert versions(after) == {("A", "v1")}
    alive(first, second)


# -- 5. a bundle is fully validated before it can serve -----------------------------------


def _bundle_copy(models: Path, version: str, edit: Any = None) -> None:
    """``models/<version>``: a copy of ``models/v2`` named ``version``, manifest edited by
    ``edit(manifest)`` (model.onnx untouched, so its sha256 still matches the manifest)."""
    shutil.copytree(models / "v2", models / version)
    path = models / version / "manifest.json"
    manifest = json.loads(path.read_text()) | {"version": version}
    if edit is not None:
        edit(manifest)
    path.write_text(json.dumps(manifest))


def test_ab_setup_of_a_bundle_with_a_broken_manifest_is_refused_by_every_instance(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    operator: Operator,
    source: Source,
    fleet_models: Path,
    models_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The scorers' disks: v3's drift baseline lacks a feature, v4 claims 30 input features.
    _bundle_copy(fleet_models, "v3", lambda m: m["drift_baseline"]["features"].pop("V5"))
    _bundle_copy(fleet_models, "v4", lambda m: m["onnx"].update(input_shape=[None, 30]))
    # The operator's checkout has sound manifests for the same model files.
    checkout = Path(shutil.copytree(models_dir, tmp_path / "checkout"))
    _bundle_copy(checkout, "v3")
    _bundle_copy(checkout, "v4")
    started = start_fleet(scorers, operator)

    for version, reason in [
        ("v3", "manifest check failed: drift baseline"),
        ("v4", "manifest check failed: onnx.input_shape is [None, 30]"),
    ]:
        assert model_sha256(checkout, version) == model_sha256(checkout, "v2")
        assert control(kafka_bootstrap, scorer_topics, checkout, "ab-setup", version) == 1
        out = capsys.readouterr().out
        assert "refused by: scorer-0, scorer-1" in out
        assert out.count(reason) == 2, out
        # Run against the broken bundle itself, the CLI refuses before publishing anything.
        assert control(kafka_bootstrap, scorer_topics, fleet_models, "ab-setup", version) == 1
        assert f"sentinel: error: model bundle {version}" in capsys.readouterr().err

    decisions = decided(kafka_bootstrap, scorer_topics, send(
        kafka_bootstrap, scorer_topics, source, count=1_000, seed=8))  # fmt: skip
    assert versions(decisions) == {("A", "v1")}
    alive(*started)
    assert control(kafka_bootstrap, scorer_topics, fleet_models, "status") == 0
    acks_table = capsys.readouterr().out.split("\n\n")[0]  # then come the decision counts
    table = [line.split() for line in acks_table.splitlines()]
    assert [row[:5] for row in table if row and row[0] in FLEET] == [
        ["scorer-0", "ok", "v1", model_sha256(fleet_models, "v1")[:12], "-"],
        ["scorer-1", "ok", "v1", model_sha256(fleet_models, "v1")[:12], "-"],
    ]


# -- 6. drift per variant -----------------------------------------------------------------


def drift_snapshots(
    bootstrap: str, topic: str, done: Any, timeout_s: float = 90
) -> list[DriftSnapshot]:
    """Snapshots on ``topic`` from the beginning, read until ``done(snapshots)`` holds."""
    found: list[DriftSnapshot] = []

    def until(messages: list[Any]) -> bool:
        found[:] = [decode_snapshot(m.value() or b"") for m in messages]
        return bool(done(found))

    read_topic(bootstrap, topic, until=until, idle_s=timeout_s, timeout_s=timeout_s)
    return found


def counts_by_variant(items: Iterable[tuple[str, str, int]]) -> Counter[tuple[str, str]]:
    total: Counter[tuple[str, str]] = Counter()
    for variant, version, count in items:
        total[(variant, version)] += count
    return total


def test_during_a_split_drift_is_tracked_per_variant_with_its_own_model(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    operator: Operator,
    source: Source,
) -> None:
    start_fleet(scorers, operator, ["scorer-0"], extra=["--drift-interval-s=1"])
    operator.send("ab_setup", ["scorer-0"], candidate_version="v2")
    operator.send("ab_split", ["scorer-0"], percent=50)
    decisions = decided(kafka_bootstrap, scorer_topics, send(
        kafka_bootstrap, scorer_topics, source, count=2_000, n_cards=2_000, seed=9))  # fmt: skip
    scored = counts_by_variant((d["variant"], d["model_version"], 1) for d in decisions)
    assert set(scored) == {("A", "v1"), ("B", "v2")}

    def drifted(snapshots: list[DriftSnapshot]) -> Counter[tuple[str, str]]:
        return counts_by_variant((s.variant, s.model_version, s.count) for s in snapshots)

    # Every row is counted once, in a window of the variant (and model) that scored it.
    snapshots = drift_snapshots(
        kafka_bootstrap, scorer_topics.drift, lambda found: drifted(found) == scored
    )
    assert drifted(snapshots) == scored
    assert {s.scorer_id for s in snapshots} == {"scorer-0"}


# -- 7. a full local producer queue ---------------------------------------------------------


def test_a_tiny_producer_queue_slows_the_scorer_but_never_stops_it(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    operator: Operator,
    source: Source,
) -> None:
    # 16 KiB of local queue: a few dozen decisions or two drift snapshots. (The byte limit, as
    # the scorer sets its own queue.buffering.max.messages, which a pass-through cannot lower.)
    tiny = [
        "--kafka-config=queue.buffering.max.kbytes=16",
        "--drift-interval-s=0.1",
        "--max-batch=200",
    ]
    (scorer,) = start_fleet(scorers, operator, ["scorer-0"], extra=tiny)
    decisions = decided(kafka_bootstrap, scorer_topics, send(
        kafka_bootstrap, scorer_topics, source, count=3_000, seed=10))  # fmt: skip
    assert len({d["transaction_id"] for d in decisions}) == 3_000
    snapshots = drift_snapshots(
        kafka_bootstrap, scorer_topics.drift, lambda found: sum(s.count for s in found) >= 3_000
    )
    assert sum(s.count for s in snapshots) == 3_000
    alive(scorer)
    assert scorer.terminate() == 0, scorer.output()
    assert "BufferError" not in scorer.output()
