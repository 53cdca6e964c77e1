"""The console's API guards and documentation, over fakes of its Kafka-facing services.

A user would notice: a cross-site page, a request without the token, a bad value or a wrong
content type gets a 4xx with a clear message and publishes nothing; a good request publishes a
command signed on the server; the OpenAPI document and the README list exactly the routes served.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from streams.config import KafkaSettings, TopicNames
from streams.console import app as console_app
from streams.console.app import Services, create_app
from streams.console.config import ConsoleConfig
from streams.console.openapi import ENDPOINTS, markdown_table
from streams.control.client import CommandOutcome
from streams.control.commands import ControlCommand, parse_command

KEY = b"fleet-signing-key"
TOKEN = "console-token-0123456789"
HOST = "127.0.0.1:8765"
JSON = {"Content-Type": "application/json"}
REPO = Path(__file__).resolve().parents[4]


class FakeFollower:
    alive, error = True, None

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def fleet_view(self) -> dict[str, Any]:
        return {"instances": [], "live": 1, "divergent": False, "state": None}

    def ab_view(self) -> dict[str, Any]:
        return {"variants": [], "sampled": 0, "decoded": 0, "decisions_seen": 0}

    def recent_acks(self) -> list[Any]:
        return []

    def drift_view(self, variants: Any) -> dict[str, Any]:
        return {"versions": []}

    def dlq_view(self) -> dict[str, Any]:
        return {"latest": [], "by_kind": {}, "read": 0}

    def clear_sample(self) -> None: ...


class FakeTraffic:
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def snapshot(self) -> dict[str, Any]:
        return {"targets": [], "variants": []}


class FakeLoad:
    def view(self) -> dict[str, Any]:
        return {"status": "idle"}


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[ControlCommand]:
    """Every command the app would publish (the fake fleet has one live instance that acks)."""
    commands: list[ControlCommand] = []

    def issue(
        settings: Any, topics: Any, command: ControlCommand, timeout: float, models_dir: Path
    ) -> Any:
        commands.append(command)
        ack = {"result": "ok", "reason": None, "state": {"a_version": "v1"}}
        return CommandOutcome(command, ("scorer-0",), len(commands) - 1, {"scorer-0": ack})

    monkeypatch.setattr(console_app, "issue_command", issue)
    return commands


def client(tmp_path: Path, **overrides: Any) -> TestClient:
    models = tmp_path / "models"
    for version in ("v1", "v2"):
        (models / version).mkdir(parents=True, exist_ok=True)
        (models / version / "manifest.json").write_text(json.dumps({"version": version}))
        (models / version / "pr_curve.png").write_bytes(b"\x89PNG fake")
    (models / "current").write_text("v1\n")
    (tmp_path / "secret.png").write_bytes(b"outside the bundle")
    settings: dict[str, Any] = {
        "kafka": KafkaSettings("127.0.0.1:9"),
        "topics": TopicNames(),
        "models_dir": models,
        "signing_key": KEY,
        "key_id": "default",
        **overrides,
    }
    config = ConsoleConfig(**settings)
    services = Services(config, FakeFollower(), FakeTraffic(), FakeLoad())  # type: ignore[arg-type]
    return TestClient(create_app(services), base_url=f"http://{HOST}")


def test_a_good_split_is_published_signed_on_the_server_and_the_key_never_leaves(
    tmp_path: Path, published: list[ControlCommand]
) -> None:
    with client(tmp_path) as api:
        response = api.post("/api/ab/split", json={"percent": 30})
    assert response.status_code == 200
    assert response.json()["results"] == [
        {"scorer_id": "scorer-0", "result": "ok", "reason": None, "state": {"a_version": "v1"}}
    ]
    (command,) = published
    assert parse_command(command.encode(), {"default": KEY}).percent == 30  # a valid signature
    assert KEY.decode() not in response.text


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/api/ab/split", {"percent": 130}, 400, "percent must be an integer 0-100, got 130"),
        ("/api/ab/split", {"percent": "30"}, 400, "percent must be an integer 0-100, got '30'"),
        ("/api/ab/split", {"percent": True}, 400, "percent must be an integer 0-100, got True"),
        ("/api/ab/split", {}, 400, "missing field: percent (an integer 0-100)"),
        ("/api/ab/split", {"percent": 3, "x": 1}, 400, "unknown field(s): x"),
        ("/api/ab/setup", {"candidate_version": "v9"}, 400, "no bundle 'v9' in"),
        ("/api/ab/setup", {"candidate_version": "../v1"}, 400, "must be a version name"),
        ("/api/ab/promote", {"force": True}, 400, "unknown field(s): force"),
        ("/api/load", {"count": 0}, 400, "count must be 1-"),
        ("/api/load", {"count": 10, "drift": "V99=+1sd"}, 400, "unknown feature 'V99'"),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_problem_and_publishes_nothing(
    tmp_path: Path,
    published: list[ControlCommand],
    path: str,
    body: Any,
    status: int,
    message: str,
) -> None:
    with client(tmp_path) as api:
        response = api.post(path, json=body)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert published == []


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({"Content-Type": "text/plain"}, 415, "Content-Type: application/json"),
        ({}, 415, "Content-Type: application/json"),
        ({**JSON, "Sec-Fetch-Site": "cross-site"}, 403, "cross-site request refused"),
        ({**JSON, "Sec-Fetch-Site": "same-site"}, 403, "cross-site request refused"),
        ({**JSON, "Origin": "http://evil.example"}, 403, "cross-site request refused"),
        ({**JSON, "Origin": "null"}, 403, "cross-site request refused"),
        ({**JSON, "Host": "evil.example:8765"}, 400, "DNS rebinding guard"),
    ],
)
def test_cross_site_and_non_json_mutations_are_refused(
    tmp_path: Path,
    published: list[ControlCommand],
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    with client(tmp_path) as api:
        response = api.post("/api/ab/split", content=b'{"percent": 30}', headers=headers)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert published == []


def test_same_origin_requests_pass_the_guards(
    tmp_path: Path, published: list[ControlCommand]
) -> None:
    headers = {**JSON, "Origin": f"http://{HOST}", "Sec-Fetch-Site": "same-origin"}
    with client(tmp_path) as api:
        assert api.post("/api/ab/abort", content=b"{}", headers=headers).status_code == 200
    assert [c.command for c in published] == ["abort"]


def test_with_a_token_set_mutations_need_it(
    tmp_path: Path, published: list[ControlCommand]
) -> None:
    with client(tmp_path, token=TOKEN, host="0.0.0.0") as api:
        assert api.get("/api/health").json()["mutations_need_token"] is True
        for auth in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
            response = api.post("/api/ab/promote", json={}, headers=auth)
            assert response.status_code == 401, auth
        assert published == []
        ok = api.post("/api/ab/promote", json={}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert [c.command for c in published] == ["promote"]


def test_only_a_bundles_own_plots_and_reports_are_served(tmp_path: Path) -> None:
    with client(tmp_path) as api:
        assert api.get("/api/models/v1/files/pr_curve.png").content == b"\x89PNG fake"
        assert api.get("/api/models/v1/files/manifest.json").status_code == 404
        assert api.get("/api/models/v1/files/..%2F..%2Fsecret.png").status_code == 404
        assert api.get("/api/models/v7/files/pr_curve.png").status_code == 404
        models = api.get("/api/models").json()
    assert [b["version"] for b in models["bundles"]] == ["v1", "v2"]
    assert models["current"] == "v1"


def test_the_openapi_document_and_the_readme_list_exactly_the_routes_served(
    tmp_path: Path,
) -> None:
    with client(tmp_path) as api:
        document = api.get("/openapi.json").json()
        served = {
            (method, route.path)
            for route in api.app.routes  # type: ignore[attr-defined]
            if isinstance(route, Route) and route.path.startswith("/api/")
            for method in (route.methods or set()) - {"HEAD"}
        }
    documented = {(m.upper(), path) for path, ops in document["paths"].items() for m in ops}
    assert documented == served == {(e.method, e.path) for e in ENDPOINTS}
    assert markdown_table() in (REPO / "README.md").read_text()
