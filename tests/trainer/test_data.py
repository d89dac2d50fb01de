import pytest
import torch

from shared.tokenization import EncodedExample
from yachay_trainer.data import IGNORE, StepPlan, make_pack, pack_step


def ex(ids: list[int], trained: list[bool]) -> EncodedExample:
    return EncodedExample(ids, trained)


def test_pack_targets_never_cross_example_boundaries() -> None:
    a = ex([1, 2, 3], [False, True, True])
    b = ex([4, 5, 6, 7], [False, False, True, True])
    p = make_pack([a, b])
    assert p.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7]]
    assert p.position_ids.tolist() == [[0, 1, 2, 0, 1, 2, 3]]
    assert p.cu_seq_lens.tolist() == [0, 3, 7]
    # position t predicts token t+1 of the same example, or nothing
    assert p.targets.tolist() == [2, 3, IGNORE, IGNORE, 6, 7, IGNORE]
    assert p.n_trained == 4 and p.n_tokens == 7


def test_pack_step_respects_the_row_budget_and_keeps_every_example() -> None:
    exs = [ex(list(range(n)), [False] + [True] * (n - 1)) for n in (90, 60, 50, 40, 30, 10)]
    packs = pack_step(exs, max_tokens=100)
    assert all(p.n_tokens <= 100 for p in packs)
    assert sum(p.n_tokens for p in packs) == 280
    assert len(packs) == 3  # 90+10, 60+40, 50+30


def test_step_plan_covers_each_example_once_per_epoch_and_is_deterministic() -> None:
    plan = StepPlan(n_examples=21, batch_size=4, epochs=3, seed=7)
    assert plan.steps_per_epoch == 6 and plan.total_steps == 18
    for epoch in range(3):
        seen = [i for s in range(6) for i in plan.indices(epoch * 6 + s)]
        assert sorted(seen) == list(range(21))
    again = StepPlan(n_examples=21, batch_size=4, epochs=3, seed=7)
    assert [plan.indices(s) for s in range(18)] == [again.indices(s) for s in range(18)]
    assert plan.indices(0) != plan.indices(6)  # a new shuffle each epoch


def test_varlen_attention_matches_separate_forward_passes(tiny_model) -> None:
    from transformers import AutoModelForCausalLM

    from yachay_trainer import attention

    model = AutoModelForCausalLM.from_pretrained(
        tiny_model, attn_implementation=attention.register()
    )
    model.eval()
    torch.manual_seed(0)
    seqs = [torch.randint(0, 500, (n,)) for n in (7, 3, 12)]
    p = make_pack([ex(s.tolist(), [True] * len(s)) for s in seqs])
    with torch.no_grad():
        packed = model(
            input_ids=p.input_ids,
            position_ids=p.position_ids,
            use_cache=False,
            cu_seq_lens_q=p.cu_seq_lens,
            cu_seq_lens_k=p.cu_seq_lens,
        ).logits[0]
        model.config._attn_implementation = "sdpa"
        alone = torch.cat([model(input_ids=s[None], use_cache=False).logits[0] for s in seqs])
    assert torch.allclose(packed, alone, atol=1e-5)


def test_shared_dropout_masks_siblings_alike_and_keeps_rate_and_scale() -> None:
    from yachay_trainer.dropout import SharedMaskDropout, _Cache, clear

    cache = _Cache()
    q, k = SharedMaskDropout(0.25, cache), SharedMaskDropout(0.25, cache)
    x, y = torch.ones(200, 300), torch.ones(200, 300)
    a, b, c = q(x), k(x), q(y)
    assert torch.equal(a, b)  # same input: one mask
    assert not torch.equal(a, c)  # another input: a fresh mask
    dropped = (a == 0).float().mean().item()
    assert 0.22 < dropped < 0.28
    assert torch.allclose(a[a != 0], torch.tensor(1 / 0.75))
    clear(cache)
    assert cache.x is None
    q.eval()
    assert q(x) is x


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_the_dropout_mask_drops_at_the_rate_and_keeps_the_mean(p) -> None:
    from yachay_trainer.dropout import keep_mask

    x = torch.ones(1000, 1001)  # an odd size: the 16-bit draws are cut from 64-bit ones
    keep, scale = keep_mask(x, p)
    assert keep.shape == x.shape
    rate = 1 - keep.float().mean().item()
    sigma = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(rate - p) < 5 * sigma + 1 / 65536
    assert abs((x * keep * scale).mean().item() - 1.0) < 5 * sigma / (1 - p) + 1e-4
    assert scale == pytest.approx(1 / (1 - p), abs=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_the_fused_lora_forward_matches_peft_in_output_and_gradients(tiny_model, p, dtype) -> None:
    """In fp32 exactly; over a bf16 base (peft's LoRA weights stay fp32 and it computes the
    branch in fp32, ours casts them to bf16 as autocast would) within bf16 rounding. Not bf16
    with dropout: peft casts each branch's input to fp32 first, a new tensor per branch, so its
    siblings draw separate masks and the two sides cannot see the same masks."""
    if dtype == torch.bfloat16 and p > 0:
        pytest.skip("peft's bf16 path draws one mask per branch: nothing to compare against")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from yachay_trainer.dropout import share_lora_dropout
    from yachay_trainer.lora_add import fuse_lora

    def model():
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=dtype)
        cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=p, target_modules="all-linear")
        m = get_peft_model(base, cfg)
        for n, w in m.named_parameters():  # lora_B starts at zero: give it something to add
            if "lora_B" in n:
                torch.nn.init.normal_(w, std=0.02)
        share_lora_dropout(m)  # as the trainer does (with p > 0, the same masks both ways)
        return m

    ids = torch.tensor([[5, 60, 700, 31, 9, 1200, 44]])
    results = []
    for fused in (False, True):
        m = model()
        if fused:
            assert len(fuse_lora(m)) == 4 * 2  # q/k/v and gate/up of each of the 4 layers
            alone = [mod for n, mod in m.named_modules() if n.endswith(("o_proj", "down_proj"))]
            assert alone and all(mod._lora_group is None for mod in alone)
        torch.manual_seed(1)
        loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = {n: w.grad for n, w in m.named_parameters() if w.requires_grad}
        results.append((loss.detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert grads_a.keys() == grads_b.keys()
    if dtype == torch.float32:
        torch.testing.assert_close(loss_a, loss_b)
        for name in grads_a:
            torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-5)
        return
    assert all(g.dtype == torch.float32 for g in grads_b.values())  # the fp32 master weights
    assert float(loss_b) == pytest.approx(float(loss_a), rel=2e-3)
    for name in grads_a:  # the relative error of each gradient, against its own size
        err = (grads_b[name] - grads_a[name]).norm() / grads_a[name].norm().clamp_min(1e-12)
        assert err < 0.05, (name, float(err))
