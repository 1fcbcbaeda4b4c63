"""Shared fixtures live in ``tests/fixtures/``; this file only registers them."""

pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.s3",
    "tests.fixtures.telnyx",
    "tests.fixtures.callrec",
    "tests.fixtures.sentry",
    "tests.fixtures.seeded",
    "tests.faults.canary_plugin",
]
