from typing import Any

import pytest

from shared.accounts import AccountUpdate
from shared.accounts import parse_update as parse_checked
from shared.errors import ApiError
from shared.schemas import UpdateAccount, checked_body


def parse_update(body: Any) -> AccountUpdate:
    """What PATCH /v1/me does with a body: the schema's check, then the update it asks for."""
    return parse_checked(checked_body(UpdateAccount, body))


def test_valid_update() -> None:
    assert parse_update(
        {"notifications": {"job_failed": False, "job_completed": True}}
    ) == AccountUpdate({"job_failed": False, "job_completed": True}, False, None)
    assert parse_update({"monthly_spend_limit_cents": 5000}) == AccountUpdate({}, True, 5000)
    # null removes the limit, which is not the same as leaving it alone
    assert parse_update({"monthly_spend_limit_cents": None}) == AccountUpdate({}, True, None)


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({}, "missing_field", "notifications"),
        ({"email": "x@y.z"}, "unknown_field", "email"),
        ({"notifications": {"job_failed": False}, "uid": "x"}, "unknown_field", "uid"),
        ({"notifications": None}, "invalid_value", "notifications"),
        ({"notifications": {}}, "invalid_value", "notifications"),
        ({"notifications": [True]}, "invalid_value", "notifications"),
        ({"notifications": {"job_lost": True}}, "unknown_field", "notifications.job_lost"),
        ({"notifications": {"job_failed": "no"}}, "invalid_value", "notifications.job_failed"),
        ({"notifications": {"job_failed": 0}}, "invalid_value", "notifications.job_failed"),
        ({"monthly_spend_limit_cents": -1}, "invalid_value", "monthly_spend_limit_cents"),
        ({"monthly_spend_limit_cents": 10.5}, "invalid_value", "monthly_spend_limit_cents"),
        ({"monthly_spend_limit_cents": True}, "invalid_value", "monthly_spend_limit_cents"),
        ({"monthly_spend_limit_cents": "100"}, "invalid_value", "monthly_spend_limit_cents"),
    ],
)
def test_bad_updates_name_the_field(body: dict, code: str, param: str) -> None:
    with pytest.raises(ApiError) as exc:
        parse_update(body)
    assert exc.value.code.value == code
    assert exc.value.param == param
