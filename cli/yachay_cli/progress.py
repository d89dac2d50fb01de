"""A one-line progress bar on stderr, redrawn in place ("\\r") on a terminal; elsewhere (a log,
a pipe) one plain line per change; silent with --json, so scripts read clean output."""

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
        + ("" if p.get("eval_loss") is None else f"eval {p['eval_loss']:.3f}  ")
        + f"eta {int(p['eta_s'])} s"
    )


class Bar:
    def __init__(self, label: str, enabled: bool = True) -> None:
        self.label = label
        self.enabled = enabled
        self.drawn = False
        self.terminal = sys.stderr.isatty()
        self.last = ""

    def show(self, text: str, fraction: float, change: str | None = None) -> None:
        """Draws the bar; off a terminal, writes a line only when `change` (default: the text)
        differs from the last one written."""
        if not self.enabled:
            return
        if not self.terminal:
            change = text if change is None else change
            if change != self.last:
                sys.stderr.write(f"{self.label} {fraction:4.0%} {text}\n")
                sys.stderr.flush()
                self.last = change
            return
        filled = round(max(0.0, min(1.0, fraction)) * WIDTH)
        bar = "#" * filled + "-" * (WIDTH - filled)
        sys.stderr.write(f"\r{self.label} [{bar}] {fraction:4.0%} {text}\x1b[K")
        sys.stderr.flush()
        self.drawn = True

    def update(self, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        self.show(f"{human(done)}B/{human(total)}B", fraction, change=str(int(fraction * 4)))

    def done(self) -> None:
        if self.enabled and self.terminal and self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.drawn = False
