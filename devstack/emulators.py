"""Small helpers for the emulators' own REST endpoints (sign-up, resets). Local-only."""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

import requests

PROJECT_ID = "demo-yachay"


def sign_up(
    email: str, password: str = "password-123", auth_host: str | None = None
) -> dict[str, Any]:
    """Creates a user in the Auth emulator; returns its signUp answer (idToken, localId, ...)."""
    host = auth_host or os.environ["FIREBASE_AUTH_EMULATOR_HOST"]
    resp = requests.post(
        f"http://{host}/identitytoolkit.googleapis.com/v1/accounts:signUp?key=fake-api-key",
        json={"email": email, "password": password, "returnSecureToken": True},
        timeout=10,
    )
    resp.raise_for_status()
    answer: dict[str, Any] = resp.json()
    return answer


def verify_email(uid: str, auth_host: str | None = None) -> None:
    """Marks the user's email verified in the Auth emulator (as clicking the emailed link
    would), through the emulator's admin access."""
    host = auth_host or os.environ["FIREBASE_AUTH_EMULATOR_HOST"]
    requests.post(
        f"http://{host}/identitytoolkit.googleapis.com/v1/projects/{PROJECT_ID}/accounts:update",
        json={"localId": uid, "emailVerified": True},
        headers={"Authorization": "Bearer owner"},
        timeout=10,
    ).raise_for_status()


def sign_in(
    email: str, password: str = "password-123", auth_host: str | None = None
) -> dict[str, Any]:
    """Signs a user in with the Auth emulator; returns its answer (a fresh idToken, ...)."""
    host = auth_host or os.environ["FIREBASE_AUTH_EMULATOR_HOST"]
    resp = requests.post(
        f"http://{host}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword"
        "?key=fake-api-key",
        json={"email": email, "password": password, "returnSecureToken": True},
        timeout=10,
    )
    resp.raise_for_status()
    answer: dict[str, Any] = resp.json()
    return answer


def reset_all(hosts: dict[str, str]) -> None:
    """Empties Firestore, Auth, Stripe and every Storage bucket of the stack at `hosts`."""
    timeout = 10
    requests.delete(
        f"http://{hosts['firestore']}/emulator/v1/projects/{PROJECT_ID}/databases/(default)/documents",
        timeout=timeout,
    ).raise_for_status()
    requests.delete(
        f"http://{hosts['auth']}/emulator/v1/projects/{PROJECT_ID}/accounts", timeout=timeout
    ).raise_for_status()
    requests.delete(f"http://{hosts['stripe']}/_config/data", timeout=timeout).raise_for_status()
    storage = f"http://{hosts['storage']}/storage/v1/b"
    for bucket in requests.get(storage, timeout=timeout).json().get("items", []):
        objects = requests.get(f"{storage}/{bucket['name']}/o", timeout=timeout).json()
        for obj in objects.get("items", []):
            name = urllib.parse.quote(obj["name"], safe="")
            requests.delete(f"{storage}/{bucket['name']}/o/{name}", timeout=timeout)


def _admin(auth_host: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
    """Calls the Auth emulator's admin REST API (the emulator accepts the 'owner' token)."""
    resp = requests.post(
        f"http://{auth_host}/identitytoolkit.googleapis.com/v1/projects/{PROJECT_ID}/accounts:{action}",
        json=body,
        headers={"Authorization": "Bearer owner"},
        timeout=10,
    )
    resp.raise_for_status()
    answer: dict[str, Any] = resp.json()
    return answer


def revoke_tokens(auth_host: str, uid: str, valid_since: int) -> None:
    """Revokes every token of `uid` issued before `valid_since` (epoch seconds)."""
    _admin(auth_host, "update", {"localId": uid, "validSince": str(valid_since)})


def disable_user(auth_host: str, uid: str) -> None:
    _admin(auth_host, "update", {"localId": uid, "disableUser": True})


def delete_user(auth_host: str, uid: str) -> None:
    _admin(auth_host, "delete", {"localId": uid})
