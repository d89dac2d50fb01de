"""Webhook deliveries ride a queue of their own: a receiver that hangs for each attempt's whole
timeout holds up no launch (on one shared queue the emulator, like a busy production queue,
dispatched them in turn behind every slow delivery)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from shared import tasks
from shared.config import settings
from tests.integration.test_webhooks import add_endpoint


@contextmanager
def hanging_receiver() -> Iterator[str]:
    """An HTTP address that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def _queued(queue: str) -> list[str]:
    return [t.name for t in tasks.client(settings()).list_tasks(parent=queue)]


def test_a_hanging_webhook_receiver_does_not_delay_a_launch(api, stack_env) -> None:
    cfg = settings()
    user = api.new_user()
    with hanging_receiver() as url:
        endpoint = add_endpoint(api, user, url, ["job.completed"])
        for _ in range(3):  # three pings: 30 s of attempts that each wait out their timeout
            ping = api.request("POST", f"/v1/webhook-endpoints/{endpoint['id']}/test", user)
            assert ping.status_code == 202, ping.text
        time.sleep(1.0)  # the first attempt is under way
        started = time.monotonic()
        tasks.enqueue_launch("ft-nosuchjob", cfg)  # answered at once: "no such job"
        while any(n.endswith("/launch-ft-nosuchjob") for n in _queued(cfg.tasks_queue)):
            assert time.monotonic() - started < 8, "the launch waited behind the deliveries"
            time.sleep(0.1)
        assert _queued(cfg.webhooks_queue)  # the deliveries are still waiting on the receiver
