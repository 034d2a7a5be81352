"""Bad input never gets a 5xx: schemathesis generates requests (valid and invalid) from the
running server's own /openapi.json and checks every answer is a documented status < 500
whose body matches the documented schema."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    response_schema_conformance,
    status_code_conformance,
)


def test_generated_requests_never_get_a_5xx_or_an_undocumented_answer(service_server):
    srv = service_server
    raw = httpx.get(srv.url + "/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(raw)
    cases = st.one_of(
        schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE)
    )
    seen: set[tuple[str, str, int]] = set()

    @settings(
        max_examples=120,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def check(case):
        response = case.call(base_url=srv.url, headers=srv.headers, timeout=15)
        assert response.status_code < 500, (case.method, case.path, case.body, response.text)
        seen.add((case.method, case.path, response.status_code))
        case.validate_response(
            response, checks=[status_code_conformance, response_schema_conformance]
        )

    check()
    statuses = {code for _, _, code in seen}
    assert {200, 422} <= statuses and any(code in (400, 404, 409) for code in statuses)
