"""docker-compose.yml is validated structurally: no Docker engine runs here (see README)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.cli._args import topic_env
from streams.config import TOPIC_ROLES

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "ops" / "Dockerfile"
SENTINEL_VARIABLE = re.compile(r"\b(SENTINEL_[A-Z0-9_]+|KAFKA_BOOTSTRAP_SERVERS)\b")
# Host paths a user produces before `docker compose --profile demo up` (gitignored, not in repo).
PRODUCED_BY_USER = {"data": "sentinel data synth, or the Kaggle creditcard.csv, writes it"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def cli_variables() -> set[str]:
    """Every SENTINEL_* / KAFKA_BOOTSTRAP_SERVERS string literal in the CLI's sources, plus the
    topic variables the CLI derives from the topic roles."""
    literal = re.compile(r"""["'](SENTINEL_[A-Z0-9_]+|KAFKA_BOOTSTRAP_SERVERS)["']""")
    names: set[str] = {topic_env(role) for role in TOPIC_ROLES}
    for source in (ROOT / "streams" / "cli").glob("*.py"):
        names |= set(literal.findall(source.read_text()))
    return names


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def runs_sentinel(service: dict[str, Any]) -> bool:
    build = service.get("build")
    dockerfile = build.get("dockerfile") if isinstance(build, dict) else None
    return dockerfile == "ops/Dockerfile"


def test_every_product_service_is_there(compose: dict[str, Any]) -> None:
    assert {"kafka", "topics", "scorer", "replayer", "prometheus", "grafana"} <= set(
        compose["services"]
    )
    assert compose["services"]["replayer"]["profiles"] == ["demo"]


def test_each_service_has_an_image_or_a_build_context_with_its_dockerfile(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        assert service.get("image") or build, name
        if build is None:
            continue
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "")
        assert context.is_dir(), f"{name}: build context {context} is missing"
        assert (context / (dockerfile or "Dockerfile")).is_file(), f"{name}: no {dockerfile}"


def test_depends_on_names_existing_services_with_a_condition_they_can_meet(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        for target, spec in depends.items() if isinstance(depends, dict) else []:
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", f"{target} must be one-shot"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    scorer_depends = services["scorer"]["depends_on"]["topics"]["condition"]
    assert scorer_depends == "service_completed_successfully"


def test_mounted_host_paths_exist_in_the_repository(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith((".", "/")):
                assert source in named, f"{name}: volume {source} is not declared"
                continue
            path = (ROOT / source).resolve()
            if path.relative_to(ROOT).parts[0] in PRODUCED_BY_USER:
                continue
            assert path.exists(), f"{name}: host path {source} does not exist"


def test_scorer_reads_models_read_only(compose: dict[str, Any]) -> None:
    assert "./models:/models:ro" in compose["services"]["scorer"]["volumes"]
    assert environment(compose["services"]["scorer"])["SENTINEL_MODELS_DIR"] == "/models"


def test_every_sentinel_variable_in_the_compose_file_is_known_to_the_cli(
    compose: dict[str, Any],
) -> None:
    known = cli_variables()
    assert {"KAFKA_BOOTSTRAP_SERVERS", "SENTINEL_METRICS_PORT", "SENTINEL_TOPIC_DLQ"} <= known
    sentinel_services = [s for s in compose["services"].values() if runs_sentinel(s)]
    assert len(sentinel_services) == 3  # topics, scorer, replayer
    used: set[str] = set()
    for service in sentinel_services:
        for key, value in environment(service).items():
            used |= set(SENTINEL_VARIABLE.findall(key)) | set(SENTINEL_VARIABLE.findall(value))
    unknown = sorted(used - known)
    assert not unknown, f"compose sets variables no sentinel command reads: {unknown}"


def test_sentinel_services_reach_kafka_on_its_in_network_listener(
    compose: dict[str, Any],
) -> None:
    kafka_env = environment(compose["services"]["kafka"])
    assert compose["services"]["kafka"]["image"] == "apache/kafka:4.1.1"
    assert set(kafka_env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    advertised = dict(
        listener.split("://") for listener in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    internal = advertised[kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    for name, service in compose["services"].items():
        if runs_sentinel(service):
            assert environment(service)["KAFKA_BOOTSTRAP_SERVERS"] == internal, name


def test_prometheus_scrapes_the_port_the_scorer_serves(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "sentinel-scorer")
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["scorer"]
    assert (
        str(discovery["port"])
        == environment(compose["services"]["scorer"])["SENTINEL_METRICS_PORT"]
    )
    assert config["rule_files"] == ["alerts.yml"]
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./ops/prometheus:/etc/prometheus:ro" in mounts


def test_scorer_healthcheck_asks_the_progress_endpoint_on_its_metrics_port(
    compose: dict[str, Any],
) -> None:
    scorer = compose["services"]["scorer"]
    probe = " ".join(scorer["healthcheck"]["test"])
    port = environment(scorer)["SENTINEL_METRICS_PORT"]
    assert f"http://127.0.0.1:{port}/healthz" in probe  # progress, not just a live process


def test_docker_waits_longer_than_the_scorer_shutdown_bound(compose: dict[str, Any]) -> None:
    """Docker must not SIGKILL a scorer that is still inside its bounded shutdown."""
    from streams.cli.score import CONTROL_CLOSE_S

    scorer = compose["services"]["scorer"]
    shutdown = re.search(r":-(\d+)", environment(scorer)["SENTINEL_SHUTDOWN_TIMEOUT_S"])
    grace = re.fullmatch(r"(\d+)s", scorer["stop_grace_period"])
    assert shutdown and grace
    assert int(grace.group(1)) > int(shutdown.group(1)) + CONTROL_CLOSE_S


def test_image_installs_runtime_dependencies_only() -> None:
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    instructions = [line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")]
    installs = [line for line in instructions if "pip install" in line]
    assert installs, "the Dockerfile installs nothing"
    for line in installs:
        assert "[" not in line, f"extras (e.g. [train]) must not be installed: {line.strip()}"
        for library in ("xgboost", "scikit-learn", "sklearn", "pandas", "matplotlib"):
            assert library not in line
    copied = re.findall(r"^COPY\s+(\S+)", dockerfile, re.M)
    assert not any(path.startswith(("training", "tests", "bench")) for path in copied)
