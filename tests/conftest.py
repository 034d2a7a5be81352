"""Shared fixtures: real servers the tests start and always stop."""

from __future__ import annotations

import pytest

from redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One real redis-server (no persistence) for the whole test session: ``.url``."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()
