"""The schema registry client: writer schemas by id for the decoders, subjects for the writers.

A thin layer over confluent-kafka's ``SchemaRegistryClient`` (any registry speaking the Confluent
API: Confluent's, Apicurio's ``/apis/ccompat/v7``, Karapace...) that sorts its failures into the
two cases the scorer treats differently:

* the registry answered that it has no such schema id (HTTP 404), or the id is not an Avro
  schema: the *message* is bad, :class:`~schemas.errors.PoisonMessage` ``unknown_schema``, DLQ;
* the registry did not answer usefully (refused, timeout, 5xx, 401/403, garbage):
  :class:`~schemas.errors.SchemaRegistryUnavailable`; the message is fine and must not be
  dead-lettered: the scorer rewinds the batch and retries (``streams.scoring.registry_wait``).

Schemas by id are cached forever (an id's schema never changes); unknown ids are not cached, as
they may be registered later. confluent-kafka's registry module costs ~0.6 s to import, so it is
imported only when a registry is configured.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from schemas.avro import Schema, fingerprint
from schemas.confluent import RegisteredSchema
from schemas.errors import ConfigError, PoisonMessage, SchemaRegistryUnavailable

log = logging.getLogger(__name__)

OutputFormat = Literal["single-object", "confluent"]
OUTPUT_FORMATS: Final[tuple[OutputFormat, ...]] = get_args(OutputFormat)

# SchemaRegistryClient settings that take numbers (passed-through values arrive as text).
_NUMERIC_SETTINGS: Final[frozenset[str]] = frozenset(
    {"timeout", "cache.capacity", "cache.latest.ttl.sec", "max.retries", "retries.wait.ms",
     "retries.max.wait.ms"}
)  # fmt: skip
_SECRET_MARKERS: Final[tuple[str, ...]] = ("user.info", "password", "token", "secret", "key")
# Compatibility levels at least as strict as BACKWARD: an operator's choice is kept.
_BACKWARD_OR_STRICTER: Final[frozenset[str]] = frozenset(
    {"BACKWARD", "BACKWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"}
)


@dataclass(frozen=True)
class RegistrySettings:
    """Where the registry is, plus raw SchemaRegistryClient settings passed through untouched
    (``basic.auth.user.info``, ``ssl.ca.location``, ``bearer.auth.*``, ``timeout``...).

    Sentinel defaults the client to a 5 s timeout and no retries of its own: the scorer retries
    whole batches without blocking its loop. ``repr`` hides secret values.
    """

    url: str
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"schema registry URL must start with http:// or https://: {self.url}"
            )
        if "url" in self.extra:
            raise ConfigError("the schema registry URL is set with --schema-registry-url")

    def client_config(self) -> dict[str, Any]:
        """The SchemaRegistryClient config dict."""
        config: dict[str, Any] = {"url": self.url, "timeout": 5, "max.retries": 0}
        for key, value in self.extra.items():
            config[key] = _number(key, value) if key in _NUMERIC_SETTINGS else value
        return config

    def __repr__(self) -> str:
        shown = {
            k: ("***" if any(m in k for m in _SECRET_MARKERS) else v) for k, v in self.extra.items()
        }
        return f"RegistrySettings(url={self.url!r}, extra={shown})"


def _number(key: str, value: str) -> int | float:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"schema registry setting {key}={value!r} is not a number") from None


class SchemaRegistry:
    """Writer schemas by id (a :class:`schemas.confluent.WriterLookup`) and subject registration.

    Thread-safe. :meth:`writer_schema` blocks on the network (at most the client timeout) only
    for an id not seen before. Raises ConfigError at construction for settings the client does
    not know ("Unrecognized properties").
    """

    def __init__(self, settings: RegistrySettings) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        try:
            self._client = SchemaRegistryClient(settings.client_config())
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"schema registry settings: {exc}") from exc
        self.settings = settings
        self._by_id: dict[int, RegisteredSchema] = {}
        self._lock = threading.Lock()

    def writer_schema(self, schema_id: int) -> RegisteredSchema:
        """The Avro schema under ``schema_id`` (see :class:`schemas.confluent.WriterLookup`)."""
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        with self._lock:
            return self._by_id.get(schema_id) or self._fetch(schema_id)

    def _fetch(self, schema_id: int) -> RegisteredSchema:
        found = self._call(f"fetching schema id {schema_id}", self._client.get_schema, schema_id)
        if found is None:
            raise PoisonMessage(
                "unknown_schema", f"the schema registry has no schema id {schema_id}"
            )
        kind = found.schema_type or "AVRO"
        if kind != "AVRO" or found.references:
            what = f"a {kind} schema" if kind != "AVRO" else "an Avro schema with references"
            raise PoisonMessage("unknown_schema", f"schema id {schema_id} is {what}")
        try:
            schema = json.loads(found.schema_str)
            registered = RegisteredSchema(schema_id, fingerprint(schema), schema)
        except Exception as exc:  # json and fastavro's canonical form raise many types
            raise PoisonMessage(
                "unknown_schema", f"schema id {schema_id} is not a valid Avro schema: {exc}"
            ) from exc
        self._by_id[schema_id] = registered
        return registered

    def register(self, subject: str, schema: Schema) -> int:
        """Register ``schema`` under ``subject`` with BACKWARD compatibility; return its id.

        Idempotent (the same schema gets its existing id). A subject whose level is NONE or
        weaker than BACKWARD (Apicurio's default is NONE) is set to BACKWARD first; a stricter
        one is kept. Raises ConfigError naming the subject when the registry refuses the schema
        as incompatible or invalid, SchemaRegistryUnavailable when it does not answer.
        """
        from confluent_kafka.schema_registry import Schema as RegistrySchema

        level = self._call(f"reading the compatibility of {subject}", self._compatibility, subject)
        if level not in _BACKWARD_OR_STRICTER:
            self._call(
                f"setting {subject} to BACKWARD",
                self._client.set_compatibility,
                subject,
                "BACKWARD",
            )
        text = json.dumps(schema)
        schema_id = self._call(
            f"registering {subject}", self._client.register_schema, subject,
            RegistrySchema(text, "AVRO"),
        )  # fmt: skip
        if schema_id is None:
            raise ConfigError(f"the schema registry has no subject {subject}")
        return int(schema_id)

    def _compatibility(self, subject: str) -> str | None:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return str(self._client.get_compatibility(subject))
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:  # Confluent: no subject-level config (40408)
                return None
            raise

    def _call(self, what: str, method: Any, *args: Any) -> Any:
        """``method(*args)`` with the client's errors sorted (None: HTTP 404)."""
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return method(*args)
        except SchemaRegistryError as exc:
            status = exc.http_status_code
            if status == 404:
                return None
            if status in (409, 422):
                raise ConfigError(
                    f"the schema registry refused {what}: {exc.error_message} (HTTP {status})"
                ) from exc
            raise SchemaRegistryUnavailable(
                f"schema registry error {what}: {exc.error_message} (HTTP {status})"
            ) from exc
        except Exception as exc:
            # Anything else is the client failing to get an answer: its transport is httpx or
            # httpx2 depending on the Python version (a private shim), so its errors have no
            # public type. Never poison: the batch is retried, the error counted and logged.
            raise SchemaRegistryUnavailable(
                f"schema registry at {self.settings.url} unreachable {what}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def close(self) -> None:
        """Release the client's HTTP connections."""
        self._client.close()


@dataclass(frozen=True)
class OutputSchemaIds:
    """The registry ids decisions and drift snapshots are framed with (``confluent`` output)."""

    decision: int
    drift: int


def subject_of(topic: str) -> str:
    """TopicNameStrategy: a topic's values are registered under ``<topic>-value``."""
    return f"{topic}-value"
