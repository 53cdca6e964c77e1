"""`sentinel broker` on bad input: clear one-line errors and non-zero exits, no network needed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from streams.cli import main


@pytest.fixture(autouse=True)
def _no_external_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    # With KAFKA_BOOTSTRAP_SERVERS set, `broker start|status` manage nothing; these tests are
    # about the local broker.
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("SENTINEL_BROKER_DIR", raising=False)
    monkeypatch.delenv("SENTINEL_KAFKA_CACHE", raising=False)


def _path_with(tmp_path: Path, tools: dict[str, str]) -> str:
    """A PATH directory holding only ``tools`` (name -> shell script body)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in tools.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return str(bin_dir)


def _start_args(tmp_path: Path) -> list[str]:
    # An empty jar cache: the first start would need Maven.
    return [
        "broker",
        "start",
        "--broker-dir",
        str(tmp_path / "broker"),
        "--cache-dir",
        str(tmp_path / "empty-cache"),
    ]


def test_unknown_subcommand_names_it_and_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["broker", "restart"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "invalid choice: 'restart'" in err
    assert "'start'" in err and "'status'" in err and "'stop'" in err


def test_bad_flag_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["broker", "start", "--broker-dir", str(tmp_path), "--bogus-flag"])
    assert exit_info.value.code != 0
    assert "unrecognized arguments: --bogus-flag" in capsys.readouterr().err
    assert not (tmp_path / "broker.json").exists()


def test_missing_java_and_maven_are_both_named_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", _path_with(tmp_path, {}))

    assert main(_start_args(tmp_path)) == 1

    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1
    line = err_lines[0]
    assert line.startswith("sentinel: error: ")
    assert "'java' was not found on PATH" in line and "openjdk-17-jre-headless" in line
    assert "'mvn' was not found on PATH" in line and "apt-get install -y maven" in line


def test_missing_java_is_reported_before_maven_downloads_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    invoked = tmp_path / "mvn-was-invoked"
    monkeypatch.setenv("PATH", _path_with(tmp_path, {"mvn": f"touch {invoked}; exit 1"}))

    assert main(_start_args(tmp_path)) == 1

    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'java' was not found on PATH" in err and "openjdk-17-jre-headless" in err
    assert "mvn" not in err
    assert not invoked.exists()


def test_missing_maven_with_an_empty_cache_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started = tmp_path / "java-was-invoked"
    monkeypatch.setenv("PATH", _path_with(tmp_path, {"java": f"touch {started}; exit 1"}))

    assert main(_start_args(tmp_path)) == 1

    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [
        "sentinel: error: 'mvn' was not found on PATH: the first broker start downloads "
        "Kafka's jars from Maven Central with Maven: install it (Debian: apt-get install -y maven)"
    ]
    assert not started.exists()


def test_status_without_a_broker_exits_1_with_a_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["broker", "status", "--broker-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"no local broker is running (state dir {tmp_path.resolve()})"]


def test_status_after_a_crash_reports_no_broker_and_clears_the_stale_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crashed = subprocess.Popen(["true"])  # stands in for a broker that died: a reaped pid
    crashed.wait()
    state = {
        "pid": crashed.pid,
        "bootstrap": "127.0.0.1:1",
        "controller": "127.0.0.1:2",
        "data_dir": str(tmp_path / "data"),
        "log_file": str(tmp_path / "server.log"),
        "config_file": str(tmp_path / "server.properties"),
        "started_at": 0.0,
    }
    (tmp_path / "broker.json").write_text(json.dumps(state))

    assert main(["broker", "status", "--broker-dir", str(tmp_path)]) == 1
    assert "no local broker is running" in capsys.readouterr().out
    assert not (tmp_path / "broker.json").exists()


def test_corrupt_state_file_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broker.json").write_text("{not json")

    assert main(["broker", "status", "--broker-dir", str(tmp_path)]) == 1

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("sentinel: error: the broker state file ")
    assert str(tmp_path / "broker.json") in err[0]


def test_stop_without_a_broker_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["broker", "stop", "--broker-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "no local broker was running"


def test_start_with_an_external_cluster_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.example:9092")
    monkeypatch.setenv("PATH", _path_with(tmp_path, {}))  # nothing could start anyway

    assert main(_start_args(tmp_path)) == 0

    assert "using kafka.example:9092, starting nothing" in capsys.readouterr().out
    assert not (tmp_path / "broker").exists()
