"""The one exception tree of Sentinel Stream.

Every error the project raises on purpose derives from :class:`SentinelError`, so the CLI can turn
it into one clear line and a non-zero exit, and callers can tell a configuration mistake from a
poison message from a broken model bundle.
"""

from __future__ import annotations


class SentinelError(Exception):
    """Root of every error Sentinel Stream raises deliberately."""


class ConfigError(SentinelError):
    """A setting, flag or environment variable is missing, unknown or out of range."""


class BrokerError(SentinelError):
    """The local Kafka broker could not be provisioned, started, reached or stopped."""


class ModelLoadError(SentinelError):
    """A model bundle is missing, incomplete, tampered with, or fails its checks.

    The scorer refuses such a bundle and keeps serving the model it already has.
    """


class SchemaError(SentinelError):
    """An Avro schema or codec is inconsistent (a deployment error, not bad input)."""


class DataError(SentinelError):
    """A training data file is unusable: wrong columns, bad values, a single class, empty."""


class PoisonMessage(SentinelError):
    """One input message cannot be decoded or validated.

    Carries a short machine-readable ``kind`` (used as the DLQ header and metric label) and a
    human-readable ``reason``. The message's original bytes travel to the DLQ untouched.
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


class DlqLimitExceeded(SentinelError):
    """Too large a share of recent messages was poison: stop loudly instead of draining a topic."""


class DeliveryError(SentinelError):
    """The broker did not acknowledge a produced record; the batch's offsets stay uncommitted."""


class SchemaRegistryUnavailable(SentinelError):
    """The schema registry did not answer (refused, timed out, 5xx): not the message's fault.

    The scorer never dead-letters a message for it; it rewinds the batch and retries later.
    """
