"""Every Firestore collection, declared once: its name, whose documents it holds, what erasing
an account does with them, and the field Firestore's TTL deletes them by.

Erasure (shared.erasure via store.erase_user_documents) deletes the documents of every
`Erasure.DELETE` collection whose owner field names the user; the TTL policies in Terraform
are generated from `ttl_field` (make openapi writes them into terraform/functions.json); a
test fails on a collection the store uses without a declaration here, and another makes one
of everything for a user, erases them, and finds nothing of theirs left but what the law keeps.
Imports nothing of ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Erasure(StrEnum):
    DELETE = "delete"  # goes with the account
    KEEP_BY_LAW = "keep_by_law"  # accounting records: amounts, dates, Stripe and job ids only
    NOT_PERSONAL = "not_personal"  # holds nothing that names or describes a user


@dataclass(frozen=True)
class Collection:
    name: str
    owner: str | None  # the field naming the user; "__id__": the document id is the uid
    erasure: Erasure
    ttl_field: str | None = None  # Firestore's TTL deletes a document once this time passed
    holds: str = ""


COLLECTIONS: tuple[Collection, ...] = (
    Collection("users", "__id__", Erasure.DELETE, holds="the account: email, card, limits"),
    Collection("datasets", "uid", Erasure.DELETE, holds="a dataset and its validation report"),
    Collection("jobs", "uid", Erasure.DELETE, holds="a job, its progress, result and email"),
    Collection("idempotency", "uid", Erasure.DELETE, holds="a submission's Idempotency-Key"),
    Collection("mail", "uid", Erasure.DELETE, holds="an email for the Trigger Email extension"),
    Collection("api_keys", "uid", Erasure.DELETE, holds="an API key's hash and scopes"),
    Collection("webhook_endpoints", "uid", Erasure.DELETE, holds="a URL and its signing secrets"),
    Collection(
        "webhook_events", "uid", Erasure.DELETE, "expires_at", "an event with the job's view"
    ),
    Collection(
        "webhook_deliveries", "uid", Erasure.DELETE, "expires_at", "an event's attempts to a URL"
    ),
    Collection("charges", "uid", Erasure.KEEP_BY_LAW, holds="one charge's amount and Stripe ids"),
    Collection("ledger", "uid", Erasure.KEEP_BY_LAW, holds="money that moved: amount, date"),
    Collection("stripe_events", None, Erasure.NOT_PERSONAL, holds="Stripe event ids handled"),
    Collection(
        "rate_limits", None, Erasure.NOT_PERSONAL, "expires_at", "a hashed per-minute counter"
    ),
)
BY_NAME = {c.name: c for c in COLLECTIONS}


def erased_by_owner() -> tuple[str, ...]:
    """The collections whose documents erasure finds by their `uid` field and deletes."""
    return tuple(c.name for c in COLLECTIONS if c.erasure == Erasure.DELETE and c.owner == "uid")


def ttl_fields() -> dict[str, str]:
    """collection -> TTL field, for Terraform's google_firestore_field TTL policies."""
    return {c.name: c.ttl_field for c in COLLECTIONS if c.ttl_field}
