"""Webhook sending on its own: the SSRF guard, the bounds of a send, and the signatures."""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from shared import outbound, secretbox, webhooks
from shared.config import load
from shared.errors import ApiError
from shared.records import WebhookEndpoint, WebhookSecret


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "127.0.0.1",
        "::1",
        "169.254.169.254",  # the metadata server
        "fd00:ec2::254",  # the IPv6 metadata server
        "fe80::1",
        "224.0.0.1",
        "ff02::1",
        "100.64.0.1",
        "0.0.0.0",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        # embeddings of a private or loopback IPv4 address, and what is_global admits
        "::127.0.0.1",  # IPv4-compatible
        "::10.0.0.1",
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata server
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "fec0::1",  # site-local
        "192.0.0.8",  # IETF protocol assignment
        "198.18.0.1",  # benchmarking
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not outbound.is_public(ipaddress.ip_address(address), allow_loopback=False)


def test_public_addresses_pass_and_loopback_only_with_the_flag() -> None:
    for address in ("8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"):
        assert outbound.is_public(ipaddress.ip_address(address), allow_loopback=False)
    assert outbound.is_public(ipaddress.ip_address("127.0.0.1"), allow_loopback=True)
    assert not outbound.is_public(ipaddress.ip_address("10.0.0.1"), allow_loopback=True)


@pytest.mark.parametrize("url", ["http://[::1/", "http://[zz::1]/", "https://[::1", "https://:80/"])
def test_a_malformed_url_is_a_400_naming_the_url(url: str) -> None:
    from shared.config import load
    from shared.errors import ApiError

    with pytest.raises(ApiError) as raised:
        webhooks.check_url(url, load({"YACHAY_ENV": "local"}))
    assert raised.value.status == 400 and raised.value.param == "url"


def test_a_refusal_never_says_what_a_name_resolved_to() -> None:
    answer = outbound.post("http://localhost:9/hook", "{}", {}, allow_loopback=False)
    assert answer.error == outbound.REFUSED
    assert "127.0.0.1" not in (answer.error or "") and "::1" not in (answer.error or "")


def test_a_name_is_checked_by_every_address_it_resolves_to() -> None:
    with pytest.raises(outbound.UnsafeAddress, match="not a public address"):
        outbound.safe_address("localhost", 80, allow_loopback=False)
    with pytest.raises(outbound.UnsafeAddress, match="does not resolve"):
        outbound.safe_address("no-such-host.invalid", 80, allow_loopback=False)


@contextmanager
def server(
    status: int, delay_s: float = 0.0, body: bytes = b"ok", **headers: str
) -> Iterator[tuple[str, list[bytes]]]:
    got: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            time.sleep(delay_s)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", got
    finally:
        httpd.shutdown()
        httpd.server_close()


LOCAL = True  # loopback allowed, as on the local stack
STRICT = False


def test_loopback_is_refused_without_the_flag_before_any_connection() -> None:
    with server(200) as (url, got):
        answer = outbound.post(url, "{}", {}, STRICT)
        assert answer.status_code is None and "refused" in (answer.error or "")
        assert got == []
        assert outbound.post(url, "{}", {}, LOCAL).status_code == 200
        assert got == [b"{}"]


def test_redirects_are_not_followed() -> None:
    with server(302, Location="http://169.254.169.254/") as (url, got):
        assert outbound.post(url, "{}", {}, LOCAL).status_code == 302  # a failure, not followed
        assert len(got) == 1


def test_a_huge_answer_is_read_only_up_to_the_cap() -> None:
    with server(200, body=b"x" * (8 << 20)) as (url, _):
        started = time.monotonic()
        assert outbound.post(url, "{}", {}, LOCAL).status_code == 200
        assert time.monotonic() - started < 5


def test_a_slow_receiver_times_out(monkeypatch) -> None:
    monkeypatch.setattr(outbound, "TIMEOUT_S", 0.5)
    with server(200, delay_s=3) as (url, _):
        started = time.monotonic()
        answer = outbound.post(url, "{}", {}, LOCAL)
        assert answer.status_code is None and "Timeout" in (answer.error or "")
        assert time.monotonic() - started < 2.5


def test_urls_must_be_https_in_production() -> None:
    prod = load(
        {
            "YACHAY_ENV": "production",
            "GOOGLE_CLOUD_PROJECT": "p",
            "YACHAY_TASKS_SERVICE_ACCOUNT": "t@p.iam.gserviceaccount.com",
            "YACHAY_SECRETS_KEY": "kms:projects/p/locations/l/keyRings/r/cryptoKeys/k",
        }
    )
    webhooks.check_url("https://example.com/hook", prod)
    for bad in ("http://example.com/hook", "https://user:pw@example.com/", "https:///x", "x"):
        with pytest.raises(ApiError):
            webhooks.check_url(bad, prod)
    webhooks.check_url("http://127.0.0.1:9/hook", load({}))  # http on the local stack


@pytest.fixture
def sealing(tmp_path) -> object:
    """Settings whose secrets are sealed by the local key keeper (a key file in tmp_path)."""
    key = tmp_path / "kek.bin"
    key.write_bytes(os.urandom(32))
    return load({"YACHAY_SECRETS_KEY": f"local:{key}"})


def test_both_secrets_sign_during_a_rotation_and_only_then(sealing) -> None:
    t = datetime.now(UTC) - timedelta(days=3)  # its overlap ended two days ago
    old, new = webhooks.new_secret(), webhooks.new_secret()
    sealed_old, sealed_new = (secretbox.seal(s, "we-1", sealing) for s in (old, new))
    endpoint = WebhookEndpoint(
        id="we-1",
        uid="u",
        url="https://example.com",
        events=("job.completed",),
        description="",
        secrets=(
            WebhookSecret(sealed_new, t),
            WebhookSecret(sealed_old, t, expires_at=t + timedelta(hours=24)),
        ),
        created_at=t,
    )
    payload = '{"id":"evt-1"}'
    now = datetime.now(UTC)
    headers = webhooks.sign(endpoint, "evt-1", payload, now, sealing)
    assert len(headers["webhook-signature"].split(" ")) == 1  # only the new secret signs
    live = endpoint._replace(
        secrets=(
            WebhookSecret(sealed_new, now),
            WebhookSecret(sealed_old, now, expires_at=now + timedelta(hours=24)),
        )
    )
    headers = webhooks.sign(live, "evt-1", payload, now, sealing)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(payload, headers) == {"id": "evt-1"}
    with pytest.raises(Exception, match="signature"):
        Webhook(webhooks.new_secret()).verify(payload, headers)


def test_the_retry_schedule_is_standard_webhooks() -> None:
    assert webhooks.SCHEDULE_S == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
