"""Internal routes verify their caller's Google OIDC token in code (shared.auth), against a real
HTTP endpoint serving signing certificates the way Google's does (a local server here, with a key
made for the test: Google's own endpoint is not reachable offline)."""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import flask
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from shared import auth, http
from shared.config import load
from shared.errors import ApiError, Code
from shared.http import Reply, serve
from shared.routes import routes_of

TASKS_SA = "yachay-tasks@proj.iam.gserviceaccount.com"
LAUNCH_URL = "https://launcher.example/internal/tasks/launch-job"


def _key_and_cert(kid: str) -> tuple[crypt.RSASigner, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kid)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    signer = crypt.RSASigner.from_string(pem, key_id=kid)
    return signer, cert.public_bytes(serialization.Encoding.PEM).decode()


GOOGLE, GOOGLE_CERT = _key_and_cert("google-1")
STRANGER, _ = _key_and_cert("google-1")  # same key id, another key


@pytest.fixture(scope="module")
def certs_url() -> Iterator[str]:
    body = json.dumps({"google-1": GOOGLE_CERT}).encode()

    class Certs(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Certs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/oauth2/v1/certs"
    server.shutdown()
    server.server_close()


@pytest.fixture
def cfg(certs_url):
    return replace(
        load({}),
        tasks_service_account=TASKS_SA,
        task_target_url=LAUNCH_URL,
        oidc_certs_url=certs_url,
    )


def token(signer=GOOGLE, **overrides) -> str:
    now = int(time.time())
    claims = {
        "iss": "https://accounts.google.com",
        "aud": LAUNCH_URL,
        "email": TASKS_SA,
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
        "sub": "1234",
        **overrides,
    }
    return jwt.encode(signer, claims).decode()


def test_our_tasks_identity_is_accepted(cfg) -> None:
    auth.verify_internal_caller(f"Bearer {token()}", cfg)


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, Code.AUTH_MISSING),
        ("Basic abc", Code.AUTH_NOT_BEARER),
        ("Bearer not-a-jwt", Code.AUTH_INVALID),
        (f"Bearer {token(aud='https://someone-else.example')}", Code.AUTH_INVALID),
        (f"Bearer {token(email='attacker@proj.iam.gserviceaccount.com')}", Code.AUTH_INVALID),
        (f"Bearer {token(email_verified=False)}", Code.AUTH_INVALID),
        (f"Bearer {token(iss='https://evil.example')}", Code.AUTH_INVALID),
        (
            f"Bearer {token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)}",
            Code.AUTH_INVALID,
        ),
        (f"Bearer {token(signer=STRANGER)}", Code.AUTH_INVALID),
    ],
    ids=[
        "missing",
        "not-bearer",
        "garbage",
        "audience",
        "email",
        "unverified",
        "issuer",
        "expired",
        "forged",
    ],
)
def test_anything_else_is_refused(cfg, header, code) -> None:
    with pytest.raises(ApiError) as refused:
        auth.verify_internal_caller(header, cfg)
    assert refused.value.code == code and refused.value.status == 401


def test_internal_routes_check_it_before_the_handler_runs(cfg, monkeypatch) -> None:
    ran = []
    monkeypatch.setattr(http, "settings", lambda: cfg)
    # Every other operation of the function gets a handler that must not run either: taken from
    # the route table, so a new internal route cannot make this test stale.
    handlers = {r.operation_id: (lambda req: Reply({})) for r in routes_of("worker")}

    def launch(req: object) -> Reply:
        ran.append(1)
        return Reply({})

    handlers["launchJob"] = launch
    view = serve("worker", handlers)
    app = flask.Flask("t")
    with app.test_request_context("/internal/tasks/launch-job", method="POST", json={}):
        refused = view(flask.request)
    assert refused.status_code == 401 and ran == []
    headers = {"Authorization": f"Bearer {token()}"}
    with app.test_request_context(
        "/internal/tasks/launch-job", method="POST", json={}, headers=headers
    ):
        assert view(flask.request).status_code == 200 and ran == [1]


def test_production_needs_the_tasks_identity() -> None:
    from shared.config import ConfigError

    with pytest.raises(ConfigError, match="YACHAY_TASKS_SERVICE_ACCOUNT"):
        load({"YACHAY_ENV": "production", "GOOGLE_CLOUD_PROJECT": "p"})
