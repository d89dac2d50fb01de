"""make bench-gpu: refuses cleanly without CUDA, and its code runs (tiny configs on the CPU), so
the one prepared command a GPU session gets does not fail on a typo."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.tiny import FAMILIES
from tests.support.trainer import ROOT

ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'trainer_image'}"}


def test_without_cuda_it_refuses_with_a_clear_message() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu"], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stderr and "--cpu-smoke" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_cpu_smoke_run_trains_every_family_through_the_trainers_code(tmp_path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--cpu-smoke", "--json", str(out)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    assert [r["model"] for r in rows] == [f"tiny-{f}" for f in FAMILIES]
    for r in rows:
        for label in ("default", "largest"):
            assert r[label]["tokens_per_s"] > 0
            assert r[label]["flops_per_token"] > 4 * r["parameters"]
            assert r[label]["estimated_peak_bytes"] > 0
