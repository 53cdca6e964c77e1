"""The fraud-scoring job written with Quix Streams, in its two idiomatic shapes.

``--shape apply`` (Quix's model: one message at a time):
  app.dataframe(transactions) .apply(score one transaction) .to_topic(decisions)
  with the topic's Avro (de)serializers; Quix commits each checkpoint (``commit_interval``) after
  flushing its producer, so offsets trail acknowledged decisions (at least once).
``--shape sink`` (Quix's batching sink):
  app.dataframe(transactions) .sink(ScoringSink) where the sink's ``write`` gets each
  partition's batch at a checkpoint, scores it in ONE ONNX call, produces the decisions and
  flushes before returning; Quix commits only after every sink flushed. A checkpoint every
  2,000 messages or 5 ms mirrors the arroyo job's batch policy.
Run in the Quix virtualenv (bench/peers/requirements-quix.txt); started by bench/run_peers.py.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
from confluent_kafka import Producer
from quixstreams import Application, message_context
from quixstreams.models.serializers import Deserializer, SerializationContext, Serializer
from quixstreams.sinks import BatchingSink, SinkBatch
from scoring_job import PRODUCER_SETTINGS, AvroRecord, FraudModel, arguments, decision, feature_row

SINK_BATCH_SIZE = 2_000
SINK_BATCH_TIME_S = 0.005


class AvroDeserializer(Deserializer):
    def __init__(self, record: AvroRecord) -> None:
        super().__init__()
        self.record = record

    def __call__(self, value: bytes, ctx: SerializationContext) -> dict[str, Any]:
        return self.record.decode(value)


class AvroSerializer(Serializer):
    def __init__(self, record: AvroRecord) -> None:
        self.record = record

    def __call__(self, value: dict[str, Any], ctx: SerializationContext) -> bytes:
        return self.record.encode(value)


class ScoringSink(BatchingSink):
    """Scores a checkpoint's batch of one partition at once and writes it to Kafka."""

    def __init__(self, model: FraudModel, bootstrap: str, output_topic: str) -> None:
        super().__init__()
        self.model = model
        self.output_topic = output_topic
        self.decisions = AvroRecord("decision")
        self.producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})

    def write(self, batch: SinkBatch) -> None:
        items = list(batch)
        matrix = np.array([feature_row(item.value) for item in items], dtype=np.float32)
        probabilities = self.model.predict(matrix).tolist()
        for item, probability in zip(items, probabilities, strict=True):
            verdict = decision(
                self.model,
                item.value,
                probability,
                batch_size=len(items),
                scorer_id="quix-sink",
                source_topic=batch.topic,
                partition=batch.partition,
                offset=item.offset,
            )
            self.producer.produce(self.output_topic, self.decisions.encode(verdict), item.key)
        failed = self.producer.flush(30)  # Quix commits after write returns: acks first
        if failed:
            raise RuntimeError(f"{failed} decisions not acknowledged")


def main() -> None:
    parser = arguments(__doc__ or "")
    parser.add_argument("--shape", choices=("apply", "sink"), default="apply")
    args = parser.parse_args()
    model = FraudModel.load(args.models_dir)
    batch_policy = (
        {"commit_every": SINK_BATCH_SIZE, "commit_interval": SINK_BATCH_TIME_S}
        if args.shape == "sink"
        else {}
    )
    app = Application(
        broker_address=args.bootstrap_servers,
        consumer_group=args.group_id,
        auto_offset_reset="earliest",
        producer_extra_config=dict(PRODUCER_SETTINGS),
        state_dir=tempfile.mkdtemp(prefix="quix-state-"),
        use_changelog_topics=False,
        loglevel="WARNING",
        **batch_policy,
    )
    transactions = app.topic(
        args.input_topic,
        key_deserializer="bytes",
        value_deserializer=AvroDeserializer(AvroRecord("transaction")),
    )
    sdf = app.dataframe(transactions)
    if args.shape == "sink":
        sdf.sink(ScoringSink(model, args.bootstrap_servers, args.output_topic))
    else:

        def score(transaction: dict[str, Any]) -> dict[str, Any]:
            row = np.array([feature_row(transaction)], dtype=np.float32)
            context = message_context()
            return decision(
                model,
                transaction,
                float(model.predict(row)[0]),
                batch_size=1,
                scorer_id="quix",
                source_topic=context.topic,
                partition=context.partition,
                offset=context.offset,
            )

        decisions = app.topic(
            args.output_topic,
            key_serializer="bytes",
            value_serializer=AvroSerializer(AvroRecord("decision")),
        )
        sdf.apply(score).to_topic(decisions)
    app.run()


if __name__ == "__main__":
    main()
