import time

import pytest

from shared.auth import authenticate, classify
from shared.config import load
from shared.errors import ApiError
from tests.support.tokens import unsigned_token

PROD_LIKE = load({})  # no Auth emulator configured
EMULATED = load({"FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:1"})


def code_of(fn, *args) -> str:
    with pytest.raises(ApiError) as exc:
        fn(*args)
    return exc.value.code.value


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "auth_missing"),
        ("", "auth_missing"),
        ("   ", "auth_missing"),
        ("Basic dXNlcjpwYXNz", "auth_not_bearer"),
        ("Token abc", "auth_not_bearer"),
        ("Bearer", "auth_malformed"),
        ("Bearer    ", "auth_malformed"),
        ("Bearer not-a-jwt", "auth_malformed"),
        ("Bearer a.b.c", "auth_malformed"),
        ("Bearer e30.bm90IGpzb24.", "auth_malformed"),  # payload is not JSON
        ("Bearer WzFd.e30.", "auth_malformed"),  # header is a JSON array
    ],
)
def test_header_problems_each_have_their_code(header: str | None, code: str) -> None:
    assert code_of(authenticate, header, EMULATED) == code


def test_unsigned_token_is_refused_when_no_emulator_is_configured() -> None:
    assert code_of(classify, unsigned_token(), PROD_LIKE) == "auth_unsigned_token"


def test_unsigned_token_passes_classification_with_the_emulator() -> None:
    classify(unsigned_token(), EMULATED)  # no error: firebase-admin decides next


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "other-project"},
        {"iss": "https://securetoken.google.com/other-project"},
        {"aud": None},
    ],
)
def test_token_for_another_project(claims: dict) -> None:
    assert code_of(classify, unsigned_token(**claims), EMULATED) == "auth_wrong_audience"


def test_expired_token_allows_only_the_clock_skew() -> None:
    now = time.time()
    assert code_of(classify, unsigned_token(exp=int(now) - 120), EMULATED) == "auth_expired"
    classify(unsigned_token(exp=int(now) - 30), EMULATED)  # within the 60 s skew


def test_token_without_expiry_is_malformed() -> None:
    assert code_of(classify, unsigned_token(exp=None), EMULATED) == "auth_malformed"
