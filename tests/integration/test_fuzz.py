"""Schemathesis against the local stack, driven by the spec the stack serves: every operation,
as a signed-in user and as an API key, with valid and invalid inputs. Any 5xx, undocumented
status, wrong content type or response that does not fit its schema fails the test; what it
finds is fixed in the code, never excluded here."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.api import Api, save_test_card

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 25  # per operation, mode and credential: about 2,200 cases in all (30 operations)
MIN_CASES = 1000


def _fuzz(op: Any, mode: GenerationMode, base: str, auth: str, counts: Counter[str]) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases every run: a failure here is reproducible
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        headers = {"Authorization": auth} if auth else {}
        case.call_and_validate(base_url=base, headers=headers, checks=CHECKS, timeout=30)
        counts[op.label] += 1

    run()


def test_every_operation_survives_generated_requests(api: Api) -> None:
    user = api.new_user()
    save_test_card(user.uid)
    key = api.request(
        "POST",
        "/v1/api-keys",
        user,
        json={
            "name": "fuzz",
            "scopes": ["jobs:read", "jobs:write", "datasets:write", "billing:read"],
        },
    ).json()["secret"]
    schema = schemathesis.openapi.from_url(api.base + "/v1/openapi.json")
    counts: Counter[str] = Counter()
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    # schemathesis leaves out the operation that serves the spec it loaded (it did call it)
    documented = {
        f"{method.upper()} {path}"
        for path, item in schema.raw_schema["paths"].items()
        for method in item
        if path != "/v1/openapi.json"
    }
    assert {op.label for op in operations} == documented and len(documented) > 20
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(op, mode, api.base, f"Bearer {user.token}", counts)
        _fuzz(op, GenerationMode.POSITIVE, api.base, f"Bearer {key}", counts)
    took = time.monotonic() - started
    total = sum(counts.values())
    print(f"\n  fuzz: {total} cases over {len(counts)} operations in {took:.0f} s")
    assert total >= MIN_CASES
    labels = {op.label for op in operations}
    assert set(counts) == labels, f"operations never exercised: {labels - set(counts)}"
