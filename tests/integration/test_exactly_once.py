"""Exactly-once under the faults of test_faults.py: a read_committed reader of ``decisions`` sees
exactly one decision per transaction id (0 lost, 0 duplicated) through kill -9 and restart, a
1 -> 3 -> 1 rebalance and a broker restart.

The at-least-once suite allows duplicates (counted, same probability); here any duplicate fails.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from streams.config import TopicNames
from tests.fixtures.faults import (
    RATE,
    Audit,
    DedicatedBroker,
    Load,
    audit,
    broker_restart,
    create_topics,
    scale_1_to_3_to_1,
)
from tests.fixtures.scorer import ScorerLauncher

pytestmark = pytest.mark.integration

EOS = "--processing-guarantee=exactly-once"


def assert_exactly_once(result: Audit) -> None:
    print(result.summary())
    assert result.lost == [], f"{len(result.lost)} transactions never decided: {result.lost[:5]}"
    assert result.duplicates == 0, f"{result.duplicates} duplicated decisions"
    assert result.decisions == result.sent


def test_kill_9_three_times_with_restarts_under_the_same_id_decides_each_transaction_once(
    kafka_bootstrap: str, fault_topics: TopicNames, launcher: ScorerLauncher, features: np.ndarray
) -> None:
    survivor = launcher.start(EOS, scorer_id="survivor")
    victim = launcher.start(EOS, scorer_id="victim")
    load = Load(kafka_bootstrap, fault_topics.transactions, RATE, features).start()
    for _ in range(3):
        victim.wait_assigned()
        time.sleep(3)  # mid-load: the victim holds an open transaction most of the time
        victim.kill()
        victim = launcher.start(EOS, scorer_id="victim")  # fences its zombie's transaction
    victim.wait_assigned()
    time.sleep(5)
    result = audit(kafka_bootstrap, fault_topics.decisions, load.stop())

    assert_exactly_once(result)
    assert survivor.proc.poll() is None, survivor.output()[-3000:]
    assert victim.proc.poll() is None, victim.output()[-3000:]


def test_scaling_1_to_3_to_1_under_load_decides_each_transaction_once(
    kafka_bootstrap: str, fault_topics: TopicNames, launcher: ScorerLauncher, features: np.ndarray
) -> None:
    first, result = scale_1_to_3_to_1(kafka_bootstrap, fault_topics, launcher, features, EOS)

    assert_exactly_once(result)
    assert first.proc.poll() is None, first.output()[-3000:]


@pytest.mark.parametrize("outage_s", [8.0, 35.0])
def test_broker_restart_decides_each_transaction_once(
    own_broker: DedicatedBroker,
    models_dir: Path,
    tmp_path: Path,
    features: np.ndarray,
    outage_s: float,
) -> None:
    """8 s: the member expires meanwhile, and librdkafka's transactional calls can hang after
    the restart. 35 s: longer than a commit may fail before its producer is replaced (20 s)."""
    topics = create_topics(own_broker.bootstrap, "eos-restart")
    launcher = ScorerLauncher(own_broker.bootstrap, topics, models_dir, tmp_path)
    try:
        scorer, result, _ = broker_restart(
            own_broker, launcher, topics, features, EOS, outage_s=outage_s
        )

        assert_exactly_once(result)
        assert scorer.proc.poll() is None, scorer.output()[-3000:]
    finally:
        launcher.stop_all()
