"""The registry client sorts failures into poison (the message) and unavailable (the registry).

confluent-kafka's SchemaRegistryClient is replaced by a fake answering like a registry would;
the integration tests talk to a real one.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.common._httpx_compat import httpx  # what the client uses
from confluent_kafka.schema_registry.error import SchemaRegistryError

from schemas.avro import fingerprint, load_schema
from schemas.errors import ConfigError, PoisonMessage, SchemaRegistryUnavailable
from streams.registry import RegistrySettings, SchemaRegistry

URL = "http://registry.example:8081"


class FakeClient:
    """Answers get_schema from ``schemas``; ``failure`` is raised by every call instead."""

    def __init__(self) -> None:
        self.schemas: dict[int, Schema] = {}
        self.failure: Exception | None = None
        self.calls: list[tuple[str, Any]] = []
        self.compatibility: dict[str, str] = {}
        self.refuse: SchemaRegistryError | None = None

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.failure is not None:
            raise self.failure

    def get_schema(self, schema_id: int) -> Schema:
        self._call("get_schema", schema_id)
        if schema_id not in self.schemas:
            raise SchemaRegistryError(404, 40403, f"Schema {schema_id} not found")
        return self.schemas[schema_id]

    def get_compatibility(self, subject: str) -> str:
        self._call("get_compatibility", subject)
        if subject not in self.compatibility:
            raise SchemaRegistryError(404, 40408, "no subject config")
        return self.compatibility[subject]

    def set_compatibility(self, subject: str, level: str) -> dict[str, str]:
        self._call("set_compatibility", subject, level)
        self.compatibility[subject] = level
        return {"compatibility": level}

    def register_schema(self, subject: str, schema: Schema) -> int:
        self._call("register_schema", subject)
        if self.refuse is not None:
            raise self.refuse
        return 42


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> tuple[SchemaRegistry, FakeClient]:
    registry = SchemaRegistry(RegistrySettings(URL))
    fake = FakeClient()
    monkeypatch.setattr(registry, "_client", fake)
    return registry, fake


def test_a_schema_is_fetched_once_and_fingerprinted(
    client: tuple[SchemaRegistry, FakeClient],
) -> None:
    registry, fake = client
    transaction = load_schema("transaction")
    fake.schemas[3] = Schema(json.dumps(transaction), "AVRO")
    first = registry.writer_schema(3)
    assert first.fingerprint == fingerprint(transaction) and first.schema_id == 3
    assert registry.writer_schema(3) is first
    assert [name for name, _ in fake.calls] == ["get_schema"]


def test_an_id_the_registry_does_not_have_is_poison_and_not_cached(
    client: tuple[SchemaRegistry, FakeClient],
) -> None:
    registry, fake = client
    for _ in range(2):
        with pytest.raises(PoisonMessage) as caught:
            registry.writer_schema(9)
        assert caught.value.kind == "unknown_schema" and "9" in caught.value.reason
    assert len(fake.calls) == 2  # it may be registered later


@pytest.mark.parametrize(
    "schema",
    [Schema('{"type": "object"}', "JSON"), Schema("syntax = 'proto3';", "PROTOBUF"),
     Schema("not json", "AVRO")],
)  # fmt: skip
def test_a_schema_that_is_not_usable_avro_is_unknown_schema(
    client: tuple[SchemaRegistry, FakeClient], schema: Schema
) -> None:
    registry, fake = client
    fake.schemas[4] = schema
    with pytest.raises(PoisonMessage) as caught:
        registry.writer_schema(4)
    assert caught.value.kind == "unknown_schema"


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        SchemaRegistryError(503, -1, "unavailable"),
        SchemaRegistryError(500, 50001, "store error"),
        SchemaRegistryError(401, 401, "unauthorized"),
    ],
)
def test_a_registry_that_does_not_answer_is_unavailable_not_poison(
    client: tuple[SchemaRegistry, FakeClient], failure: Exception
) -> None:
    registry, fake = client
    fake.failure = failure
    with pytest.raises(SchemaRegistryUnavailable):
        registry.writer_schema(3)


def test_register_sets_backward_where_the_level_is_weaker_and_keeps_stricter_ones(
    client: tuple[SchemaRegistry, FakeClient],
) -> None:
    registry, fake = client
    assert registry.register("decisions-value", load_schema("decision")) == 42
    fake.compatibility["drift-value"] = "NONE"  # Apicurio's default
    fake.compatibility["other-value"] = "FULL_TRANSITIVE"
    registry.register("drift-value", load_schema("drift_snapshot"))
    registry.register("other-value", load_schema("decision"))
    assert fake.compatibility == {
        "decisions-value": "BACKWARD",
        "drift-value": "BACKWARD",
        "other-value": "FULL_TRANSITIVE",
    }


def test_an_incompatible_schema_is_a_config_error_naming_the_subject(
    client: tuple[SchemaRegistry, FakeClient],
) -> None:
    registry, fake = client
    fake.refuse = SchemaRegistryError(409, 409, "Incompatible artifact: decisions-value")
    with pytest.raises(ConfigError, match=r"registering decisions-value.*Incompatible.*409"):
        registry.register("decisions-value", load_schema("decision"))


def test_settings_pass_through_numbers_hide_secrets_and_refuse_unknown_keys() -> None:
    settings = RegistrySettings(
        URL, {"basic.auth.user.info": "me:s3cret", "timeout": "2.5", "max.retries": "2"}
    )
    config = settings.client_config()
    assert config["timeout"] == 2.5 and config["max.retries"] == 2 and config["url"] == URL
    assert "s3cret" not in repr(settings)
    with pytest.raises(ConfigError, match=r"Unrecognized properties: bogus\.key"):
        SchemaRegistry(RegistrySettings(URL, {"bogus.key": "1"}))
    with pytest.raises(ConfigError, match="http"):
        RegistrySettings("registry.example:8081")
    with pytest.raises(ConfigError, match="not a number"):
        RegistrySettings(URL, {"timeout": "soon"}).client_config()
