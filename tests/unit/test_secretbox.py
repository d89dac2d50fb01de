"""Sealed secrets (envelope encryption): what the database holds does not yield the secret, a
sealed value opens only on its own record and with its own key, and the Cloud KMS keeper sends
the requests KMS expects. The local keeper stands in for KMS (no KMS emulator exists)."""

from __future__ import annotations

import os

import pytest

from shared import secretbox
from shared.config import load


def settings_with_key(tmp_path, name: str = "kek.bin"):
    key = tmp_path / name
    key.write_bytes(os.urandom(32))
    return load({"YACHAY_SECRETS_KEY": f"local:{key}"})


def test_a_sealed_secret_opens_with_its_context_and_key_only(tmp_path) -> None:
    cfg = settings_with_key(tmp_path)
    secret = "whsec_" + "A" * 43
    sealed = secretbox.seal(secret, "we-1", cfg)
    assert secret not in sealed and "A" * 8 not in sealed
    assert sealed.startswith("v1.local.")
    assert secretbox.seal(secret, "we-1", cfg) != sealed  # a fresh data key and nonce each time
    assert secretbox.open_sealed(sealed, "we-1", cfg) == secret
    with pytest.raises(ValueError, match="does not open"):
        secretbox.open_sealed(sealed, "we-2", cfg)  # copied onto another endpoint
    other_key = settings_with_key(tmp_path, "other.bin")
    with pytest.raises(ValueError, match="does not open"):
        secretbox.open_sealed(sealed, "we-1", other_key)
    version, keeper, wrapped, nonce, body = sealed.split(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    for bad in (".".join((version, keeper, wrapped, nonce, flipped)), "whsec_plain", "a.b.c"):
        with pytest.raises(ValueError):
            secretbox.open_sealed(bad, "we-1", cfg)
    kms_sealed = ".".join(("v1", "kms", wrapped, nonce, body))
    with pytest.raises(ValueError, match="unwraps with 'local'"):
        secretbox.open_sealed(kms_sealed, "we-1", cfg)


def test_no_keeper_configured_is_refused_plainly(tmp_path) -> None:
    for spec in ("", "kms:", "vault:x"):
        with pytest.raises(ValueError, match="YACHAY_SECRETS_KEY"):
            secretbox.seal("s", "we-1", load({"YACHAY_SECRETS_KEY": spec}))
    short = tmp_path / "short.bin"
    short.write_bytes(b"x" * 16)
    with pytest.raises(ValueError, match="32 bytes"):
        secretbox.seal("s", "we-1", load({"YACHAY_SECRETS_KEY": f"local:{short}"}))


def test_the_kms_keeper_wraps_with_the_context_as_authenticated_data() -> None:
    """The requests the Cloud KMS client gets (recorded, not sent: no KMS here): encrypt and
    decrypt name the key and bind the context, so KMS itself refuses a moved value."""
    calls: list[tuple[str, dict]] = []

    class Answer:
        def __init__(self, **fields: bytes) -> None:
            self.__dict__.update(fields)

    class FakeKms:
        def encrypt(self, request: dict) -> Answer:
            calls.append(("encrypt", request))
            return Answer(ciphertext=b"W" + request["plaintext"])

        def decrypt(self, request: dict) -> Answer:
            calls.append(("decrypt", request))
            return Answer(plaintext=request["ciphertext"][1:])

    name = "projects/p/locations/us-central1/keyRings/yachay-secrets/cryptoKeys/webhook-secrets"
    cfg = load({"YACHAY_SECRETS_KEY": f"kms:{name}"})
    keeper = secretbox.keeper(cfg.secrets_key)
    assert isinstance(keeper, secretbox.KmsKeeper)
    keeper._client = FakeKms()
    sealed = secretbox.seal("whsec_x", "we-9", cfg)
    assert sealed.startswith("v1.kms.")
    assert secretbox.open_sealed(sealed, "we-9", cfg) == "whsec_x"
    (op1, enc), (op2, dec) = calls
    assert (op1, op2) == ("encrypt", "decrypt")
    assert enc["name"] == dec["name"] == name
    assert enc["additional_authenticated_data"] == dec["additional_authenticated_data"] == b"we-9"
    assert len(enc["plaintext"]) == 32  # a 256-bit data key, never the secret itself
