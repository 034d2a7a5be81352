"""Shared fixtures: real servers the tests start and always stop; a settled heap."""

from __future__ import annotations

import gc

import pytest
from redis_server import RedisServer


@pytest.fixture(autouse=True, scope="module")
def settled_heap():
    """Each test module starts with the suite's heap collected and frozen: what earlier
    modules left (about 1 GB by the end) is never walked again, so a full collection
    cannot stall a live timing test for half a second."""
    gc.collect()
    gc.freeze()
    yield


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One real redis-server (no persistence) for the whole test session: ``.url``."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def service_server(tmp_path_factory):
    """One real `orchkit serve` process (SQLite store, API key) for the service tests."""
    from service_harness import shared_service

    yield from shared_service(tmp_path_factory)
