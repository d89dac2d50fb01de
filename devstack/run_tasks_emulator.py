"""Runs gcloud-tasks-emulator bound to 127.0.0.1 (the package itself binds every interface).

Runs in its own virtualenv (the emulator needs protobuf<5), so it imports nothing of ours. Its
log goes to a rotating file of at most LOG_MAX_BYTES (plus one rotated copy): the emulator logs
every dispatch and every retry, and a receiver that keeps failing once grew it to 67 MB in 78
minutes.
"""

import argparse
import logging
import logging.handlers
import time
from concurrent import futures

LOG_MAX_BYTES = 5 << 20


def setup_logging(path: str | None, max_bytes: int = LOG_MAX_BYTES) -> logging.Handler:
    """The emulator's logs into `path`, rotated at `max_bytes` with one old copy kept (or to
    stderr when no path is given)."""
    handler: logging.Handler
    if path:
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=1)
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return handler


def main() -> None:
    import grpc
    from gcloud_tasks_emulator import server as tasks_server

    class LoopbackAPIThread(tasks_server.APIThread):  # type: ignore[misc]  # an untyped base
        def run(self) -> None:
            self._httpd = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
            tasks_server.add_CloudTasksServicer_to_server(
                tasks_server.Greeter(self._state), self._httpd
            )
            self._httpd.add_insecure_port(f"127.0.0.1:{self._port}")
            self._httpd.start()
            while self._is_running.is_set():
                time.sleep(0.1)

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-retries", type=int, default=-1)
    parser.add_argument("--queue", action="append", default=[], help="queue to create at start")
    parser.add_argument("--log", help="the rotating log file (default: stderr)")
    args = parser.parse_args()
    setup_logging(args.log)
    tasks_server.APIThread = LoopbackAPIThread
    server = tasks_server.create_server(
        "127.0.0.1", args.port, "127.0.0.1", 0, args.queue, args.max_retries
    )
    server.run()


if __name__ == "__main__":
    main()
