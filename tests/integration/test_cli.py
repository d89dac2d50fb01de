"""The `yachay` CLI as a user runs it: a subprocess against the local stack with a real API key,
from a file to a verified adapter; and in a pseudo-terminal, where the progress bar draws and
Ctrl-C stops following, never the job."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shared import store
from shared.contract import Progress
from shared.records import JobStatus
from tests.support.api import (
    Api,
    User,
    complete,
    held_job,
    jsonl,
    save_test_card,
    stored_job,
    trainer_reports,
)
from tests.support.tiny import chat_records

ROOT = Path(__file__).resolve().parents[2]
ALL = ["jobs:read", "jobs:write", "datasets:write", "billing:read", "webhooks:write"]


def key_for(api: Api, user: User, scopes: list[str] = ALL) -> str:
    resp = api.request("POST", "/v1/api-keys", user, json={"name": "cli", "scopes": scopes})
    return str(resp.json()["secret"])


def env_for(api: Api, key: str, tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "YACHAY_API_KEY": key,
        "YACHAY_BASE_URL": api.base,
        "XDG_CONFIG_HOME": str(tmp),
        "PYTHONPATH": str(ROOT / "cli"),
    }


def yachay(env: dict[str, str], *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "yachay_cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def as_json(done: subprocess.CompletedProcess) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_file_becomes_a_verified_adapter(api, tiny_in_store, tmp_path) -> None:
    user = api.new_user()
    save_test_card(user.uid)
    env = env_for(api, key_for(api, user), tmp_path)
    data = tmp_path / "train.jsonl"
    data.write_bytes(jsonl(chat_records(12, seed=5, mean_words=15)))
    job = as_json(
        yachay(
            env,
            "submit",
            str(data),
            "--model",
            "tiny-llama",
            "--epochs",
            "1",
            "--yes",
            "--poll",
            "0.5",
            "--json",
        )
    )
    assert job["status"] == "completed" and job["payment"]["status"] == "paid"
    out = tmp_path / "adapter"
    got = as_json(yachay(env, "download", job["id"], "--out", str(out), "--json"))
    names = {f["name"] for f in got["files"]}
    assert {"adapter_config.json", "adapter_model.safetensors", "manifest.json"} <= names
    for f in got["files"]:
        assert f["outcome"] == "downloaded"
        if f["sha256"]:
            assert hashlib.sha256((out / f["name"]).read_bytes()).hexdigest() == f["sha256"]
    # again: nothing to fetch; and a file cut short resumes from where it stopped
    weights = out / "adapter_model.safetensors"
    whole = weights.read_bytes()
    again = as_json(yachay(env, "download", job["id"], "--out", str(out), "--json"))
    assert {f["outcome"] for f in again["files"] if f["sha256"]} == {"kept"}
    weights.unlink()
    (out / "adapter_model.safetensors.part").write_bytes(whole[: len(whole) // 2])
    resumed = as_json(yachay(env, "download", job["id"], "--out", str(out), "--json"))
    assert weights.read_bytes() == whole
    assert "downloaded" in {f["outcome"] for f in resumed["files"]}
    listed = as_json(yachay(env, "list", "--json"))
    assert [j["id"] for j in listed["data"]] == [job["id"]]
    assert (
        as_json(yachay(env, "billing", "--json"))["lifetime_cents"]
        == job["payment"]["amount_cents"]
    )


def test_bad_data_is_reported_by_line_and_exits_1(api, tmp_path) -> None:
    user = api.new_user()
    env = env_for(api, key_for(api, user), tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n'
        '{"prompt": "a", "completion": ""}\n'
    )
    done = yachay(env, "datasets", "upload", str(bad))
    assert done.returncode == 1
    assert "line 1: a chat record needs at least one assistant message" in done.stderr
    assert "line 2: not valid JSON" in done.stderr and "line 3:" in done.stderr
    assert as_json(yachay(env, "datasets", "list", "--json"))["data"] == []  # nothing uploaded


def test_a_key_without_the_scope_fails_cleanly(api, tmp_path) -> None:
    user = api.new_user()
    env = env_for(api, key_for(api, user, ["jobs:read"]), tmp_path)
    assert as_json(yachay(env, "models", "--json"))["object"] == "list"
    done = yachay(env, "cancel", "job-x", "--json")  # cancelling takes jobs:write
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["code"] == "insufficient_scope"
    done = yachay(env, "keys")  # keys are a signed-in user's business
    assert done.returncode == 1 and "session_required" in done.stderr


def test_without_a_terminal_submit_asks_for_yes(api, tmp_path) -> None:
    user = api.new_user()
    save_test_card(user.uid)
    env = env_for(api, key_for(api, user), tmp_path)
    ds = tmp_path / "d.jsonl"
    ds.write_bytes(jsonl(chat_records(2, seed=1)))
    done = subprocess.run(
        [sys.executable, "-m", "yachay_cli", "submit", str(ds), "--model", "tiny-llama"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--yes" in done.stderr
    assert store.list_jobs(user.uid, 10, None, None)[0] == []  # nothing was submitted


def read_pty(fd: int, until: float, stop: Any = None) -> str:
    out = b""
    while time.monotonic() < until:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        if stop is not None and stop(out.decode("utf-8", "replace")):
            break
    return out.decode("utf-8", "replace")


def _interruptible() -> None:
    # What a user's terminal gives the CLI, whatever ran these tests: a shell starts background
    # commands with SIGINT ignored and a thread may block it; both are inherited across exec.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def spawn(env: dict[str, str], *argv: str) -> tuple[subprocess.Popen, int]:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "yachay_cli", *argv],
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
        preexec_fn=_interruptible,
    )
    os.close(follower)
    return proc, leader


def test_the_progress_bar_draws_in_a_terminal(api, tmp_path) -> None:
    user = api.new_user()
    save_test_card(user.uid)
    env = env_for(api, key_for(api, user), tmp_path)
    job = held_job(user.uid)
    trainer_reports(job.id, progress=Progress(5, 20, 1, 500, 2000, 1.234, 1e-4, 30.0))
    proc, fd = spawn(env, "status", job.id, "--follow", "--poll", "0.3")
    try:
        seen = read_pty(fd, time.monotonic() + 120, lambda s: "step 5/20" in s)
        assert "[######------------------]  25%" in seen and "loss 1.234" in seen
        complete(job.id, trained_tokens=30_000)
        rest = read_pty(fd, time.monotonic() + 120)
        assert proc.wait(timeout=60) == 0
        assert "completed" in rest and "paid" in rest
    finally:
        proc.kill()
        os.close(fd)


def test_ctrl_c_stops_following_never_the_job(api, tmp_path) -> None:
    user = api.new_user()
    env = env_for(api, key_for(api, user), tmp_path)
    job_id = stored_job(user.uid, JobStatus.RUNNING)
    proc, fd = spawn(env, "status", job_id, "--follow", "--poll", "0.3")
    try:
        seen = read_pty(fd, time.monotonic() + 120, lambda s: "running" in s)
        assert "running" in seen, seen  # following: the bar shows the job
        proc.send_signal(signal.SIGINT)
        # keep draining the terminal until the CLI exits: a full pty would block its writes
        rest = read_pty(fd, time.monotonic() + 60)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 90 s after SIGINT; it printed: {rest!r}") from None
        assert code == 130 and "keeps running" in rest, rest
    finally:
        proc.kill()
        os.close(fd)
    assert store.get_job(job_id).status == JobStatus.RUNNING


def test_login_takes_the_key_from_the_environment_never_argv_and_keeps_it_private(
    api, tmp_path
) -> None:
    user = api.new_user()
    key = key_for(api, user)
    env = env_for(api, key, tmp_path)
    folder = tmp_path / "yachay"
    folder.mkdir(mode=0o755)  # a folder left open by an earlier tool
    argv = yachay(env, "login", "--api-key", key, "--base-url", api.base)
    assert argv.returncode == 2 and "ps" in argv.stderr
    assert not (folder / "config.json").exists()
    done = yachay(env, "login", "--base-url", api.base)  # the key from YACHAY_API_KEY
    assert done.returncode == 0, done.stderr
    assert key not in done.stdout + done.stderr
    assert json.loads((folder / "config.json").read_text())["api_key"] == key
    assert (folder / "config.json").stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    "url,ok",
    [
        ("http://api.example.com", False),
        ("http://10.0.0.5:8700", False),
        ("ftp://api.example.com", False),
        ("http://127.0.0.1:1", True),
        ("http://localhost:1", True),
        ("http://[::1]:1", True),
    ],
)
def test_a_plain_http_base_url_is_refused_unless_it_is_this_machine(tmp_path, url, ok) -> None:
    env = {
        **os.environ,
        "YACHAY_API_KEY": "yk_test_x",
        "YACHAY_BASE_URL": url,
        "XDG_CONFIG_HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT / "cli"),
    }
    done = yachay(env, "models", timeout=60)
    if ok:  # allowed: it then fails to connect (nothing listens on port 1), exit 1
        assert done.returncode == 1 and "does not answer" in done.stderr, done.stderr
    else:
        assert done.returncode == 2 and ("in clear" in done.stderr or "URL" in done.stderr)
        assert "Traceback" not in done.stderr
