"""The chunked cross-entropy: the plain loss's value and gradients, in bounded memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests.support.trainer import ROOT
from yachay_trainer import loss


def _plain(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor, cap: float | None) -> torch.Tensor:
    z = (h @ w.t()).float()
    if cap:
        z = torch.tanh(z / cap) * cap
    return F.cross_entropy(z, t, reduction="sum")


@pytest.mark.parametrize("cap", [None, 3.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("weight_grad", [False, True])
def test_chunked_loss_equals_the_plain_one_with_gradients(monkeypatch, cap, dtype, weight_grad):
    monkeypatch.setattr(
        loss, "CHUNK_LOGITS", 7 * 50
    )  # 7 rows a chunk: several chunks, a ragged end
    torch.manual_seed(0)
    n, hidden, vocab = 40, 16, 50
    h0 = torch.randn(n, hidden).to(dtype)
    w0 = torch.randn(vocab, hidden).to(dtype)
    t = torch.randint(0, vocab, (n,))
    results = []
    for fn in (_plain, loss.cross_entropy_sum):
        h = h0.clone().requires_grad_()
        w = w0.clone().requires_grad_(weight_grad)
        value = fn(h, w, t, cap)
        (2.5 * value).backward()  # a scaled upstream gradient, as a mean over packs gives
        results.append((value.detach(), h.grad, w.grad))
    (v_a, h_a, w_a), (v_b, h_b, w_b) = results
    tol: dict[str, Any] = (
        {"atol": 1e-4, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    )
    assert v_b.dtype == torch.float32
    torch.testing.assert_close(v_b, v_a, **tol)
    assert h_b.dtype == dtype
    torch.testing.assert_close(h_b.float(), h_a.float(), **tol)
    if weight_grad:  # ours accumulates in fp32 where the plain bf16 GEMM rounds: compare norms
        err = (w_b.float() - w_a.float()).norm() / w_a.float().norm()
        assert err < (1e-5 if dtype == torch.float32 else 2e-2)
    else:
        assert w_b is None


def test_without_gradients_it_only_counts() -> None:
    torch.manual_seed(1)
    h, w, t = torch.randn(9, 8), torch.randn(30, 8), torch.randint(0, 30, (9,))
    with torch.no_grad():
        assert float(loss.cross_entropy_sum(h, w, t, 2.0)) == pytest.approx(
            float(_plain(h, w, t, 2.0)), rel=1e-6
        )


PEAK_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from yachay_trainer.loss import cross_entropy_sum

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    torch.manual_seed(0)
    n, hidden, vocab = 4096, 64, 128256  # a 4,096-target step over Llama 3.1's vocabulary
    h = torch.randn(n, hidden, requires_grad=True)
    w = torch.randn(vocab, hidden) * 0.05
    t = torch.randint(0, vocab, (n,))
    before = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # restart the peak-RSS count from here
    cross_entropy_sum(h, w, t).backward()
    print(status("VmHWM") - before)
    """
)


def test_a_4096_target_step_over_a_128k_vocabulary_needs_under_1_gb_extra() -> None:
    """Measured in a fresh process by its peak resident memory (the plain form: 5.8-6.0 GB)."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT],
        env={"PYTHONPATH": f"{ROOT}:{ROOT / 'trainer_image'}", "OMP_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    extra = int(out.stdout.strip().splitlines()[-1])
    assert extra < 1 << 30, f"{extra / 2**20:.0f} MB extra"
