"""What integration tests share: an API client with real users, and set-up shortcuts that go
through the store's own operations (never raw documents), plus the trainer's side of the
contract where a test plays the trainer."""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from devstack.emulators import sign_in, sign_up, verify_email
from devstack.local_checkout import TEST_CARDS
from shared import checkout, payments, store
from shared.config import settings
from shared.contract import (
    FAILURE_FIELD,
    PROGRESS_FIELD,
    RESULT_FIELD,
    Hyperparameters,
    Progress,
    TrainerFailure,
    TrainerResult,
)
from shared.openapi import public_spec
from shared.records import Job, JobStatus, PaymentMethod, Quote
from shared.routes import resolve
from shared.schema import Invalid
from shared.schemas import check_response
from tests.support.catalog import TINY_ID


@dataclass
class User:
    uid: str
    email: str
    token: str


@dataclass
class Api:
    base: str
    auth_host: str

    def new_user(self, verified: bool = True) -> User:
        """A new Firebase user; with a verified email unless asked otherwise (we write only to
        verified addresses)."""
        email = f"u-{uuid.uuid4().hex[:10]}@example.com"
        data = sign_up(email, auth_host=self.auth_host)
        if verified:
            verify_email(data["localId"], auth_host=self.auth_host)
            data = sign_in(email, auth_host=self.auth_host)
        return User(uid=data["localId"], email=email, token=data["idToken"])

    def request(
        self, method: str, path: str, user: User | None = None, token: str | None = None, **kw: Any
    ) -> requests.Response:
        """One request; its answer is held to the spec (status documented, body of the shape
        the operation's schema gives), so every integration test also tests the spec."""
        headers = dict(kw.pop("headers", {}))
        if user is not None:
            headers["Authorization"] = f"Bearer {user.token}"
        elif token is not None:
            headers["Authorization"] = f"Bearer {token}"
        resp = requests.request(method, self.base + path, headers=headers, timeout=30, **kw)
        conforms(method, path, resp)
        return resp


@functools.cache
def _documented() -> dict[str, set[int]]:
    spec = public_spec()
    return {
        op["operationId"]: {int(status) for status in op["responses"]}
        for item in spec["paths"].values()
        for op in item.values()
    }


def conforms(method: str, path: str, resp: requests.Response) -> None:
    """Raises AssertionError when a public operation answers with a status its spec does not
    document or a body that does not fit the schema of that status."""
    route = resolve(method, urlsplit(path).path).route
    if route is None or route.internal:
        return
    status = resp.status_code
    where = f"{method} {path} -> {status}"
    assert status in _documented()[route.operation_id], f"{where}: status not in the spec"
    if not resp.content:
        return
    assert resp.headers.get("Content-Type", "").startswith("application/json"), where
    try:
        check_response(route.operation_id, status, resp.json())
    except Invalid as exc:
        raise AssertionError(
            f"{where}: body does not fit the spec at '{exc.path}': {exc}"
        ) from None


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def save_test_card(uid: str, card: str = "visa") -> None:
    """Gives the user a Stripe customer on localstripe with a real test card attached, and
    records it as their saved card (the card-saving flow itself, through the local Checkout
    stand-in and its webhook, is tested in test_billing; job tests need only its outcome)."""
    cfg = settings()
    customer = store.get_or_create_user(uid, None).stripe_customer_id or (
        store.set_stripe_customer_once(uid, checkout.create_customer(cfg, uid, None))
    )
    number = TEST_CARDS[card][0]
    stripe = payments.client(cfg)
    pm = stripe.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    stripe.v1.payment_methods.attach(pm.id, {"customer": customer})
    store.set_payment_method(uid, PaymentMethod(pm.id, "visa", number[-4:]))


