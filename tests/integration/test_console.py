"""The operator console in a real browser (Debian's Chromium under Playwright), against a real
broker, real ``sentinel score`` processes and a real ``sentinel console`` process.

What an operator would see: a page without errors whose traffic numbers move during a replay;
a 30% split set from the page, acked by every instance, putting ~30% of cards on B; promote from
the page moving every decision to A/v2; a drift replay from the load tester turning V14's bar
red; a malformed replay showing in the DLQ panel with its kinds; and a console bound beyond
loopback refusing mutations without its token. Every test saves a screenshot.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from schemas.features import FEATURE_NAMES
from streams.config import KafkaSettings, TopicNames
from streams.tools.replayer import ReplayOptions, ReplayResult, replay
from streams.tools.topics import TopicAdmin
from tests.fixtures.console import ConsoleLauncher, ConsolePage
from tests.fixtures.fleet import decided, versions
from tests.fixtures.models import FIXTURE_PREVALENCE
from tests.fixtures.scorer import ScorerLauncher, read_topic

pytestmark = pytest.mark.integration

Source = tuple[np.ndarray, np.ndarray]
WAIT_MS = 90_000
# The kinds the scorer gives each of the replayer's poison messages.
DLQ_KINDS = {"undecodable", "missing_field", "wrong_type", "feature_count", "not_finite",
             "absurd_value", "oversize", "invalid_json", "unknown_schema"}  # fmt: skip


@pytest.fixture(scope="module")
def source() -> Source:
    """Transactions drawn like the fixture bundles' training data: a clean replay is no drift."""
    from training.synth import generate

    frame = generate(rows=20_000, seed=11, prevalence=FIXTURE_PREVALENCE)
    return frame[list(FEATURE_NAMES)].to_numpy(np.float64), frame["Class"].to_numpy(np.int8)


