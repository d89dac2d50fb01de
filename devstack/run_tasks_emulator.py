"""Runs gcloud-tasks-emulator bound to 127.0.0.1 (the package itself binds every interface).

Runs in its own virtualenv (the emulator needs protobuf<5), so it imports nothing of ours.
"""

import argparse
import logging
import time
from concurrent import futures

import grpc
from gcloud_tasks_emulator import server as tasks_server


class LoopbackAPIThread(tasks_server.APIThread):
    def run(self) -> None:
        self._httpd = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        tasks_server.add_CloudTasksServicer_to_server(
            tasks_server.Greeter(self._state), self._httpd
        )
        self._httpd.add_insecure_port(f"127.0.0.1:{self._port}")
        self._httpd.start()
        while self._is_running.is_set():
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-retries", type=int, default=-1)
    parser.add_argument("--queue", action="append", default=[], help="queue to create at start")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    tasks_server.APIThread = LoopbackAPIThread
    server = tasks_server.create_server(
        "127.0.0.1", args.port, "127.0.0.1", 0, args.queue, args.max_retries
    )
    server.run()


if __name__ == "__main__":
    main()
