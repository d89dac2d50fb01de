"""Every Firestore collection is declared once (shared.documents), and what derives from the
declaration (erasure, the TTL policies) follows it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from shared import documents, openapi
from shared.documents import Erasure

ROOT = Path(__file__).resolve().parents[2]


def test_every_collection_the_store_uses_is_declared() -> None:
    """The collection names are the store's module constants (NAME = "name"); one without a
    declaration, or a declaration without a use, fails here."""
    source = (ROOT / "shared" / "store.py").read_text()
    block = source[
        source.index('USERS = "users"') : source.index("\n\n", source.index('USERS = "users"'))
    ]
    used = set(re.findall(r'^[A-Z_]+ = "([a-z_]+)"$', block, re.M))
    assert used == set(documents.BY_NAME), used ^ set(documents.BY_NAME)
    # and nothing reaches Firestore by a literal name elsewhere in the store (the readiness
    # probe reads "_health", a document never written)
    assert not re.search(r'collection\("[a-z][a-z_]*"\)', source)


def test_every_collection_says_what_erasure_does() -> None:
    for c in documents.COLLECTIONS:
        assert c.erasure in Erasure and c.holds, c
        if c.erasure in (Erasure.DELETE, Erasure.KEEP_BY_LAW):
            assert c.owner is not None, f"{c.name}: erasure must find the user's documents"
    kept = {c.name for c in documents.COLLECTIONS if c.erasure == Erasure.KEEP_BY_LAW}
    assert kept == {"charges", "ledger"}  # accounting records only
    assert {"webhook_endpoints", "webhook_events", "webhook_deliveries"} <= set(
        documents.erased_by_owner()
    )


def test_terraforms_ttl_policies_are_the_declared_ones() -> None:
    table = json.loads(openapi.FUNCTION_TABLE.read_text())
    assert table["firestore_ttl"] == documents.ttl_fields()
    assert documents.ttl_fields() == {
        "webhook_events": "expires_at",
        "webhook_deliveries": "expires_at",
        "rate_limits": "expires_at",
    }
    project = (ROOT / "terraform" / "project.tf").read_text()
    assert "for_each   = local.wiring.firestore_ttl" in project
    assert project.count("ttl_config {}") == 1  # no TTL policy written by hand