@pytest.fixture(scope="module")
def replay_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The load tester's CSV: the same distribution as the fixture bundles' training data."""
    from training.synth import generate

    path = tmp_path_factory.mktemp("console") / "replay.csv"
    generate(rows=20_000, seed=12, prevalence=FIXTURE_PREVALENCE).to_csv(path, index=False)
    return path


def send(bootstrap: str, topics: TopicNames, source: Source, **options: Any) -> ReplayResult:
    features, labels = source
    return replay(
        KafkaSettings(bootstrap), topics.transactions, features, labels, ReplayOptions(**options)
    )


def number(page: ConsolePage, selector: str) -> float:
    text = page.page.locator(selector).inner_text().replace(",", "").replace("≥", "")
    return float(text) if re.fullmatch(r"-?[\d.]+", text) else 0.0


def wait_live(page: ConsolePage, instances: int) -> None:
    page.page.wait_for_function(
        f"document.querySelectorAll('#fleet-table tr.live').length >= {instances}",
        timeout=WAIT_MS,
    )


def test_the_page_loads_without_errors_and_its_traffic_numbers_move_during_a_replay(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    consoles: ConsoleLauncher,
    open_page: Any,
    source: Source,
    artifacts_dir: Path,
) -> None:
    scorer = scorers.start()
    scorer.wait_assigned()
    console = consoles.start(scrape=[scorer.metrics_port])
    page = open_page(console.url)
    wait_live(page, 1)
    assert number(page, "#traffic-count") == 0

    replaying = threading.Thread(
        target=send, args=(kafka_bootstrap, scorer_topics, source),
        kwargs={"count": 30_000, "rate": 2_000, "seed": 3},
    )  # fmt: skip
    replaying.start()
    try:
        page.page.wait_for_function(
            "Number(document.getElementById('traffic-rate').textContent.replace(/,/g, '')) > 0",
            timeout=WAIT_MS,
        )
        first = number(page, "#traffic-count")
        page.page.wait_for_function(
            "Number(document.getElementById('traffic-count').textContent.replace(/,/g, '')) > "
            f"{first}",
            timeout=WAIT_MS,
        )
        assert number(page, "#rate-ALLOW") > 0
        assert number(page, "#lat-p99") > 0
        assert number(page, "#batch-size") >= 1
        page.screenshot(artifacts_dir, "console-traffic")
    finally:
        replaying.join()
    page.page.wait_for_function(
        "Number(document.getElementById('traffic-count').textContent.replace(/,/g, '')) >= 30000",
        timeout=WAIT_MS,
    )
    assert page.page.locator("#fleet-table tr[data-scorer='scorer-0'] .badge").inner_text() == (
        "live"
    )
    assert page.errors == [], page.errors


def test_a_split_and_a_promote_from_the_page_are_acked_and_steer_the_decisions(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    consoles: ConsoleLauncher,
    open_page: Any,
    source: Source,
    second_bundle: Any,
    models_dir: Path,
    tmp_path: Path,
    artifacts_dir: Path,
) -> None:
    # A promote points models/current at the promoted version: use a private copy of the
    # session's bundles so other tests keep v1 as their current model.
    private = tmp_path / "models"
    shutil.copytree(models_dir, private)
    scorers.models_dir = consoles.models_dir = private
    fleet = [scorers.start(scorer_id=name) for name in ("scorer-0", "scorer-1")]
    for scorer in fleet:
        scorer.wait_assigned()
    console = consoles.start(scrape=[s.metrics_port for s in fleet])
    page = open_page(console.url)
    wait_live(page, 2)

    page.page.select_option("#ab-candidate", "v2")
    page.page.click("#ab-setup-btn")
    page.page.wait_for_selector("#ab-result [data-outcome=ok]", timeout=WAIT_MS)
    page.page.fill("#ab-split-input", "30")
    page.page.click("#ab-split-btn")
    page.page.wait_for_selector("#ab-result [data-outcome=ok]:has-text('ab_split')",
                                timeout=WAIT_MS)  # fmt: skip
    acks = page.page.locator("#ab-result tr[data-scorer]")
    assert acks.count() == 2
    assert {acks.nth(i).get_attribute("data-result") for i in range(2)} == {"ok"}
    assert "B v2 · 30%" in page.page.locator("#ab-result").inner_text()

    sent = send(kafka_bootstrap, scorer_topics, source, count=20_000, n_cards=20_000, seed=5)
    decisions = decided(kafka_bootstrap, scorer_topics, sent)
    variants: dict[str, set[str]] = defaultdict(set)
    for d in decisions:
        variants[d["card_id"]].add(d["variant"])
    on_b = np.mean([v == {"B"} for v in variants.values()])
    assert 0.27 <= on_b <= 0.33
    assert versions(decisions) == {("A", "v1"), ("B", "v2")}
    # The page's A/B table shows B's share of cards from its own sample of the decisions.
    page.page.wait_for_selector("#ab-table tr[data-variant=B]", timeout=WAIT_MS)
    cell = page.page.locator("#ab-table tr[data-variant=B] td.share-cards")
    shown = float(cell.inner_text().rstrip("%"))
    assert 20 <= shown <= 40, shown
    page.screenshot(artifacts_dir, "console-ab-split")

    page.page.click("#ab-promote-btn")
    page.page.wait_for_selector("#ab-result [data-outcome=ok]:has-text('promote')",
                                timeout=WAIT_MS)  # fmt: skip
    after = decided(kafka_bootstrap, scorer_topics, send(
        kafka_bootstrap, scorer_topics, source, count=2_000, seed=6))  # fmt: skip
    assert versions(after) == {("A", "v2")}
    page.page.wait_for_function(
        "document.getElementById('serving').textContent.includes('A v2') && "
        "!document.getElementById('serving').textContent.includes('B v')",
        timeout=WAIT_MS,
    )
    assert (private / "current").read_text().strip() == "v2"  # as `sentinel control promote`
    assert "models/current → v2" in page.page.locator("#ab-result").inner_text()
    page.screenshot(artifacts_dir, "console-ab-promoted")
    assert page.errors == [], page.errors


def test_a_drift_replay_from_the_load_tester_turns_v14s_bar_red(
    scorers: ScorerLauncher,
    consoles: ConsoleLauncher,
    open_page: Any,
    replay_csv: Path,
    artifacts_dir: Path,
) -> None:
    scorer = scorers.start("--drift-interval-s=2")
    scorer.wait_assigned()
    console = consoles.start(f"--replay-csv={replay_csv}", scrape=[scorer.metrics_port])
    page = open_page(console.url)
    wait_live(page, 1)
    v14 = "#drift-chart rect[data-feature=V14]"

    def load(run: int, count: int, drift: str) -> None:
        page.page.fill("#load-count", str(count))
        page.page.fill("#load-rate", "0")
        page.page.fill("#load-drift", drift)
        page.page.click("#load-start")
        page.page.wait_for_selector(f"#load-status [data-status=done][data-run='{run}']",
                                    timeout=WAIT_MS)  # fmt: skip

    load(1, 4_000, "")  # the training distribution: V14 stays blue
    page.page.wait_for_selector(v14, timeout=WAIT_MS)
    page.page.wait_for_function(
        "Number(document.getElementById('drift-summary').textContent.match(/([\\d,]+) rows/)"
        "?.[1].replace(/,/g, '')) >= 500",
        timeout=WAIT_MS,
    )
    assert page.page.get_attribute(v14, "data-drifted") == "false"

    load(2, 8_000, "V14=+1.5sd")
    page.page.wait_for_selector(f"{v14}[data-drifted=true]", timeout=WAIT_MS)
    assert page.page.get_attribute(v14, "fill") == "#c0392b"
    assert "V14" in page.page.locator("#drift-summary").inner_text()
    assert "8,000 of 8,000 decided" in page.page.locator("#load-status").inner_text()
    page.screenshot(artifacts_dir, "console-drift")
    assert page.errors == [], page.errors


def test_a_malformed_replay_shows_in_the_dlq_panel_with_its_kinds(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    scorers: ScorerLauncher,
    consoles: ConsoleLauncher,
    open_page: Any,
    replay_csv: Path,
    artifacts_dir: Path,
) -> None:
    scorer = scorers.start()
    scorer.wait_assigned()
    console = consoles.start(f"--replay-csv={replay_csv}", scrape=[scorer.metrics_port])
    page = open_page(console.url)
    wait_live(page, 1)
    assert page.page.locator("#dlq-table tbody tr").count() == 0

    page.page.fill("#load-count", "2000")
    page.page.fill("#load-rate", "1000")
    page.page.fill("#load-bad", "0.2")
    page.page.click("#load-start")
    page.page.wait_for_selector("#load-status [data-status=done][data-run='1']", timeout=WAIT_MS)
    page.page.wait_for_selector("#dlq-table tbody tr[data-kind]", timeout=WAIT_MS)

    on_topic = read_topic(kafka_bootstrap, scorer_topics.dlq, idle_s=3)
    kinds_on_topic = {dict(m.headers() or [])["sentinel.error.kind"].decode() for m in on_topic}
    page.page.wait_for_function(
        f"document.querySelectorAll('#dlq-kinds .chip').length >= {len(kinds_on_topic)}",
        timeout=WAIT_MS,
    )
    chips = page.page.locator("#dlq-kinds .chip")
    shown = {chips.nth(i).get_attribute("data-kind") for i in range(chips.count())}
    assert shown == kinds_on_topic
    assert shown <= DLQ_KINDS and len(shown) >= 3
    total = sum(int(chips.nth(i).inner_text().split("×")[1].replace(",", ""))
                for i in range(chips.count()))  # fmt: skip
    assert total == len(on_topic)
    row = page.page.locator("#dlq-table tbody tr[data-kind]").first
    assert re.search(r"\[\d+\]@\d+", row.inner_text()), row.inner_text()  # source partition/offset
    page.screenshot(artifacts_dir, "console-dlq")
    assert page.errors == [], page.errors


def test_bound_beyond_loopback_it_needs_a_token_and_refuses_mutations_without_it(
    kafka_bootstrap: str,
    scorer_topics: TopicNames,
    consoles: ConsoleLauncher,
    open_page: Any,
    artifacts_dir: Path,
) -> None:
    with pytest.raises(AssertionError, match=r"refusing to bind 0\.0\.0\.0"):
        consoles.start("--host=0.0.0.0", env={"SENTINEL_CONSOLE_TOKEN": ""})

    token, key = "t0ken-" + "x" * 20, "control-signing-secret-42"
    console = consoles.start(
        "--host=0.0.0.0", env={"SENTINEL_CONSOLE_TOKEN": token, "SENTINEL_CONTROL_KEY": key}
    )
    admin = TopicAdmin(KafkaSettings(kafka_bootstrap))
    split = {"percent": 30}
    assert console.request("POST", "/api/ab/split", split) == (
        401, {"error": "missing or wrong token: send Authorization: Bearer <token>"})  # fmt: skip
    wrong = {"Authorization": "Bearer not-the-token"}
    assert console.request("POST", "/api/ab/split", split, wrong)[0] == 401
    right = {"Authorization": f"Bearer {token}"}
    status, body = console.request(
        "POST", "/api/ab/split", split, {**right, "Origin": "http://elsewhere.example"}
    )
    assert status == 403 and "cross-site" in body["error"]
    status, body = console.request("POST", "/api/ab/split", split,
                                   {**right, "Content-Type": "text/plain"})  # fmt: skip
    assert status == 415
    status, body = console.request("POST", "/api/ab/split", {"percent": 130}, right)
    assert (status, body) == (400, {"error": "percent must be an integer 0-100, got 130"})
    status, body = console.request("POST", "/api/ab/setup", {"candidate_version": "../x"}, right)
    assert status == 400 and "version name" in body["error"]
    # Past every guard: refused only because no scorer is live, and still nothing published.
    status, body = console.request("POST", "/api/ab/split", split, right)
    assert status == 409 and body["published"] is False
    assert admin.end_offsets(scorer_topics.control) == {0: 0}

    page = open_page(console.url)
    page.page.wait_for_selector("#token-box:not([hidden])", timeout=WAIT_MS)
    page.page.click("#ab-split-btn")
    page.page.wait_for_selector("#ab-result [data-outcome=error]", timeout=WAIT_MS)
    assert "missing or wrong token" in page.page.locator("#ab-result").inner_text()
    page.screenshot(artifacts_dir, "console-token")
    assert admin.end_offsets(scorer_topics.control) == {0: 0}
    # The control signing key signs on the server and never reaches the browser.
    for path in ("/", "/api/health", "/api/version", "/api/fleet", "/api/ab/status",
                 "/openapi.json", "/static/console.js"):  # fmt: skip
        assert key not in page.page.request.get(console.url.rstrip("/") + path).text()
    assert key not in console.output()
    # The page's own failed mutation logs a 401 in the browser console; nothing else may.
    assert all("401" in error for error in page.errors), page.errors
