"""Cold start of every function: process start to its first good response, against its floor.

For each function target, run in the same invocation and interleaved:
  - the function itself under functions-framework, answering one real request (with a real
    Auth-emulator token and the Firestore/Storage emulators behind it where it needs them);
  - its floor: a bare functions-framework hello that imports only the SDKs that function needs.
Prints the median of each and the ratio. Goal: every function within 1.2x of its floor.
Both sides start from bytecode, as deployed functions do (terraform/package.py ships checked-hash
.pyc files), whatever PYTHONDONTWRITEBYTECODE says in this shell.

    make bench            # or: python -m bench.cold_start --rounds 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from devstack.emulators import sign_up
from devstack.stack import LOCAL, ROOT, Stack, free_port
from terraform.package import compile_bytecode

# The SDKs each function needs for its first good response (the floor imports exactly these).
SDKS: dict[str, tuple[str, ...]] = {
    "healthz": (),
    "models": ("firebase_admin.auth", "google.cloud.storage"),
    "me": ("firebase_admin.auth", "google.cloud.firestore"),
    "datasets": ("firebase_admin.auth", "google.cloud.firestore"),
    "jobs": ("firebase_admin.auth", "google.cloud.firestore"),
    "billing": ("firebase_admin.auth", "google.cloud.firestore"),
    "api_keys": ("firebase_admin.auth", "google.cloud.firestore"),
    "webhooks": ("firebase_admin.auth", "google.cloud.firestore"),
}
PATHS = {
    "healthz": "/v1/healthz",
    "models": "/v1/models",
    "me": "/v1/me",
    "datasets": "/v1/datasets",
    "jobs": "/v1/jobs",
    "billing": "/v1/billing/summary",
    "api_keys": "/v1/api-keys",
    "webhooks": "/v1/webhook-endpoints",
}


def time_to_first_ok(
    source: Path, target: str, path: str, env: dict[str, str], headers: dict[str, str]
) -> float:
    port = free_port()
    argv = [
        str(LOCAL / "venv" / "bin" / "functions-framework"),
        "--source",
        str(source),
        "--target",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = started + 60
        while time.perf_counter() < deadline:
            try:
                resp = requests.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=5)
                if resp.status_code == 200:
                    return time.perf_counter() - started
                raise RuntimeError(f"{target}: {resp.status_code} {resp.text[:200]}")
            except requests.ConnectionError:
                time.sleep(0.005)
        raise RuntimeError(f"{target} gave no answer in 60 s")
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    for folder in ("shared", "functions", "bench/floor"):
        compile_bytecode(ROOT / folder)
    with tempfile.TemporaryDirectory() as tmp, Stack(Path(tmp), with_api=False) as stack:
        env = {**os.environ, **stack.env(), "PYTHONPATH": str(ROOT)}
        token = sign_up("bench@example.com", auth_host=stack.host("auth"))["idToken"]
        headers = {"Authorization": f"Bearer {token}"}
        results: dict[str, dict[str, list[float]]] = {t: {"fn": [], "floor": []} for t in SDKS}
        for _ in range(args.rounds):
            for target, sdks in SDKS.items():
                fn = time_to_first_ok(
                    ROOT / "functions" / target / "main.py", target, PATHS[target], env, headers
                )
                floor = time_to_first_ok(
                    ROOT / "bench" / "floor" / "main.py",
                    "hello",
                    "/",
                    {**env, "YACHAY_BENCH_IMPORTS": ",".join(sdks)},
                    {},
                )
                results[target]["fn"].append(fn)
                results[target]["floor"].append(floor)
        bare = statistics.median(results["healthz"]["floor"])
        print(f"cold start, median of {args.rounds} interleaved rounds (seconds)")
        print(f"{'function':10s} {'function':>9s} {'floor':>7s} {'ratio':>6s}  floor imports")
        for target, r in results.items():
            fn, floor = statistics.median(r["fn"]), statistics.median(r["floor"])
            print(
                f"{target:10s} {fn:9.3f} {floor:7.3f} {fn / floor:6.2f}x  "
                f"{', '.join(SDKS[target]) or '(bare hello)'}"
            )
        healthz = statistics.median(results["healthz"]["fn"])
        print(f"/v1/healthz vs bare hello: {healthz / bare:.2f}x (goal <= 1.2x)")


if __name__ == "__main__":
    main()
