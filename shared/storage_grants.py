"""What one trainer may touch in Cloud Storage, and short-lived credentials limited to exactly that.

A trainer runs untrusted user data, so its service account holds no bucket role at all. While
its job runs it asks the worker's internal trainer-storage-token route (with its job token)
for an access token, which the worker mints from its own credentials through a Credential
Access Boundary (https://cloud.google.com/iam/docs/downscoping-short-lived-credentials): read
its dataset file, its validation file, its base model's folder and the adapter it starts from;
read and write its own output and checkpoint folders; nothing else, for at most an hour. The
trainer refreshes the token through the same route, so a job that has ended (cancelled,
failed, completed) gets no new one.

Locally the Storage emulator checks no credentials, so `LocalStorageTokens` mints nothing and
the trainer uses its default client; what the local stack tests is the boundary (which objects
each job's rules name) and the refresh through the route, not Google's enforcement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from shared.contract import TrainerConfig

READ = "inRole:roles/storage.objectViewer"
READ_WRITE = "inRole:roles/storage.objectAdmin"
MAX_RULES = 10  # a Credential Access Boundary holds at most ten rules


@dataclass(frozen=True)
class Grant:
    """One object (`folder=False`: exactly that name) or one folder (every name under
    `name` + "/") in one bucket, read-only or read-write."""

    bucket: str
    name: str
    folder: bool
    write: bool

    def condition(self) -> str:
        """The CEL condition of its rule. A folder's also admits listing that folder
        (objects.list is checked on the bucket with the listed prefix as an attribute)."""
        resource = f"projects/_/buckets/{self.bucket}/objects/{self.name}"
        if not self.folder:
            return f"resource.name == '{resource}'"
        prefix = self.name + "/"
        return (
            f"resource.name.startsWith('{resource}/') || "
            f"api.getAttribute('storage.googleapis.com/objectListPrefix', '')"
            f".startsWith('{prefix}')"
        )

    def rule(self) -> dict[str, Any]:
        """The rule in the wire form of the Security Token Service's accessBoundary option."""
        return {
            "availableResource": f"//storage.googleapis.com/projects/_/buckets/{self.bucket}",
            "availablePermissions": [READ_WRITE if self.write else READ],
            "availabilityCondition": {"expression": self.condition()},
        }


def _split(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://"):
        raise ValueError(f"not a Cloud Storage URI: {uri!r}")
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    name = name.rstrip("/")
    # A quote or backslash would end the CEL string early; our own names never hold one.
    if not bucket or not name or any(c in uri for c in "'\\"):
        raise ValueError(f"not a bucket and object name: {uri!r}")
    return bucket, name


def grants(tc: TrainerConfig) -> list[Grant]:
    """Everything the trainer of `tc` reads and writes, and nothing more."""
    out = []
    for uri, folder, write in (
        (tc.dataset_uri, False, False),
        (tc.validation_uri, False, False),
        (tc.model_uri, True, False),
        (tc.init_adapter_uri, True, False),
        (tc.output_uri, True, True),
        (tc.checkpoint_uri, True, True),
    ):
        if uri:
            bucket, name = _split(uri)
            out.append(Grant(bucket, name, folder, write))
    assert len(out) <= MAX_RULES
    return out


def access_boundary(granted: list[Grant]) -> dict[str, Any]:
    """The Credential Access Boundary for `granted`, as the token exchange takes it."""
    return {"accessBoundary": {"accessBoundaryRules": [g.rule() for g in granted]}}


@dataclass(frozen=True)
class StorageToken:
    token: str
    expires_at: datetime


class StorageTokens(Protocol):
    def mint(self, granted: list[Grant]) -> StorageToken | None:
        """A token for `granted` only, or None where storage checks no credentials."""
        ...


class LocalStorageTokens:
    """The local stack: the Storage emulator checks no credentials, so there is nothing to
    mint and the trainer keeps its default (emulator) client."""

    def mint(self, granted: list[Grant]) -> StorageToken | None:
        return None


class DownscopedStorageTokens:
    """Production: the worker's own credentials exchanged for a token limited by the
    boundary (google.auth.downscoped; one Security Token Service call per token)."""

    def mint(self, granted: list[Grant]) -> StorageToken | None:
        import google.auth
        import google.auth.transport.requests
        from google.auth import downscoped

        source, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        credentials = downscoped.Credentials(  # type: ignore[no-untyped-call]
            source_credentials=source, credential_access_boundary=cab(granted)
        )
        credentials.refresh(google.auth.transport.requests.Request())
        expiry = credentials.expiry  # naive UTC in google-auth
        if expiry is None:
            raise RuntimeError("the token exchange answered a token without an expiry")
        return StorageToken(str(credentials.token), expiry.replace(tzinfo=UTC))


def cab(granted: list[Grant]) -> Any:
    """The boundary as google-auth's CredentialAccessBoundary object."""
    from google.auth import downscoped

    rules = [
        downscoped.AccessBoundaryRule(  # type: ignore[no-untyped-call]
            available_resource=g.rule()["availableResource"],
            available_permissions=g.rule()["availablePermissions"],
            availability_condition=downscoped.AvailabilityCondition(  # type: ignore[no-untyped-call]
                expression=g.condition()
            ),
        )
        for g in granted
    ]
    return downscoped.CredentialAccessBoundary(rules=rules)  # type: ignore[no-untyped-call]


def tokens_for(is_local: bool) -> StorageTokens:
    return LocalStorageTokens() if is_local else DownscopedStorageTokens()


def expiry_doc(token: StorageToken | None) -> dict[str, Any]:
    """The route's answer: the token and its expiry, or nulls (use the default client)."""
    if token is None:
        return {"token": None, "expires_at": None}
    return {"token": token.token, "expires_at": token.expires_at.astimezone(UTC).isoformat()}
