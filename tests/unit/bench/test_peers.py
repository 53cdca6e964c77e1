"""The peer jobs speak Sentinel's wire format, and the Peers section of RESULTS.md is rewritten
in place (bench/peers/scoring_job.py runs in the peers' virtualenvs; its codecs need only
fastavro, so they are checked here against the project's own)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bench.harness import kept_section, write_section
from schemas.avro import record_codec
from schemas.decision_codec import decode_decision
from schemas.transaction_codec import encode_transaction

PEERS = Path(__file__).resolve().parents[3] / "bench" / "peers"


@pytest.fixture(scope="module")
def scoring_job() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scoring_job", PEERS / "scoring_job.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["scoring_job"] = module  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return module


TRANSACTION: dict[str, Any] = {
    "transaction_id": "tx-1",
    "card_id": "card-7",
    "event_time": 1_796_000_000_123,
    "amount": 12.5,
    "features": [float(i) / 7 for i in range(28)],
}


def test_peers_decode_the_replayers_transactions(scoring_job: ModuleType) -> None:
    decoded = scoring_job.AvroRecord("transaction").decode(encode_transaction(TRANSACTION))
    assert decoded == TRANSACTION
    assert scoring_job.feature_row(decoded) == [*TRANSACTION["features"], 12.5]


def test_peer_decisions_decode_as_sentinel_decisions(scoring_job: ModuleType) -> None:
    record = scoring_job.AvroRecord("decision")
    assert record.header == record_codec("decision").header
    model = scoring_job.FraudModel("v3", None, "features", "probabilities", 0.9, 0.2)
    verdict = scoring_job.decision(
        model,
        TRANSACTION,
        0.5,
        batch_size=8,
        scorer_id="arroyo",
        source_topic="transactions",
        partition=2,
        offset=41,
    )
    decoded = decode_decision(record.encode(verdict))
    assert decoded == verdict
    assert (decoded["decision"], decoded["predicted_fraud"]) == ("REVIEW", False)


def test_a_section_is_replaced_in_place(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\n## Reading these figures\n\nby hand\n")
    write_section(results, "peers", ["## Peers", "first"], before="## Reading these figures")
    write_section(results, "peers", ["## Peers", "second"], before="## Reading these figures")
    text = results.read_text()
    assert text.count("## Peers") == 1 and "second" in text and "first" not in text
    assert text.startswith("# Results\n") and text.endswith("## Reading these figures\n\nby hand\n")
    assert "second" in kept_section(results, "peers")