def upload_dataset(
    api: Api, user: User, content: bytes, filename: str = "train.jsonl", validate: bool = True
) -> dict[str, Any]:
    created = api.request(
        "POST",
        "/v1/datasets",
        user,
        json={"filename": filename, "size_bytes": max(1, len(content))},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    put = requests.put(
        body["upload"]["url"], data=content, headers=body["upload"]["headers"], timeout=30
    )
    assert put.status_code == 200, put.text
    if not validate:
        return body
    resp = api.request("POST", f"/v1/datasets/{body['id']}/validate", user)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def wait_for(
    api: Api, user: User, job_id: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 240
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = api.request("GET", f"/v1/jobs/{job_id}", user).json()
        if pred(job):
            return job
        time.sleep(0.5)
    raise AssertionError(f"timed out; last: {job}")


TEST_QUOTE = Quote(
    examples=4,
    dropped_examples=0,
    truncated_examples=0,
    tokens_per_epoch=1000,
    trained_tokens_per_epoch=600,
    epochs=1,
    billable_tokens=1000,
    price_cents=50,
    currency="usd",
    estimated_seconds=200,
    gpu_type="nvidia-l4",
    price_per_million_tokens_cents=100,
)


def job_record(
    uid: str,
    status: JobStatus = JobStatus.RUNNING,
    created_at: datetime | None = None,
    job_id: str | None = None,
    **changes: Any,
) -> Job:
    """A job of `uid` on the tiny model with TEST_QUOTE, as admission makes it, in `status`."""
    t = created_at or store.now()
    changes.setdefault("quote", TEST_QUOTE)
    changes.setdefault("email", f"{uid}@example.com")
    return Job(
        id=job_id or store.new_id("ft-"),
        uid=uid,
        model=TINY_ID,
        dataset_id="ds-x",
        dataset_object=f"datasets/{uid}/ds-x.jsonl",
        dataset_sha256="0" * 64,
        hyperparameters=Hyperparameters(epochs=1),
        status=status,
        created_at=t,
        updated_at=t,
        started_at=None if status == JobStatus.QUEUED else t,
        **changes,
    )


def stored_job(
    uid: str,
    status: JobStatus = JobStatus.RUNNING,
    created_at: datetime | None = None,
    **changes: Any,
) -> str:
    """Stores a job_record() as admission would; returns its id. No Batch job and no trainer
    exist for it: the test plays them."""
    job = job_record(uid, status, created_at, **changes)
    store.new_job(job, None, "test", max_active=1000)
    return job.id


def trainer_reports(
    job_id: str,
    result: TrainerResult | None = None,
    failure: TrainerFailure | None = None,
    progress: Progress | None = None,
) -> None:
    """Writes what the trainer writes into the job's document (shared.contract's fields)."""
    fields: dict[str, Any] = {}
    if result is not None:
        fields[RESULT_FIELD] = result.to_doc()
    if failure is not None:
        fields[FAILURE_FIELD] = failure.to_doc()
    if progress is not None:
        fields[PROGRESS_FIELD] = progress.to_doc()
    store.client().document(store.job_document(job_id)).update(fields)


def result_of(trained_tokens: int) -> TrainerResult:
    return TrainerResult(
        steps=1,
        trained_tokens=trained_tokens,
        examples=4,
        final_loss=1.0,
        last_epoch_mean_loss=1.0,
        train_seconds=0.1,
    )


def held_job(uid: str, status: JobStatus = JobStatus.RUNNING, **changes: Any) -> Job:
    """A stored job with a real hold of its quoted price on localstripe (the user needs a
    card: save_test_card)."""
    from shared import holds

    job_id = stored_job(uid, status, **changes)
    stored = store.get_job(job_id)
    assert stored is not None
    return holds.hold(stored, settings())


def complete(job_id: str, trained_tokens: int) -> None:
    """The trainer reports its result and Batch says the job succeeded."""
    from shared import lifecycle

    trainer_reports(job_id, result=result_of(trained_tokens))
    lifecycle.on_batch_state(f"x/jobs/yachay-{job_id}", "SUCCEEDED", settings())


def settled(job_id: str, timeout: float = 30.0) -> Job:
    """The job once its payment is recorded and its hold ended (the local trigger relay
    settles it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get_job(job_id)
        assert job is not None
        if job.payment is not None and (job.authorization is None or not job.authorization.holding):
            return job
        time.sleep(0.2)
    raise AssertionError(f"never settled: {store.get_job(job_id)}")
