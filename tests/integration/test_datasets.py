"""Datasets: signed uploads, validation with line-numbered errors, ownership, pagination."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from shared import datasets, storage, store
from shared.config import settings
from shared.errors import ApiError
from shared.records import Dataset, DatasetStatus
from tests.support.api import upload_dataset

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
GOOD = (json.dumps(CHAT) + "\n").encode()


def test_upload_url_is_a_one_hour_put_into_the_users_own_prefix(api) -> None:
    user = api.new_user()
    resp = api.request(
        "POST", "/v1/datasets", user, json={"filename": "train.jsonl", "size_bytes": 100}
    )
    assert resp.status_code == 201
    body = resp.json()
    assert body["status"] == "pending_upload"
    url = urlparse(body["upload"]["url"])
    query = parse_qs(url.query)
    assert query["X-Goog-Expires"] == ["3600"]
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-SignedHeaders"][0].split(";") == [
        "content-type",
        "host",
        "x-goog-content-length-range",
    ]
    # Storage refuses a body outside the signed range (the emulator checks no signature, so the
    # size is also checked at validation: see the next tests).
    assert body["upload"]["headers"]["x-goog-content-length-range"] == "0,100"
    assert url.path == f"/{settings().datasets_bucket}/datasets/{user.uid}/{body['id']}.jsonl"
    assert body["upload"]["method"] == "PUT"


def test_upload_then_validate_makes_it_ready(api) -> None:
    user = api.new_user()
    content = GOOD * 3 + b"\n" + json.dumps({"prompt": "a", "completion": "b"}).encode()
    ds = upload_dataset(api, user, GOOD * 3)
    assert ds["status"] == "ready"
    assert ds["rows"] == 3 and ds["format"] == "chat" and ds["bytes"] == len(GOOD) * 3
    assert api.request("GET", f"/v1/datasets/{ds['id']}", user).json()["status"] == "ready"
    mixed = upload_dataset(api, user, content)
    assert mixed["status"] == "invalid"
    assert (
        mixed["errors"][0]["line"] == 5 and "one format per file" in mixed["errors"][0]["message"]
    )


BAD = [
    ("not_json", b"{oops\n", 1, "not valid JSON"),
    ("wrong_role", b'{"messages": [{"role": "bot", "content": "x"}]}\n', 1, "role must be"),
    ("missing_role", b'{"messages": [{"content": "x"}]}\n', 1, "role must be"),
    (
        "no_assistant",
        b'{"messages": [{"role": "user", "content": "x"}]}\n',
        1,
        "at least one assistant",
    ),
    ("empty", b"", None, "empty"),
    ("only_blank_lines", b"\n\n  \n", None, "only blank lines"),
    ("binary", b"\x00\x01\x02\x03" * 10, 1, "binary"),
    ("invalid_utf8", GOOD + b'{"prompt": "\xff\xfe", "completion": "x"}\n', 2, "not UTF-8"),
    (
        "huge_line",
        b'{"prompt": "' + b"x" * (4 << 20) + b'", "completion": "y"}\n',
        1,
        "a record may be at most",
    ),
    ("not_an_object", b"[1, 2]\n", 1, "JSON object"),
    ("empty_completion", b'{"prompt": "a", "completion": ""}\n', 1, "completion not empty"),
    (
        "late_system",
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "system", "content": "b"},
                    {"role": "assistant", "content": "c"},
                ]
            }
        ).encode(),
        1,
        "system message may only come first",
    ),
]


@pytest.mark.parametrize(("name", "content", "line", "phrase"), BAD, ids=[b[0] for b in BAD])
def test_bad_datasets_are_invalid_with_the_line_named(api, name, content, line, phrase) -> None:
    ds = upload_dataset(api, api.new_user(), content)
    assert ds["status"] == "invalid", ds
    assert ds["error_count"] >= 1
    assert ds["errors"][0]["line"] == line
    assert phrase in ds["errors"][0]["message"]


@pytest.mark.parametrize(
    "content",
    [b"\xef\xbb\xbf" + GOOD, GOOD.replace(b"\n", b"\r\n") * 2, b"\n" + GOOD + b"\n\n" + GOOD],
    ids=["bom", "crlf", "blank_lines"],
)
def test_tolerated_quirks_are_ready(api, content) -> None:
    ds = upload_dataset(api, api.new_user(), content)
    assert ds["status"] == "ready", ds["errors"]


def test_errors_are_capped_but_counted(api) -> None:
    ds = upload_dataset(api, api.new_user(), b"{bad\n" * 50)
    assert ds["error_count"] == 50
    assert len(ds["errors"]) == 20
    assert [e["line"] for e in ds["errors"]] == list(range(1, 21))


def test_validate_before_upload_is_409(api) -> None:
    user = api.new_user()
    ds = api.request(
        "POST", "/v1/datasets", user, json={"filename": "a.jsonl", "size_bytes": 10}
    ).json()
    resp = api.request("POST", f"/v1/datasets/{ds['id']}/validate", user)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "upload_missing"


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"size_bytes": 10}, "missing_field", "filename"),
        ({"filename": "a.csv", "size_bytes": 10}, "invalid_value", "filename"),
        ({"filename": "../a.jsonl", "size_bytes": 10}, "invalid_value", "filename"),
        ({"filename": "a.jsonl"}, "missing_field", "size_bytes"),
        ({"filename": "a.jsonl", "size_bytes": 0}, "invalid_value", "size_bytes"),
        ({"filename": "a.jsonl", "size_bytes": (100 << 20) + 1}, "invalid_value", "size_bytes"),
        ({"filename": "a.jsonl", "size_bytes": "10"}, "invalid_value", "size_bytes"),
        ({"filename": "a.jsonl", "size_bytes": 10, "x": 1}, "unknown_field", "x"),
    ],
)
def test_create_bad_input(api, body, code, param) -> None:
    resp = api.request("POST", "/v1/datasets", api.new_user(), json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == code and resp.json()["error"]["param"] == param


def test_other_users_datasets_answer_404(api) -> None:
    alice, bob = api.new_user(), api.new_user()
    ds = upload_dataset(api, alice, GOOD)
    for method, path in [
        ("GET", f"/v1/datasets/{ds['id']}"),
        ("POST", f"/v1/datasets/{ds['id']}/validate"),
        ("DELETE", f"/v1/datasets/{ds['id']}"),
    ]:
        resp = api.request(method, path, bob)
        assert resp.status_code == 404, (method, path)
        assert resp.json()["error"]["code"] == "not_found"
    assert api.request("GET", "/v1/datasets", bob).json()["data"] == []
    assert api.request("GET", f"/v1/datasets/{ds['id']}", alice).status_code == 200


def test_delete_removes_record_and_file(api) -> None:
    user = api.new_user()
    ds = upload_dataset(api, user, GOOD)
    assert api.request("DELETE", f"/v1/datasets/{ds['id']}", user).status_code == 204
    assert api.request("GET", f"/v1/datasets/{ds['id']}", user).status_code == 404
    assert storage.list_names(settings().datasets_bucket, f"datasets/{user.uid}/") == []


def test_list_is_newest_first_with_a_cursor(api) -> None:
    user = api.new_user()
    ids = [
        api.request(
            "POST", "/v1/datasets", user, json={"filename": f"{i}.jsonl", "size_bytes": 5}
        ).json()["id"]
        for i in range(5)
    ]
    first = api.request("GET", "/v1/datasets?limit=2", user).json()
    assert [d["id"] for d in first["data"]] == ids[::-1][:2] and first["has_more"]
    second = api.request("GET", f"/v1/datasets?limit=2&after={first['next_cursor']}", user).json()
    third = api.request("GET", f"/v1/datasets?limit=2&after={second['next_cursor']}", user).json()
    assert [d["id"] for d in second["data"] + third["data"]] == ids[::-1][2:]
    assert third["has_more"] is False and third["next_cursor"] is None


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=abc", "after=garbage!"])
def test_list_bad_query(api, query) -> None:
    resp = api.request("GET", f"/v1/datasets?{query}", api.new_user())
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_query"


def test_an_upload_is_validated_without_asking(api) -> None:
    """The Storage trigger's local stand-in: the emulator's finalize notification reaches the
    same validation function through Pub/Sub."""
    import time

    user = api.new_user()
    ds = upload_dataset(api, user, GOOD * 2, validate=False)
    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline:
        status = api.request("GET", f"/v1/datasets/{ds['id']}", user).json()["status"]
        if status == "ready":
            break
        time.sleep(0.2)
    assert status == "ready"


def test_a_file_larger_than_declared_is_invalid(api) -> None:
    user = api.new_user()
    created = api.request(
        "POST", "/v1/datasets", user, json={"filename": "t.jsonl", "size_bytes": len(GOOD) - 1}
    ).json()
    put = requests.put(created["upload"]["url"], data=GOOD, headers=created["upload"]["headers"])
    assert put.status_code == 200  # the emulator does not enforce the signed range
    ds = api.request("POST", f"/v1/datasets/{created['id']}/validate", user).json()
    assert ds["status"] == "invalid"
    assert "larger than the" in ds["errors"][0]["message"]


def _create(uid: str, size: int, cfg) -> dict:
    return datasets.create(uid, {"filename": "q.jsonl", "size_bytes": size}, cfg)


def test_dataset_quotas_hold_under_concurrent_creates(api, monkeypatch) -> None:
    user = api.new_user()
    cfg = replace(settings(), dataset_max_count=3, dataset_quota_bytes=1000)
    # In-process, with this test's quotas; signing the upload URL is tested above.
    monkeypatch.setattr(storage, "signed_url", lambda *a, **k: ("http://x", store.now()))
    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda _: _try(lambda: _create(user.uid, 100, cfg)), range(6)))
    assert sorted(outcomes) == ["created"] * 3 + ["too_many_datasets"] * 3
    listed = api.request("GET", "/v1/datasets", user).json()["data"]
    assert len(listed) == 3
    api.request("DELETE", f"/v1/datasets/{listed[0]['id']}", user)  # frees a place
    assert _try(lambda: _create(user.uid, 801, cfg)) == "dataset_storage_full"  # 200 + 801
    assert _try(lambda: _create(user.uid, 800, cfg)) == "created"
    with pytest.raises(ApiError) as full:
        _create(user.uid, 1, cfg)
    assert full.value.status == 409 and "delete one" in full.value.message


def _try(create) -> str:
    try:
        create()
    except ApiError as exc:
        assert exc.status in (409, 413), exc.message
        return exc.code.value
    return "created"


def test_the_quota_answers_over_http(api, monkeypatch) -> None:
    user = api.new_user()
    big = {"filename": "a.jsonl", "size_bytes": settings().dataset_max_bytes}
    # The stack's quota is 2 GiB and 100 MiB a file: the 21st maximum-size dataset does not fit.
    for _ in range(20):
        assert api.request("POST", "/v1/datasets", user, json=big).status_code == 201
    resp = api.request("POST", "/v1/datasets", user, json=big)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "dataset_storage_full"
    assert resp.json()["error"]["param"] == "size_bytes"


def test_abandoned_uploads_are_swept_and_late_ones_validated(api) -> None:
    cfg = settings()
    user = api.new_user()
    abandoned = api.request(
        "POST", "/v1/datasets", user, json={"filename": "a.jsonl", "size_bytes": 10}
    ).json()
    late = _unwatched(user.uid, timedelta(days=2))  # its file came, its finalize event was lost
    outcomes = datasets.sweep_abandoned(cfg, now=store.now() + timedelta(days=2)).items
    assert f"{abandoned['id']}: deleted (never uploaded)" in outcomes
    assert f"{late.id}: validated (ready)" in outcomes
    assert api.request("GET", f"/v1/datasets/{abandoned['id']}", user).status_code == 404
    assert api.request("GET", f"/v1/datasets/{late.id}", user).json()["status"] == "ready"
    assert set(store.get_or_create_user(user.uid, None).datasets) == {late.id}


def _unwatched(uid: str, age: timedelta) -> Dataset:
    """A pending dataset whose file is uploaded where the finalize trigger does not look (so
    no event validates it behind the test's back)."""
    late = Dataset(
        id=store.new_id("ds-"),
        uid=uid,
        filename="late.jsonl",
        declared_bytes=len(GOOD),
        object_name="",
        status=DatasetStatus.PENDING_UPLOAD,
        created_at=store.now() - age,
        updated_at=store.now() - age,
    )
    late = late._replace(object_name=f"datasets/{uid}/unwatched/{late.id}.jsonl")
    storage.client().bucket(settings().datasets_bucket).blob(late.object_name).upload_from_string(
        GOOD
    )
    store.new_dataset(late, 100, 1 << 30)
    return late


def test_a_validation_that_fails_never_leaves_the_dataset_validating(api, monkeypatch) -> None:
    user = api.new_user()
    dataset = _unwatched(user.uid, timedelta(0))

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the validator")

    working = datasets.validate
    monkeypatch.setattr(datasets, "validate", broken)
    with pytest.raises(RuntimeError):
        datasets.validate_dataset(dataset, settings())
    assert store.get_dataset(user.uid, dataset.id).status == DatasetStatus.PENDING_UPLOAD
    monkeypatch.setattr(datasets, "validate", working)  # validating again works
    assert datasets.validate_dataset(dataset, settings()).status == DatasetStatus.READY


def test_the_upload_trigger_retries_only_transient_failures(monkeypatch) -> None:
    from cloudevents.http import CloudEvent
    from google.api_core.exceptions import ServiceUnavailable

    from functions.dataset_events import main

    event = CloudEvent(
        {"type": "google.cloud.storage.object.v1.finalized", "source": "test"},
        {"bucket": settings().datasets_bucket, "name": "datasets/u/ds-x.jsonl"},
    )

    def fails_with(exc):
        def validate(*args):
            raise exc

        return validate

    monkeypatch.setattr(datasets, "validate_uploaded_object", fails_with(RuntimeError("bug")))
    main.dataset_events(event)  # permanent: logged, not raised (Eventarc would redeliver it)
    monkeypatch.setattr(
        datasets, "validate_uploaded_object", fails_with(ServiceUnavailable("firestore"))
    )
    with pytest.raises(ServiceUnavailable):
        main.dataset_events(event)
