"""Shared fixtures live in tests/fixtures/; each module there owns one concern."""

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.models",
    "tests.fixtures.scorer",
    "tests.fixtures.prometheus",
    "tests.fixtures.console",
    "tests.fixtures.faults",
    "tests.fixtures.registry",
]
