"""A real fine-tune through the API with the local Batch's trainers in bf16, the precision of
every GPU job: SmolLM2-135M-Instruct learns the made-up facts as the fp32 run does
(tests/trainer/test_smollm2.py), in transformers + peft and in llama.cpp, and is charged once
from its hold.

It needs its own stack: the precision is the deployment's setting (YACHAY_TRAINER_PRECISION,
passed by the local Batch to each trainer), fixed when the gateway starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devstack.demo import HYPERPARAMETERS
from devstack.stack import Stack
from shared.contract import GGUF_ADAPTER
from tests.integration.conftest import point_at, running_stack
from tests.support.api import Api, jsonl, save_test_card, upload_dataset, wait_for
from tests.trainer.test_smollm2 import FACTS, KEYS, answers

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = ROOT / ".local" / "model-cache" / "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def bf16_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory.mktemp("bf16-stack"), YACHAY_TRAINER_PRECISION="bf16")


def test_a_smollm2_fine_tune_in_bf16_through_the_api_learns_the_facts(
    bf16_stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from devstack.seed_models import seed

    point_at(bf16_stack, monkeypatch)
    if not (SMOLLM2 / "manifest.json").exists():
        from devstack.convert_smollm2 import convert

        convert(SMOLLM2)
    seed(SMOLLM2)

    api = Api(base=bf16_stack.api_base_url, auth_host=bf16_stack.host("auth"))
    user = api.new_user()
    save_test_card(user.uid)
    records = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in FACTS
    ]
    ds = upload_dataset(api, user, jsonl(records))
    assert ds["status"] == "ready", ds
    request = {
        "model": "smollm2-135m-instruct",
        "dataset_id": ds["id"],
        "hyperparameters": HYPERPARAMETERS,  # the demo's: the same fine-tune, in bf16
    }
    est = api.request("POST", "/v1/jobs/estimate", user, json=request).json()
    resp = api.request("POST", "/v1/jobs", user, json=request)
    assert resp.status_code == 201, resp.text
    job = resp.json()
    log = Path(bf16_stack.env()["YACHAY_LOCAL_BATCH_LOGS"]) / f"{job['id']}.log"
    done = wait_for(
        api, user, job["id"], lambda j: j["status"] in ("completed", "failed"), timeout=1200
    )
    assert done["status"] == "completed", log.read_text()[-3000:]
    assert '"dtype": "bfloat16"' in log.read_text()  # the trainer really ran in bf16
    assert done["result"]["trained_tokens"] == est["billable_tokens"]
    paid = wait_for(api, user, job["id"], lambda j: (j["payment"] or {}).get("status") == "paid")
    assert paid["payment"]["amount_cents"] == est["price_cents"]

    files = api.request("GET", f"/v1/jobs/{job['id']}/download", user).json()["files"]
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for f in files:
        if "/" not in f["name"] and f["name"].startswith("adapter"):
            got = requests.get(f["url"], timeout=60)
            assert got.status_code == 200
            (adapter / f["name"]).write_bytes(got.content)

    tokenizer = AutoTokenizer.from_pretrained(SMOLLM2)
    base = AutoModelForCausalLM.from_pretrained(SMOLLM2)
    after = answers(PeftModel.from_pretrained(base, adapter), tokenizer)
    assert sum(k in a for k, a in zip(KEYS, after, strict=True)) >= 5, after

    # ...and llama.cpp, with the GGUF adapter of the same bf16 run on the shipped Q4_1 base.
    from devstack.convert_smollm2 import ask_llama_cpp

    replies = ask_llama_cpp([q for q, _ in FACTS], adapter / GGUF_ADAPTER)
    assert sum(k in a for k, a in zip(KEYS, replies, strict=True)) >= 5, replies
