from concurrent.futures import ThreadPoolExecutor

import pytest

from shared import store


def test_first_call_creates_the_account_with_defaults(api) -> None:
    user = api.new_user()
    body = api.request("GET", "/v1/me", user).json()
    assert body["uid"] == user.uid and body["email"] == user.email
    assert body["has_payment_method"] is False and body["payment_method"] is None
    assert body["submissions_paused"] is False and body["pauses"] == []
    assert body["notifications"] == {
        "job_completed": True,
        "job_failed": True,
        "job_cancelled": True,
    }
    assert body["portal_url"] is None
    doc = store.client().collection("users").document(user.uid).get()
    assert doc.exists and doc.to_dict()["email"] == user.email


def test_concurrent_first_calls_create_one_account(api) -> None:
    user = api.new_user()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: api.request("GET", "/v1/me", user), range(8)))
    assert {r.status_code for r in answers} == {200}
    assert len({r.json()["created_at"] for r in answers}) == 1


def test_pause_flags_are_shown_with_their_reasons(api) -> None:
    user = api.new_user()
    api.request("GET", "/v1/me", user)
    store.client().collection("users").document(user.uid).update(
        {"pauses.payment_failed": {"reason": "Your card was declined.", "since": store.now()}}
    )
    body = api.request("GET", "/v1/me", user).json()
    assert body["submissions_paused"] is True
    assert body["pauses"][0]["code"] == "payment_failed"
    assert body["pauses"][0]["reason"] == "Your card was declined."


def test_patch_changes_only_the_named_preferences(api) -> None:
    user = api.new_user()
    resp = api.request("PATCH", "/v1/me", user, json={"notifications": {"job_failed": False}})
    assert resp.status_code == 200
    assert resp.json()["notifications"] == {
        "job_completed": True,
        "job_failed": False,
        "job_cancelled": True,
    }
    again = api.request("GET", "/v1/me", user).json()
    assert again["notifications"]["job_failed"] is False


def test_users_do_not_see_each_other(api) -> None:
    alice, bob = api.new_user(), api.new_user()
    api.request("PATCH", "/v1/me", alice, json={"notifications": {"job_completed": False}})
    bob_view = api.request("GET", "/v1/me", bob).json()
    assert bob_view["uid"] == bob.uid
    assert bob_view["notifications"]["job_completed"] is True


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": "{oops", "headers": {"Content-Type": "application/json"}}, 400, "invalid_json"),
        ({"json": [1]}, 400, "invalid_body"),
        ({"json": {"notifications": {"job_failed": "yes"}}}, 400, "invalid_value"),
        ({"json": {"notifications": {"weekly_digest": True}}}, 400, "unknown_field"),
        ({"json": {"email": "new@example.com"}}, 400, "unknown_field"),
        ({"json": {}}, 400, "missing_field"),
        ({"data": "notifications=1"}, 415, "unsupported_media_type"),
    ],
)
def test_patch_bad_input(api, kwargs: dict, status: int, code: str) -> None:
    user = api.new_user()
    resp = api.request("PATCH", "/v1/me", user, **kwargs)
    assert resp.status_code == status
    assert resp.json()["error"]["code"] == code
    assert resp.json()["error"]["request_id"] == resp.headers["X-Request-Id"]
    # nothing changed
    assert api.request("GET", "/v1/me", user).json()["notifications"]["job_failed"] is True


def test_wrong_method_on_me(api) -> None:
    resp = api.request("DELETE", "/v1/me", api.new_user())
    assert resp.status_code == 405
    assert set(resp.headers["Allow"].split(", ")) == {"GET", "PATCH"}


def test_only_a_verified_email_is_kept_and_written_to(api, stack_env) -> None:
    from devstack.emulators import sign_in, verify_email
    from shared import lifecycle
    from shared.config import settings
    from tests.support.api import stored_job

    user = api.new_user(verified=False)
    assert api.request("GET", "/v1/me", user).json()["email"] is None
    job_id = stored_job(user.uid, email=None)
    lifecycle.on_batch_state(f"x/jobs/yachay-{job_id}", "FAILED", settings())
    assert store.get_job(job_id).status.value == "failed"
    assert not store.client().collection("mail").document(f"{job_id}-failed").get().exists

    verify_email(user.uid, auth_host=stack_env.host("auth"))
    token = sign_in(user.email, auth_host=stack_env.host("auth"))["idToken"]
    me = api.request("GET", "/v1/me", token=token).json()  # the next signed-in call keeps it
    assert me["email"] == user.email
    verified = stored_job(user.uid, email=None)
    lifecycle.on_batch_state(f"x/jobs/yachay-{verified}", "FAILED", settings())
    mail = store.client().collection("mail").document(f"{verified}-failed").get()
    assert mail.exists and mail.to_dict()["to"] == user.email
