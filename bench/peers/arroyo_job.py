"""The fraud-scoring job written with sentry-arroyo, as its docs suggest for batch work.

Strategy chain, per assignment:
  BatchStep (up to 2,000 messages or 5 ms) -> RunTask (decode the batch, ONE ONNX call, encode)
  -> UnbatchStep -> Produce (arroyo's KafkaProducer: a future per decision) -> CommitOffsets
so an offset is committed only after its decision's delivery future resolved (at least once).
Run in the arroyo virtualenv (bench/peers/requirements-arroyo.txt); started by bench/run_peers.py.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from typing import Any

import numpy as np
from arroyo.backends.kafka import KafkaConsumer, KafkaPayload, KafkaProducer
from arroyo.backends.kafka.configuration import (
    build_kafka_configuration,
    build_kafka_consumer_configuration,
)
from arroyo.processing import StreamProcessor
from arroyo.processing.strategies import (
    BatchStep,
    CommitOffsets,
    ProcessingStrategy,
    ProcessingStrategyFactory,
    Produce,
    RunTask,
    UnbatchStep,
)
from arroyo.processing.strategies.batching import ValuesBatch
from arroyo.types import BrokerValue, Commit, Message, Partition, Topic
from scoring_job import PRODUCER_SETTINGS, AvroRecord, FraudModel, arguments, decision, feature_row

MAX_BATCH_SIZE = 2_000
MAX_BATCH_TIME_S = 0.005


class ScoreBatches(ProcessingStrategyFactory[KafkaPayload]):
    def __init__(self, model: FraudModel, producer: KafkaProducer, output: Topic) -> None:
        self.model = model
        self.producer = producer
        self.output = output
        self.transactions = AvroRecord("transaction")
        self.decisions = AvroRecord("decision")

    def score(self, message: Message[ValuesBatch[KafkaPayload]]) -> ValuesBatch[KafkaPayload]:
        batch = message.payload
        records = [self.transactions.decode(value.payload.value) for value in batch]
        matrix = np.array([feature_row(r) for r in records], dtype=np.float32)
        probabilities = self.model.predict(matrix).tolist()
        out: ValuesBatch[KafkaPayload] = []
        for value, record, probability in zip(batch, records, probabilities, strict=True):
            assert isinstance(value, BrokerValue)
            verdict = decision(
                self.model,
                record,
                probability,
                batch_size=len(batch),
                scorer_id="arroyo",
                source_topic=value.partition.topic.name,
                partition=value.partition.index,
                offset=value.offset,
            )
            payload = KafkaPayload(value.payload.key, self.decisions.encode(verdict), [])
            out.append(value.replace(payload))
        return out

    def create_with_partitions(
        self, commit: Commit, partitions: Mapping[Partition, int]
    ) -> ProcessingStrategy[KafkaPayload]:
        print(f"assigned partitions {sorted(p.index for p in partitions)}", flush=True)
        produce: Produce[Any] = Produce(self.producer, self.output, CommitOffsets(commit))
        return BatchStep(
            MAX_BATCH_SIZE, MAX_BATCH_TIME_S, RunTask(self.score, UnbatchStep(produce))
        )


def main() -> None:
    args = arguments(__doc__ or "").parse_args()
    servers = [args.bootstrap_servers]
    consumer = KafkaConsumer(
        build_kafka_consumer_configuration(
            {}, group_id=args.group_id, auto_offset_reset="earliest", bootstrap_servers=servers
        )
    )
    producer = KafkaProducer(
        build_kafka_configuration({}, bootstrap_servers=servers, override_params=PRODUCER_SETTINGS)
    )
    factory = ScoreBatches(FraudModel.load(args.models_dir), producer, Topic(args.output_topic))
    processor = StreamProcessor(consumer, Topic(args.input_topic), factory)
    signal.signal(signal.SIGTERM, lambda *_: processor.signal_shutdown())
    signal.signal(signal.SIGINT, lambda *_: processor.signal_shutdown())
    processor.run()
    producer.close().result(30)


if __name__ == "__main__":
    main()
