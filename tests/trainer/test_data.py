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
