"""Envelope encryption for secrets we must be able to read again (webhook signing secrets), so
that a read of the database does not yield them.

Each secret is encrypted with a fresh 256-bit data key (AES-256-GCM, with a context string such
as the endpoint id as associated data: a sealed value copied onto another endpoint does not
open); the data key is wrapped by a key-encryption key that never leaves its keeper:

- `kms:<crypto key name>`: Cloud KMS in production (encrypt and decrypt calls, the same context
  as additional authenticated data). Only the functions whose account holds
  `cloudkms.cryptoKeyEncrypterDecrypter` on that key (terraform/project.tf) can open a secret.
- `local:<file>`: a local stand-in for KMS (there is no KMS emulator): the key-encryption key is
  32 random bytes in a file the local stack makes (devstack/stack.py), wrapping with AES-GCM.
  Same interface, same sealed format; only where the wrapping key lives differs.

Sealed form: `v1.<keeper>.<wrapped key>.<nonce>.<ciphertext>`, base64url parts; the keeper
("kms" or "local") says who can unwrap it.
"""

from __future__ import annotations

import base64
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from shared.config import Settings

VERSION = "v1"


class Keeper(Protocol):
    name: str

    def wrap(self, data_key: bytes, context: str) -> bytes: ...

    def unwrap(self, wrapped: bytes, context: str) -> bytes: ...


class LocalKeeper:
    """The local stand-in for Cloud KMS: AES-GCM under a key read from a file."""

    name = "local"

    def __init__(self, key_file: str) -> None:
        key = Path(key_file).read_bytes()
        if len(key) != 32:
            raise ValueError(f"{key_file}: a key-encryption key is 32 bytes, not {len(key)}")
        self._key = key

    def wrap(self, data_key: bytes, context: str) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        return nonce + AESGCM(self._key).encrypt(nonce, data_key, context.encode())

    def unwrap(self, wrapped: bytes, context: str) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(self._key).decrypt(wrapped[:12], wrapped[12:], context.encode())


class KmsKeeper:
    """Cloud KMS: the data key is encrypted by the crypto key, which never leaves KMS."""

    name = "kms"

    def __init__(self, key_name: str) -> None:
        self.key_name = key_name
        self._client: Any = None
        self._lock = threading.Lock()

    def _kms(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud import kms

                self._client = kms.KeyManagementServiceClient()
            return self._client

    def wrap(self, data_key: bytes, context: str) -> bytes:
        answer = self._kms().encrypt(
            request={
                "name": self.key_name,
                "plaintext": data_key,
                "additional_authenticated_data": context.encode(),
            }
        )
        return bytes(answer.ciphertext)

    def unwrap(self, wrapped: bytes, context: str) -> bytes:
        answer = self._kms().decrypt(
            request={
                "name": self.key_name,
                "ciphertext": wrapped,
                "additional_authenticated_data": context.encode(),
            }
        )
        return bytes(answer.plaintext)


@lru_cache(maxsize=4)
def keeper(spec: str) -> Keeper:
    """The keeper a setting names: `kms:<crypto key name>` or `local:<key file>`."""
    kind, _, where = spec.partition(":")
    if kind == "kms" and where:
        return KmsKeeper(where)
    if kind == "local" and where:
        return LocalKeeper(where)
    raise ValueError(f"YACHAY_SECRETS_KEY must be kms:<key name> or local:<file>, not {spec!r}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(secret: str, context: str, cfg: Settings) -> str:
    """The secret encrypted under a fresh data key, bound to `context`."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    keep = keeper(cfg.secrets_key)
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    ciphertext = AESGCM(data_key).encrypt(nonce, secret.encode(), context.encode())
    parts = (keep.wrap(data_key, context), nonce, ciphertext)
    return ".".join((VERSION, keep.name, *map(_b64, parts)))


def open_sealed(sealed: str, context: str, cfg: Settings) -> str:
    """The secret `seal` sealed with this context.

    Raises:
        ValueError: not a sealed value, another keeper's, or one whose context, key or bytes
            differ (a value moved between records, or altered).
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        version, name, wrapped, nonce, ciphertext = sealed.split(".")
    except ValueError:
        raise ValueError("not a sealed secret") from None
    keep = keeper(cfg.secrets_key)
    if version != VERSION or name != keep.name:
        raise ValueError(f"sealed by {name!r} ({version}); this service unwraps with {keep.name!r}")
    try:
        data_key = _unwrapped(cfg.secrets_key, _unb64(wrapped), context)
        plain = AESGCM(data_key).decrypt(_unb64(nonce), _unb64(ciphertext), context.encode())
        return plain.decode()
    except (InvalidTag, ValueError) as exc:
        raise ValueError(f"the sealed secret does not open: {type(exc).__name__}") from None


@lru_cache(maxsize=4096)
def _unwrapped(spec: str, wrapped: bytes, context: str) -> bytes:
    """Unwrapped data keys, kept in memory: a delivery's retries and a busy endpoint cost one
    KMS call per process, not one per attempt."""
    return keeper(spec).unwrap(wrapped, context)
