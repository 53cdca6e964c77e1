"""What a bounded shutdown reports: per-partition offsets left for the next owner."""

from __future__ import annotations

import threading
from typing import cast

from confluent_kafka import Consumer

from streams.scoring.shutdown import ShutdownReport, close_within


def test_a_clean_report_says_so_and_an_unclean_one_names_each_partition() -> None:
    assert ShutdownReport(seconds=0.4).clean
    report = ShutdownReport({("tx", 3): 120, ("tx", 0): 7}, 5, False, 20.1)
    assert not report.clean
    line = report.describe()
    assert "5 record(s) unacknowledged" in line
    assert line.index("tx[0] below 7") < line.index("tx[3] below 120")
    assert "consumer close abandoned" in line


class HangingConsumer:
    """Like Consumer.close() with the coordinator unreachable: never returns on its own."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def close(self) -> None:
        self.release.wait()


def test_a_hanging_close_is_abandoned_after_the_bound() -> None:
    consumer = HangingConsumer()
    assert close_within(cast(Consumer, consumer), 1.0) is False  # returned: not blocked
    consumer.release.set()
