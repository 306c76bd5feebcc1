"""Which pass of `make test` runs a test: the suite runs twice (SQLite, then PostgreSQL +
Redis). A few long tests of worker life cycles (hand-offs between tasks, pauses that outlast
a task) exercise no database-specific code beyond what tests in both passes already do; they
run once, in the SQLite pass, to keep the whole suite within its time budget."""

import os

import pytest

on_postgres = os.environ.get("DATABASE_URL", "").startswith("postgres")

sqlite_pass_only = pytest.mark.skipif(
    on_postgres, reason="a long worker life-cycle test: runs once, in the SQLite pass (tests/support/passes.py)"
)
