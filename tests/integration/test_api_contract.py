"""The OpenAPI document is a contract: schemathesis generates requests (valid and invalid) for
every operation against the live server and fails on any 5xx or any status the document does
not list for that operation. Examples are bounded so the test runs in minutes."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from tests.servers import LiveServer

KEY = {"X-API-Key": "secret-key-for-tests"}
EXAMPLES = 20
# Starting a cycle trains the real model: it is called (and must conform) without the key only.
EXPENSIVE = {("POST", "/v1/runs")}


def _check(live_server: LiveServer, headers: dict[str, str], mode: schemathesis.GenerationMode) -> int:
    schema = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if headers and (operation.method.upper(), operation.path) in EXPENSIVE:
            continue
        strategy = operation.as_strategy(generation_mode=mode)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        @given(case=strategy)
        def run(case: schemathesis.Case) -> None:
            nonlocal calls
            case.call_and_validate(
                base_url=live_server.url,
                headers=headers,
                checks=[not_a_server_error, status_code_conformance],
                timeout=120,
            )
            calls += 1

        try:
            run()
        except Unsatisfiable:
            # an operation without parameters or body has no invalid request to generate
            assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label
    return calls


def test_every_operation_answers_within_its_contract(live_server: LiveServer) -> None:
    total = 0
    for headers in ({}, KEY):
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            total += _check(live_server, headers, mode)
    assert total > 100  # every operation was exercised, not skipped
