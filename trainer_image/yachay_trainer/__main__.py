"""`python -m yachay_trainer`: one job, configured by the environment; the exit code tells Batch
whether to retry (see shared.contract)."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from shared.contract import (
    EXIT_OK,
    EXIT_PLATFORM_FAILURE,
    EXIT_RETRYABLE,
    EXIT_USER_ERROR,
    MANIFEST,
    ArtifactFile,
    FailureKind,
    TrainerConfig,
)
from yachay_trainer import storage
from yachay_trainer.data import DataError
from yachay_trainer.progress import Reporter, ReportRefused


def _transient(exc: BaseException) -> bool:
    from google.api_core import exceptions as gexc

    return isinstance(
        exc,
        ConnectionError
        | TimeoutError
        | gexc.ServiceUnavailable
        | gexc.TooManyRequests
        | gexc.InternalServerError
        | gexc.DeadlineExceeded,
    )


STOP_GRACE_S = float(os.environ.get("YACHAY_TRAINER_STOP_GRACE_S", "30"))


def _stop_within_grace(stop: threading.Event) -> None:
    """Asks for a clean stop, and gives up if it has not come within STOP_GRACE_S (a checkpoint
    upload to a Storage that is gone would otherwise retry for minutes): exits retryable, so the
    run resumes from the last checkpoint that did land."""
    if stop.is_set():
        return
    stop.set()

    def give_up() -> None:
        Reporter.log("stop_grace_exceeded", grace_s=STOP_GRACE_S)
        os._exit(EXIT_RETRYABLE)

    timer = threading.Timer(STOP_GRACE_S, give_up)
    timer.daemon = True
    timer.start()


def main() -> int:
    # SIGTERM (Spot preemption notice, a Batch delete) asks for a clean stop at the next step
    # boundary: checkpoint, then exit as retryable. Installed first, so it holds at every stage.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: _stop_within_grace(stop))
    cfg = TrainerConfig.from_env(os.environ)
    reporter = Reporter(cfg)
    import torch

    from yachay_trainer.outputs import write_outputs
    from yachay_trainer.train import Preempted, Run

    with tempfile.TemporaryDirectory(prefix="yachay-trainer-") as tmp:
        workdir = Path(tmp)
        try:
            if cfg.storage_token_url:  # production: this job's objects only, no bucket role
                storage.use_job_tokens(reporter.storage_token, cfg.project_id)
            precision = os.environ.get("YACHAY_TRAINER_PRECISION", "auto")
            run = Run(cfg, workdir, reporter, stop, precision).setup()
            result = run.train()
            out = workdir / "output"
            manifest = write_outputs(out, run.model, run.model_dir, cfg, run.metrics, result)
            storage.upload_folder(out, cfg.output_uri, last=MANIFEST, custom_time=cfg.kept_until)
            files = tuple(ArtifactFile.from_doc(f) for f in manifest["files"])
            reporter.result(result._replace(artifacts=files))
            return EXIT_OK
        except ReportRefused as exc:  # the API refuses this job's token: it has ended
            Reporter.log("refused_by_api", error=str(exc))
            return EXIT_USER_ERROR
        except DataError as exc:
            reporter.failure(FailureKind.USER_ERROR, str(exc))
            return EXIT_USER_ERROR
        except Preempted as exc:
            Reporter.log("preempted", message=str(exc))
            return EXIT_RETRYABLE
        except torch.OutOfMemoryError:
            reporter.failure(
                FailureKind.OUT_OF_MEMORY,
                "The job ran out of GPU memory; lower "
                "max_seq_length or batch_size and submit again.",
            )
            return EXIT_PLATFORM_FAILURE
        except Exception as exc:
            if _transient(exc):
                Reporter.log("transient_failure", error=repr(exc))
                return EXIT_RETRYABLE
            reporter.failure(FailureKind.PLATFORM, f"{type(exc).__name__}: {exc}")
            raise


if __name__ == "__main__":
    sys.exit(main())
