"""``make chaos``: the fault suite with bigger volumes and real outages, figures to the docs.

Runs every scenario against a dedicated local broker (started here, restarted on the same
address where a scenario needs it), audits the decisions topic by transaction id, and rewrites
the generated section of docs/reliability.md with what it saw: lost, duplicated, longest gap in
decisions per partition, recovery and exit times. Nothing here asserts timings (it reports them);
it exits non-zero only if a transaction was lost or a scorer failed to exit.

    python -m tests.chaos.run [--rate 400] [--downtimes 15,60] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.features import FEATURE_NAMES
from tests.fixtures.faults import (
    Audit,
    DedicatedBroker,
    Load,
    audit,
    create_decisions_topic,
    create_topics,
    delete_topic,
)
from tests.fixtures.models import train_small_bundle
from tests.fixtures.scorer import ScorerLauncher

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN, END = "<!-- chaos:begin -->", "<!-- chaos:end -->"


@dataclass
class Row:
    scenario: str
    result: Audit | None
    figure: str  # the scenario's own timing, in words

    def cells(self) -> list[str]:
        r = self.result
        if r is None:
            return [self.scenario, "-", "-", "-", "-", self.figure]
        gap = max(r.longest_gap_s.values(), default=0.0)
        return [
            self.scenario,
            str(r.sent),
            str(len(r.lost)),
            f"{r.duplicates} ({'same p' if r.duplicates_same_probability else 'DIFFERENT p'})",
            f"{gap:.1f} s",
            self.figure,
        ]


class Chaos:
    def __init__(self, work: Path, rate: float) -> None:
        self.work = work
        self.rate = rate
        self.broker = DedicatedBroker(work / "broker")
        self.models = work / "models"
        train_small_bundle(self.models, seed=7, version="v1", activate=True)
        from training.synth import generate

        frame = generate(rows=5_000, seed=5)
        self.features = frame[list(FEATURE_NAMES)].to_numpy(np.float64)
        self.failures: list[str] = []
        self._runs = 0

    def launcher(self, name: str) -> tuple[ScorerLauncher, Load]:
        self._runs += 1
        topics = create_topics(self.broker.bootstrap, name)
        logs = self.work / f"{self._runs:02d}-{name}"
        logs.mkdir()
        launcher = ScorerLauncher(self.broker.bootstrap, topics, self.models, logs)
        load = Load(self.broker.bootstrap, topics.transactions, self.rate, self.features)
        return launcher, load

    def check(self, row: Row) -> Row:
        if row.result is not None and row.result.lost:
            self.failures.append(f"{row.scenario}: {len(row.result.lost)} lost")
        print(f"  {row.scenario}: {row.result.summary() if row.result else ''} | {row.figure}")
        return row

    # -- scenarios ----------------------------------------------------------------------------

    def broker_restart(self, downtime_s: float) -> Row:
        launcher, load = self.launcher(f"restart{int(downtime_s)}")
        try:
            scorer = launcher.start(scorer_id="steady")
            load.start()
            scorer.wait_assigned()
            time.sleep(8)
            down_at = time.time()  # from the stop request: the broker answers nothing from here
            self.broker.stop()
            time.sleep(downtime_s)
            self.broker.start()
            back_at = time.time()
            time.sleep(20)
            result = audit(self.broker.bootstrap, launcher.topics.decisions, load.stop())
            alive = scorer.proc.poll() is None
            if not alive:
                self.failures.append(f"restart {downtime_s}: scorer died")
            outage = back_at - down_at
            return self.check(
                Row(
                    f"broker stop+start, {downtime_s:.0f} s down (1 scorer)",
                    result,
                    f"outage {outage:.1f} s; all partitions decided again "
                    f"{result.resumed_after(back_at):.1f} s after the broker was back; longest "
                    f"gap - outage = {max(result.longest_gap_s.values()) - outage:.1f} s; "
                    f"same process: {alive}",
                )
            )
        finally:
            launcher.stop_all()

    def kill_failover(self, label: str, *flags: str) -> Row:
        launcher, load = self.launcher("kill")
        try:
            launcher.start(*flags, scorer_id="survivor")
            victim = launcher.start(*flags, scorer_id="victim")
            load.start()
            victim.wait_assigned(timeout_s=120)
            time.sleep(8)
            killed_at = time.time()
            victim.kill()
            deadline = time.monotonic() + 120
            time.sleep(10)
            result = audit(self.broker.bootstrap, launcher.topics.decisions, [])
            while result.resumed_after(killed_at) == float("inf") and time.monotonic() < deadline:
                time.sleep(5)
                result = audit(self.broker.bootstrap, launcher.topics.decisions, [])
            result = audit(self.broker.bootstrap, launcher.topics.decisions, load.stop())
            return self.check(
                Row(
                    f"kill -9 of 1 of 2 scorers, {label}",
                    result,
                    f"victim's partitions decided again {result.resumed_after(killed_at):.1f} s "
                    "after kill -9",
                )
            )
        finally:
            launcher.stop_all()

    def scale_1_3_1(self) -> Row:
        launcher, load = self.launcher("scale")
        try:
            first = launcher.start(scorer_id="first")
            load.start()
            first.wait_assigned()
            time.sleep(5)
            grew_at = time.time()
            extra = [launcher.start(scorer_id=f"extra-{k}") for k in range(2)]
            for scorer in extra:
                scorer.wait_assigned()
            time.sleep(8)
            began = time.monotonic()
            codes = [scorer.terminate() for scorer in extra]
            stop_s = time.monotonic() - began
            time.sleep(8)
            result = audit(self.broker.bootstrap, launcher.topics.decisions, load.stop())
            if codes != [0, 0]:
                self.failures.append(f"1->3->1: exit codes {codes}")
            gap_after_growth = max(
                (b - a)
                for times in result.stored_at.values()
                for a, b in itertools.pairwise(times)
                if a >= grew_at
            )
            return self.check(
                Row(
                    "1 -> 3 -> 1 scorers (SIGTERM)",
                    result,
                    f"exit codes {codes}, two SIGTERMs took {stop_s:.1f} s; longest gap after "
                    f"scale-out began {gap_after_growth:.1f} s",
                )
            )
        finally:
            launcher.stop_all()

    def sigterm_with_broker(self, how: str) -> Row:
        launcher, load = self.launcher(f"sigterm-{how}")
        try:
            scorer = launcher.start(scorer_id="leaving")
            load.start()
            scorer.wait_assigned()
            time.sleep(5)
            if how == "stopped":
                self.broker.stop()
            else:
                self.broker.freeze()
            time.sleep(3)
            began = time.monotonic()
            try:
                code = scorer.terminate(timeout_s=240)
            except subprocess.TimeoutExpired:
                code = -1
                self.failures.append(f"SIGTERM with broker {how}: no exit within 240 s")
            took = time.monotonic() - began
            if how == "stopped":
                self.broker.start()
            else:
                self.broker.thaw()
            replacement = launcher.start(scorer_id="replacement")
            replacement.wait_assigned()
            time.sleep(5)
            result = audit(self.broker.bootstrap, launcher.topics.decisions, load.stop())
            reported = re.findall(r"shutdown in .*", scorer.output())
            return self.check(
                Row(
                    f"SIGTERM while the broker is {how} (default 20 s bound)",
                    result,
                    f"exited in {took:.1f} s with code {code}; "
                    f"report: {reported[-1][:160] if reported else 'none'}",
                )
            )
        finally:
            launcher.stop_all()

    def decisions_recreated(self) -> Row:
        launcher, load = self.launcher("recreate")
        try:
            scorer = launcher.start(scorer_id="writer")
            load.start()
            scorer.wait_assigned()
            time.sleep(5)
            delete_topic(self.broker.bootstrap, launcher.topics.decisions)
            cut = len(load.sent)
            time.sleep(5)
            create_decisions_topic(self.broker.bootstrap, launcher.topics.decisions)
            created_at = time.time()
            time.sleep(15)
            result = audit(self.broker.bootstrap, launcher.topics.decisions, load.stop()[cut:])
            return self.check(
                Row(
                    "decisions topic deleted, re-created 5 s later",
                    result,
                    f"decisions stored again {result.resumed_after(created_at):.1f} s after "
                    f"re-creation; scorer alive: {scorer.proc.poll() is None}",
                )
            )
        finally:
            launcher.stop_all()


def write_doc(rows: list[Row], rate: float, seconds: float) -> None:
    header = ["scenario", "sent", "lost", "duplicated", "longest gap", "timings"]
    lines = [
        BEGIN,
        f"Generated by `make chaos` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"({platform.machine()}, {platform.python_version()}, load {rate:.0f} tx/s, "
        f"{seconds / 60:.0f} min). Longest gap: the longest time between two decisions the "
        "broker stored for one source partition (LogAppendTime), over the whole run.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    lines.append(END)
    text = DOC.read_text() if DOC.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    generated = "\n".join(lines)
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: generated, text, flags=re.S)
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=400.0, help="load, transactions/s")
    parser.add_argument("--downtimes", default="15,60", help="broker outages to try, seconds")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to run")
    parser.add_argument("--no-doc", action="store_true", help="print only, leave the doc alone")
    args = parser.parse_args(argv)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sentinel-chaos-") as tmp:
        chaos = Chaos(Path(tmp), args.rate)
        downtimes = [float(d) for d in args.downtimes.split(",") if d]
        scenarios: dict[str, Callable[[], list[Row]]] = {
            "restart": lambda: [chaos.broker_restart(d) for d in downtimes],
            "kill": lambda: [
                chaos.kill_failover("default (classic, 6 s session)"),
                chaos.kill_failover("static membership", "--static-membership=true"),
                chaos.kill_failover("classic, 45 s session", "--session-timeout-ms=45000"),
                chaos.kill_failover("KIP-848 (broker default 45 s)", "--group-protocol=consumer"),
            ],
            "scale": lambda: [chaos.scale_1_3_1()],
            "sigterm": lambda: [
                chaos.sigterm_with_broker("stopped"),
                chaos.sigterm_with_broker("frozen"),
            ],
            "recreate": lambda: [chaos.decisions_recreated()],
        }
        rows: list[Row] = []
        try:
            for name, run in scenarios.items():
                if args.only is None or name in args.only:
                    print(f"chaos: {name}", flush=True)
                    rows += run()
        finally:
            chaos.broker.close()
    if not args.no_doc:
        write_doc(rows, args.rate, time.monotonic() - began)
        print(f"wrote {DOC}")
    for failure in chaos.failures:
        print(f"chaos: FAILED {failure}", file=sys.stderr)
    return 1 if chaos.failures else 0


if __name__ == "__main__":
    sys.exit(main())
