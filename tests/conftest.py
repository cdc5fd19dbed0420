"""Fixtures shared by every suite: a fresh schema on the real PostgreSQL server."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text

from clock_helpers import now  # noqa: F401 - the movable-clock fixture, for every suite


@pytest.fixture
def pg_url():
    """A fresh schema on the real PostgreSQL server for one test."""
    base = os.environ.get("TAPWATCH_TEST_PG_URL",
                          "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/test")
    schema = f"tw_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    try:
        with admin.begin() as c:
            c.execute(text(f"CREATE SCHEMA {schema}"))
    except Exception as e:  # the server is part of `make test`; say so if it is not there
        pytest.fail(f"PostgreSQL at {base} is not reachable ({e}); run `make postgres`")
    yield f"{base}?options=-csearch_path%3D{schema}"
    with admin.begin() as c:
        c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()
