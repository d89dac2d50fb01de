from shared.errors import ApiError, Code


def test_codes_are_unique_snake_case_with_http_error_statuses() -> None:
    values = [c.value for c in Code]
    assert len(values) == len(set(values))
    for c in Code:
        assert c.value.replace("_", "").isalpha() and c.value.islower()
        assert 400 <= c.status <= 599


def test_every_auth_failure_is_401_except_unavailable() -> None:
    auth = [c for c in Code if c.value.startswith("auth_")]
    assert len(auth) >= 8
    assert {c.status for c in auth if c is not Code.AUTH_UNAVAILABLE} == {401}
    assert Code.AUTH_UNAVAILABLE.status == 503


def test_error_body_shape() -> None:
    err = ApiError(Code.UNKNOWN_FIELD, "no such field", param="x")
    assert err.status == 400
    assert err.body("rid-123") == {
        "error": {
            "code": "unknown_field",
            "message": "no such field",
            "param": "x",
            "request_id": "rid-123",
        }
    }
