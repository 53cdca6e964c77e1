"""Unit tests of the Avro schemas and the hot-path codecs (no network)."""
