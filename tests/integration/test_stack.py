"""The local stack itself: addresses file, loopback-only binding, clean stop on failure."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from devstack.stack import SERVICES, Stack, StackError, free_port


def listening(port: int) -> list[str]:
    """Local addresses listening on `port` (from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:
                found.append(addr)
    return found


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def test_stack_json_describes_every_service(stack: Stack) -> None:
    described = json.loads((stack.run_dir / "stack.json").read_text())
    assert set(described["hosts"]) == set(SERVICES)
    assert described["api_base_url"] == stack.api_base_url
    assert described["env"]["FIRESTORE_EMULATOR_HOST"] == stack.host("firestore")


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_listens_on_loopback_only(stack: Stack, service: str) -> None:
    addresses = listening(stack.ports[service])
    assert addresses, f"{service} is not listening"
    assert set(addresses) <= LOOPBACK, f"{service} listens on {addresses}"


def test_a_start_that_fails_half_way_stops_what_it_started(tmp_path: Path) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    ports = {name: free_port() for name in ("firestore", "pubsub", "tasks", "stripe", "auth")}
    stack = Stack(tmp_path, ports={**ports, "storage": taken}, with_api=False)
    try:
        with pytest.raises(StackError, match="storage"):
            stack.start(timeout_s=60)
    finally:
        blocker.close()
    leftovers = {name: listening(port) for name, port in ports.items()}
    assert not any(leftovers.values()), f"still listening after failed start: {leftovers}"
    marks = (
        [str(tmp_path)]
        + [f"--port={p}" for p in ports.values()]
        + [f"127.0.0.1:{p}" for p in ports.values()]
    )
    assert not processes_mentioning(marks)


def processes_mentioning(marks: list[str]) -> list[str]:
    """Command lines of live processes that mention any of `marks` (zombies have none)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(mark in text for mark in marks) and "pytest" not in text:
            found.append(text)
    return found


def test_stopping_ends_every_process_group(tmp_path: Path) -> None:
    stack = Stack(tmp_path, with_api=False).start()
    marks = [str(tmp_path)] + [f"127.0.0.1:{p}" for p in stack.ports.values()]
    assert processes_mentioning(marks), "the stack's processes should be visible while it runs"
    stack.stop()
    assert not processes_mentioning(marks)
    assert not (tmp_path / "stack.json").exists()


def test_a_stack_refuses_to_start_beside_an_earlier_stacks_trainer(tmp_path: Path) -> None:
    """A trainer left by an earlier stack of this checkout would write into the new stack's
    emulators on the same ports: the new stack names it and starts nothing."""
    import os
    import signal
    import subprocess
    import sys

    from devstack.stack import ROOT, LeftoverTrainers
    from shared.batch import TRAINER_MARK, local_trainers

    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"],
        env={**os.environ, TRAINER_MARK: str(ROOT)},
        start_new_session=True,
    )
    try:
        # Popen returns once exec has begun, which is before the kernel has set up the new
        # environment that /proc shows (a loaded machine widens that window): wait until the
        # orphan is what it plays, a process carrying the mark.
        deadline = time.monotonic() + 30
        while orphan.pid not in local_trainers(ROOT) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert orphan.pid in local_trainers(ROOT)
        running = tmp_path / "stack.json"  # the running stack's description, same folder
        running.write_text('{"api": "the running stack"}')
        stack = Stack(tmp_path)
        try:
            with pytest.raises(LeftoverTrainers, match=f"kill -9 .*{orphan.pid}"):
                stack.start(timeout_s=60)
        finally:
            stack.stop()  # a stack that wrongly started must not outlive the test
        assert not processes_mentioning([str(tmp_path)])
        assert running.read_text() == '{"api": "the running stack"}'  # a refusal touches nothing
    finally:
        os.killpg(orphan.pid, signal.SIGKILL)
        orphan.wait()


def test_a_second_stack_from_the_same_folder_is_refused_and_touches_nothing(
    tmp_path: Path,
) -> None:
    """`make dev` beside a running one (even on other ports) must not start, and must leave the
    running stack's stack.json as it is; one whose processes are gone is no longer running."""
    import json
    import os

    from devstack.stack import running_stack

    described = {"api_base_url": "http://127.0.0.1:8700", "pids": {"api": os.getpid()}}
    (tmp_path / "stack.json").write_text(json.dumps(described))
    assert running_stack(tmp_path) == described
    (tmp_path / "stack.json").write_text(json.dumps({"pids": {"api": 2**22 + 12345}}))
    assert running_stack(tmp_path) is None
    (tmp_path / "stack.json").write_text("not json")
    assert running_stack(tmp_path) is None


def test_make_dev_beside_a_running_stack_exits_2_and_keeps_its_stack_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import os

    from devstack import stack as devstack_stack

    monkeypatch.setattr(devstack_stack, "LOCAL", tmp_path)
    (tmp_path / "run").mkdir()
    described = json.dumps({"api_base_url": "http://127.0.0.1:8700", "pids": {"a": os.getpid()}})
    (tmp_path / "run" / "stack.json").write_text(described)
    assert devstack_stack.main(["dev"]) == 2
    assert "already runs" in capsys.readouterr().err
    assert (tmp_path / "run" / "stack.json").read_text() == described
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["stack.json"]
