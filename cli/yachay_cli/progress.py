"""A one-line progress bar on stderr, redrawn in place ("\\r"); silent with --json or when the
bar is off, so scripts read clean output."""

from __future__ import annotations

import sys
from typing import Any

WIDTH = 24


def human(n: float) -> str:
    for unit in ("", "k", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}T"


def job_line(job: dict[str, Any]) -> str:
    p = job.get("progress") or {}
    if not p:
        return str(job["status"])
    return (
        f"{job['status']} step {p['step']}/{p['total_steps']}  tokens "
        f"{human(p['trained_tokens'])}/{human(p['total_tokens'])}  loss {p['loss']:.3f}  "
        f"eta {int(p['eta_s'])} s"
    )


class Bar:
    def __init__(self, label: str, enabled: bool = True) -> None:
        self.label = label
        self.enabled = enabled
        self.drawn = False

    def show(self, text: str, fraction: float) -> None:
        if not self.enabled:
            return
        filled = round(max(0.0, min(1.0, fraction)) * WIDTH)
        bar = "#" * filled + "-" * (WIDTH - filled)
        sys.stderr.write(f"\r{self.label} [{bar}] {fraction:4.0%} {text}\x1b[K")
        sys.stderr.flush()
        self.drawn = True

    def update(self, done: int, total: int) -> None:
        self.show(f"{human(done)}B/{human(total)}B", done / total if total else 1.0)

    def done(self) -> None:
        if self.enabled and self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.drawn = False
