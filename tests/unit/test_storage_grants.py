"""A trainer's storage credentials name its own job's objects and nothing else
(shared.storage_grants), and the trainer refreshes them through the API before they expire."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import storage_grants
from shared.contract import TrainerConfig
from shared.storage_grants import Grant


def job_config(**changes: Any) -> TrainerConfig:
    base: dict[str, Any] = {
        "job_id": "ft-abc",
        "model_id": "smollm2-135m",
        "model_uri": "gs://m/models/smollm2-135m",
        "dataset_uri": "gs://d/datasets/u1/ds-1.jsonl",
        "output_uri": "gs://a/jobs/ft-abc",
        "checkpoint_uri": "gs://c/jobs/ft-abc",
    }
    return TrainerConfig(**{**base, **changes})


def test_a_job_is_granted_exactly_its_inputs_and_outputs() -> None:
    granted = storage_grants.grants(
        job_config(
            validation_uri="gs://d/datasets/u1/ds-2.jsonl",
            init_adapter_uri="gs://a/jobs/ft-old/checkpoint-40",
        )
    )
    assert granted == [
        Grant("d", "datasets/u1/ds-1.jsonl", folder=False, write=False),
        Grant("d", "datasets/u1/ds-2.jsonl", folder=False, write=False),
        Grant("m", "models/smollm2-135m", folder=True, write=False),
        Grant("a", "jobs/ft-old/checkpoint-40", folder=True, write=False),
        Grant("a", "jobs/ft-abc", folder=True, write=True),
        Grant("c", "jobs/ft-abc", folder=True, write=True),
    ]
    # Without validation or a start adapter, nothing is granted for them.
    assert len(storage_grants.grants(job_config())) == 4


def test_each_rule_admits_one_object_or_one_folder_never_a_sibling() -> None:
    file_rule = Grant("d", "datasets/u1/ds-1.jsonl", folder=False, write=False).rule()
    assert file_rule == {
        "availableResource": "//storage.googleapis.com/projects/_/buckets/d",
        "availablePermissions": ["inRole:roles/storage.objectViewer"],
        "availabilityCondition": {
            "expression": "resource.name == 'projects/_/buckets/d/objects/datasets/u1/ds-1.jsonl'"
        },
    }
    folder = Grant("a", "jobs/ft-abc", folder=True, write=True)
    expression = folder.rule()["availabilityCondition"]["expression"]
    # the trailing slash: jobs/ft-abc/ admits jobs/ft-abc/x, never jobs/ft-abcd/x
    assert "startsWith('projects/_/buckets/a/objects/jobs/ft-abc/')" in expression
    assert "objectListPrefix', '').startsWith('jobs/ft-abc/')" in expression
    assert folder.rule()["availablePermissions"] == ["inRole:roles/storage.objectAdmin"]
    boundary = storage_grants.access_boundary([folder])
    assert boundary["accessBoundary"]["accessBoundaryRules"] == [folder.rule()]


@pytest.mark.parametrize(
    "uri",
    [
        "/tmp/local/folder",  # not Cloud Storage: nothing a boundary could name
        "gs://bucket-only",
        "gs://d/datasets/u1/x') || true || ('.jsonl",  # would end the CEL string early
        "gs://d/datasets/u1/x\\'.jsonl",
    ],
)
def test_names_a_boundary_cannot_hold_safely_are_refused(uri: str) -> None:
    with pytest.raises(ValueError):
        storage_grants.grants(job_config(dataset_uri=uri))


def test_google_auth_accepts_the_boundary() -> None:
    """The production minter hands these rules to google-auth, which validates them itself
    (permissions must be inRole:..., at most ten rules); no token is exchanged here."""
    cab = storage_grants.cab(storage_grants.grants(job_config(validation_uri="gs://d/v.jsonl")))
    assert len(cab.rules) == 5
    assert isinstance(storage_grants.tokens_for(False), storage_grants.DownscopedStorageTokens)
    assert storage_grants.tokens_for(True).mint([]) is None  # the emulator checks nothing


def test_the_trainer_refreshes_its_token_through_the_api_before_it_expires() -> None:
    import google.auth.transport.requests

    from yachay_trainer import storage

    calls: list[int] = []
    lock = threading.Lock()

    def source() -> tuple[str, datetime]:
        with lock:
            calls.append(1)
            n = len(calls)
        # the first token is almost spent; google-auth refreshes ahead of the expiry
        lifetime = timedelta(seconds=30) if n == 1 else timedelta(hours=1)
        return f"token-{n}", (datetime.now(UTC) + lifetime).replace(tzinfo=None)

    try:
        assert storage.use_job_tokens(source, "p")
        creds = storage._client()._credentials
        assert creds.token == "token-1" and not creds.valid  # inside the refresh margin
        creds.before_request(google.auth.transport.requests.Request(), "GET", "https://x", {})
        assert creds.token == "token-2" and creds.valid and len(calls) == 2
    finally:
        storage._job_credentials = None
        storage._client.cache_clear()
    # where the API mints none (the local stack), the default client stays
    assert storage.use_job_tokens(lambda: None, "p") is False
    assert storage._job_credentials is None
