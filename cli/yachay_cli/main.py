"""`yachay`: the public API from a terminal or a script.

Configuration: YACHAY_API_KEY and YACHAY_BASE_URL, else what `yachay login` saved in
$XDG_CONFIG_HOME/yachay/config.json (mode 0600). Exit codes: 0 ok; 1 the request or the job
failed; 2 usage; 130 interrupted (Ctrl-C stops following a job, never the job itself).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yachay_cli import jsonl_rules
from yachay_cli.api import ApiError, Client, download, upload
from yachay_cli.progress import Bar, job_line

OK, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130
ENDED = ("completed", "failed", "cancelled")
DEFAULT_BASE_URL = "https://api.yachay.dev"


class Usage(Exception):
    """A mistake in how the command was called (exit 2)."""


# --- configuration ---------------------------------------------------------------------------


def config_path() -> Path:
    root = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(root) / "yachay" / "config.json"


def checked_base_url(url: str) -> str:
    """The API's URL, refused when the key would travel in clear: http:// only to this machine
    (the local stack), https:// everywhere else."""
    import ipaddress
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        raise Usage(f"{url!r} is not a URL") from None
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and host:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return url
        raise Usage(
            f"{url} is plain http to another machine: your API key would travel in clear. "
            "Use https:// (http:// is for the local stack on this machine only)."
        )
    raise Usage(f"{url!r} is not an http(s) URL with a host")


def client() -> Client:
    saved: dict[str, str] = {}
    if config_path().exists():
        saved = json.loads(config_path().read_text())
    key = os.environ.get("YACHAY_API_KEY") or saved.get("api_key")
    base = os.environ.get("YACHAY_BASE_URL") or saved.get("base_url") or DEFAULT_BASE_URL
    if not key:
        raise Usage("no API key: set YACHAY_API_KEY or run `yachay login`")
    return Client(checked_base_url(base), key, waiting=_say_once())


def _say_once() -> Any:
    """Prints the server's first 'still counting' message to stderr, then stays quiet."""
    said: list[bool] = []

    def waiting(answer: dict[str, Any]) -> None:
        if not said:
            said.append(True)
            print(
                f"waiting: {answer.get('message', 'the server is still working')}", file=sys.stderr
            )

    return waiting


def save_config(base_url: str, api_key: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)  # also a folder that was there before with wider rights
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"base_url": base_url, "api_key": api_key}, f)
    os.chmod(path, 0o600)  # also when the file was there before with wider rights
    return path


# --- output ----------------------------------------------------------------------------------


def emit(args: argparse.Namespace, value: Any, text: str) -> None:
    """The API's answer as JSON with --json, else a line for people."""
    print(json.dumps(value, indent=2) if args.json else text)


def money(cents: int, currency: str) -> str:
    return f"{cents / 100:.2f} {currency.upper()}"


# --- commands --------------------------------------------------------------------------------


def cmd_login(args: argparse.Namespace) -> int:
    if args.api_key:  # argv shows in `ps` to every user of the machine, and in shell history
        raise Usage(
            "do not pass the key as an argument (other users see it in `ps`, and it stays in "
            "your shell history): run `yachay login` and paste it at the prompt, or set "
            "YACHAY_API_KEY"
        )
    base_url = checked_base_url(args.base_url)
    key = os.environ.get("YACHAY_API_KEY") or getpass.getpass("API key (yk_...): ").strip()
    if not key:
        raise Usage("no API key given")
    api = Client(base_url, key)
    api.call("models")  # proves the key and the URL before saving them
    path = save_config(base_url, key)
    emit(args, {"saved": str(path)}, f"Saved to {path} (readable by you only).")
    return OK


def cmd_models(args: argparse.Namespace) -> int:
    models = client().call("models")
    lines = [
        f"{m['id']:28s} {money(m['pricing']['price_cents'], m['pricing']['currency']):>10s}"
        f" / 1M tokens  {'available' if m['available'] else 'unavailable'}"
        for m in models["data"]
    ]
    emit(args, models, "\n".join(lines))
    return OK


def check_file(path: Path) -> list[str]:
    """The file checked before uploading by the rules the server applies (jsonl_rules is a copy
    of the server's own module): each problem with its line."""
    found = jsonl_rules.check_file(path.read_bytes(), max_bytes=1 << 40)
    more = found.error_count - len(found.errors)
    problems = [message for _, message in found.errors]
    return problems + ([f"... and {more} more"] if more > 0 else [])


def upload_dataset(api: Client, path: Path, quiet: bool) -> dict[str, Any]:
    if not path.is_file():
        raise Usage(f"{path}: no such file")
    problems = check_file(path)
    if problems:
        raise ApiError(0, "invalid_dataset", "\n".join(problems))
    ds = api.call("create_dataset", body={"filename": path.name, "size_bytes": path.stat().st_size})
    bar = Bar(f"upload {path.name}", enabled=not quiet)
    upload(ds["upload"]["url"], path, ds["upload"]["headers"], bar.update)
    bar.done()
    return api.call("validate_dataset", path={"dataset_id": ds["id"]})  # type: ignore[no-any-return]


def report(ds: dict[str, Any]) -> str:
    if ds["status"] == "ready":
        return f"{ds['id']}: ready, {ds['rows']} rows ({ds['format']})"
    errors = "\n".join(f"  line {e['line'] or '-'}: {e['message']}" for e in ds["errors"])
    return f"{ds['id']}: {ds['status']}, {ds['error_count']} errors\n{errors}"


def cmd_datasets(args: argparse.Namespace) -> int:
    api = client()
    if args.action == "list":
        page = api.call("list_datasets", query={"limit": 100})
        emit(
            args,
            page,
            "\n".join(f"{d['id']}  {d['status']:14s} {d['filename']}" for d in page["data"]),
        )
        return OK
    ds = upload_dataset(api, Path(args.file), args.json)
    emit(args, ds, report(ds))
    return OK if ds["status"] == "ready" else FAILED


# The server's hyperparameters (name, kind, help), written from their one declaration by
# `make openapi` (a test fails when this copy is stale): each is an option of estimate and submit.
HYPERPARAMETERS: list[dict[str, str]] = json.loads(
    (Path(__file__).parent / "hyperparameters.json").read_text()
)


def _modules(text: str) -> str | list[str]:
    """--lora-target-modules: "all-linear" or a comma-separated list."""
    return text if text == "all-linear" else [m.strip() for m in text.split(",") if m.strip()]


def hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for hp in HYPERPARAMETERS:
        value = getattr(args, hp["name"], None)
        if value is not None:
            out[hp["name"]] = value
    for item in args.hp or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise Usage(f"--hp takes name=value, not {item!r}")
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value
    return out


def job_body(args: argparse.Namespace, dataset_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": args.model, "dataset_id": dataset_id}
    hp = hyperparameters(args)
    if hp:
        body["hyperparameters"] = hp
    for option, field in (
        ("validation_split", "validation_split"),
        ("validation_dataset", "validation_dataset_id"),
        ("eval_every", "eval_every_steps"),
        ("from_job", "from_job"),
    ):
        if getattr(args, option) is not None:
            body[field] = getattr(args, option)
    if args.merged:
        body["outputs"] = ["merged"]
    return body


def price_line(est: dict[str, Any]) -> str:
    line = (
        f"{est['billable_tokens']:,} billable tokens ({est['tokens_per_epoch']:,} x "
        f"{est['epochs']} epochs) on {est['model']}: {money(est['price_cents'], est['currency'])}"
        f", about {est['estimated_seconds'] // 60 + 1} min"
    )
    if est.get("validation_examples"):
        line += (
            f"\nvalidation: {est['validation_examples']} examples, "
            f"{est['validation_tokens']:,} tokens (not billed)"
        )
    return line


def cmd_estimate(args: argparse.Namespace) -> int:
    est = client().call("estimate", body=job_body(args, args.dataset))
    reasons = "".join(f"\n  refused: {r['message']}" for r in est["reasons"])
    emit(args, est, price_line(est) + reasons)
    return OK


def confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise Usage("not a terminal: pass --yes to submit without asking")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def cmd_submit(args: argparse.Namespace) -> int:
    api = client()
    if bool(args.file) == bool(args.dataset):
        raise Usage("give a FILE to upload or --dataset ID, not both")
    dataset_id = args.dataset
    if args.file:
        ds = upload_dataset(api, Path(args.file), args.json)
        if ds["status"] != "ready":
            emit(args, ds, report(ds))
            return FAILED
        dataset_id = ds["id"]
    body = job_body(args, dataset_id)
    est = api.call("estimate", body=body)
    if not args.json:
        print(price_line(est))
    if not est["allowed_to_proceed"]:
        emit(args, est, "\n".join(f"refused: {r['message']}" for r in est["reasons"]))
        return FAILED
    if not args.yes and not confirm(f"Submit for {money(est['price_cents'], est['currency'])}?"):
        print("Not submitted.")
        return OK
    job = api.call("submit", body=body, headers={"Idempotency-Key": str(uuid.uuid4())})
    if not args.follow:
        emit(args, job, f"{job['id']}: {job['status']}")
        return OK
    if not args.json:
        print(f"{job['id']}: {job['status']} (Ctrl-C stops following, not the job)")
    return follow(api, args, job["id"])


def follow(api: Client, args: argparse.Namespace, job_id: str) -> int:
    bar = Bar(job_id, enabled=not args.json)
    try:
        while True:
            job = api.call("get_job", path={"job_id": job_id})
            bar.show(job_line(job), fraction(job))
            if (
                job["status"] in ENDED
                and job["status"] != "completed"
                or (job["status"] == "completed" and job.get("payment"))
            ):
                break
            time.sleep(args.poll)
    except KeyboardInterrupt:
        bar.done()
        print(
            f"\nStopped following; {job_id} keeps running (`yachay status {job_id} --follow`).",
            file=sys.stderr,
        )
        return INTERRUPTED
    bar.done()
    emit(args, job, summary(job))
    return OK if job["status"] == "completed" else FAILED


def fraction(job: dict[str, Any]) -> float:
    if job["status"] == "completed":
        return 1.0
    p = job.get("progress") or {}
    return p["step"] / p["total_steps"] if p.get("total_steps") else 0.0


def summary(job: dict[str, Any]) -> str:
    text = f"{job['id']}: {job['status']}"
    if job.get("failure"):
        text += f" ({job['failure']['code']}: {job['failure']['message']})"
    if job.get("result"):
        text += f", {job['result']['trained_tokens']:,} tokens"
    if job.get("payment"):
        pay = job["payment"]
        text += f", {pay['status']} {money(pay['amount_cents'], pay['currency'])}"
    return text


def cmd_status(args: argparse.Namespace) -> int:
    api = client()
    if args.follow:
        return follow(api, args, args.job)
    job = api.call("get_job", path={"job_id": args.job})
    emit(args, job, summary(job) + (f"\n  {job_line(job)}" if job.get("progress") else ""))
    return OK


def cmd_list(args: argparse.Namespace) -> int:
    page = client().call("list_jobs", query={"limit": args.limit, "status": args.status})
    emit(args, page, "\n".join(summary(j) for j in page["data"]))
    return OK


def cmd_cancel(args: argparse.Namespace) -> int:
    job = client().call("cancel_job", path={"job_id": args.job})
    emit(args, job, summary(job))
    return OK


def cmd_download(args: argparse.Namespace) -> int:
    query = {} if args.checkpoint is None else {"checkpoint": args.checkpoint}
    links = client().call("download", path={"job_id": args.job}, query=query)
    out = Path(args.out or args.job)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for f in links["files"]:
        parts = Path(f["name"]).parts
        if not parts or Path(f["name"]).is_absolute() or ".." in parts:
            raise ApiError(0, "bad_file_name", f"refusing to write {f['name']!r} outside {out}")
        (out / f["name"]).parent.mkdir(parents=True, exist_ok=True)
        bar = Bar(f["name"], enabled=not args.json)
        outcome = download(f["url"], out / f["name"], f["size"], f["sha256"], bar.update)
        bar.done()
        results.append({"name": f["name"], "outcome": outcome, "sha256": f["sha256"]})
        if not args.json:
            print(f"  {f['name']:28s} {outcome}{', sha256 ok' if f['sha256'] else ''}")
    emit(args, {"dir": str(out), "files": results}, f"Saved in {out}")
    return OK


def cmd_checkpoints(args: argparse.Namespace) -> int:
    page = client().call("list_checkpoints", path={"job_id": args.job})
    lines = [
        f"step {c['step']:5d}  epoch {c['epoch']:2d}  train loss {c['train_loss']:.4f}  "
        + ("" if c["eval_loss"] is None else f"eval loss {c['eval_loss']:.4f}  ")
        + f"--from-job {c['from_job']}"
        for c in page["data"]
    ]
    emit(args, page, "\n".join(lines) or "no checkpoints (the job has not completed)")
    return OK


def cmd_billing(args: argparse.Namespace) -> int:
    s = client().call("billing")
    emit(
        args,
        s,
        f"lifetime {money(s['lifetime_cents'], s['currency'])}, outstanding "
        f"{money(s['outstanding_cents'], s['currency'])}",
    )
    return OK


def cmd_keys(args: argparse.Namespace) -> int:
    page = client().call("list_keys")  # keys are managed by signed-in users: a key gets 403
    emit(args, page, "\n".join(f"{k['id']}  {k['prefix']}...  {k['name']}" for k in page["data"]))
    return OK


def cmd_webhooks(args: argparse.Namespace) -> int:
    api = client()
    if args.action == "list":
        page = api.call("list_webhooks")
        text = "\n".join(
            f"{e['id']}  {e['status']:9s} {e['url']}  {','.join(e['events'])}" for e in page["data"]
        )
        emit(args, page, text)
    elif args.action == "add":
        if not args.target or not args.events:
            raise Usage("webhooks add URL --events job.completed,job.failed")
        made = api.call("add_webhook", body={"url": args.target, "events": args.events.split(",")})
        emit(args, made, f"{made['id']}: signing secret {made['secret']} (shown once)")
    elif args.action == "remove":
        api.call("remove_webhook", path={"endpoint_id": args.target})
        emit(args, {"removed": args.target}, f"removed {args.target}")
    elif args.action == "test":
        sent = api.call("test_webhook", path={"endpoint_id": args.target})
        emit(args, sent, f"ping {sent['id']} queued")
    else:  # deliveries
        page = api.call("webhook_deliveries", path={"endpoint_id": args.target})
        emit(
            args,
            page,
            "\n".join(
                f"{d['event_type']:18s} {d['status']:9s} {len(d['attempts'])} attempt(s)"
                for d in page["data"]
            ),
        )
    return OK


# --- the parser ------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    p = argparse.ArgumentParser(
        prog="yachay", description=__doc__.split("\n\n")[0], parents=[common]
    )
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, fn: Any, help_text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text, parents=[common])
        c.set_defaults(run=fn)
        return c

    c = command("login", cmd_login, "save an API key and the API's URL")
    c.add_argument("--api-key", help=argparse.SUPPRESS)  # refused: see cmd_login
    c.add_argument("--base-url", default=os.environ.get("YACHAY_BASE_URL", DEFAULT_BASE_URL))
    command("models", cmd_models, "the model catalog with prices")
    c = command("datasets", cmd_datasets, "upload (and validate) or list datasets")
    c.add_argument("action", choices=["upload", "list"])
    c.add_argument("file", nargs="?")
    for name, fn, text in (
        ("estimate", cmd_estimate, "the exact price of a job"),
        ("submit", cmd_submit, "upload, price, confirm, submit and follow a job"),
    ):
        c = command(name, fn, text)
        c.add_argument("--model", required=True)
        kinds: dict[str, Callable[[str], Any]] = {
            "integer": int,
            "number": float,
            "modules": _modules,
        }
        for hp in HYPERPARAMETERS:
            c.add_argument(
                "--" + hp["name"].replace("_", "-"),
                dest=hp["name"],
                type=kinds[hp["kind"]],
                help=f"{hp['help']} (the model's default if left out)",
            )
        c.add_argument("--hp", action="append", help="a hyperparameter, name=value (repeat)")
        c.add_argument("--validation-split", type=float, help="hold out this share (0-0.2)")
        c.add_argument("--validation-dataset", help="a ready dataset id to evaluate on")
        c.add_argument("--eval-every", type=int, help="also evaluate every N steps")
        c.add_argument("--from-job", help="continue from JOB or JOB:STEP (a checkpoint)")
        c.add_argument("--merged", action="store_true", help="also output merged weights")
        if name == "estimate":
            c.add_argument("--dataset", required=True)
        else:
            c.add_argument("file", nargs="?")
            c.add_argument("--dataset")
            c.add_argument("--yes", action="store_true", help="submit without asking")
            c.add_argument("--follow", action=argparse.BooleanOptionalAction, default=True)
            c.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    c = command("status", cmd_status, "a job's status (--follow: until it ends)")
    c.add_argument("job")
    c.add_argument("--follow", action="store_true")
    c.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    c = command("list", cmd_list, "your jobs, newest first")
    c.add_argument("--status")
    c.add_argument("--limit", type=int, default=20)
    c = command("cancel", cmd_cancel, "cancel a queued or running job")
    c.add_argument("job")
    c = command("download", cmd_download, "download a job's files, sha256-checked, resumable")
    c.add_argument("job")
    c.add_argument("--out")
    c.add_argument("--checkpoint", type=int, help="a checkpoint's step: its adapter")
    c = command("checkpoints", cmd_checkpoints, "the adapters a job kept at each epoch end")
    c.add_argument("job")
    command("billing", cmd_billing, "what you spent")
    command("keys", cmd_keys, "your API keys (needs a signed-in session; see the dashboard)")
    c = command("webhooks", cmd_webhooks, "list, add, remove, test webhook endpoints")
    c.add_argument("action", choices=["list", "add", "remove", "test", "deliveries"])
    c.add_argument("target", nargs="?", help="a URL (add) or an endpoint id")
    c.add_argument("--events", help="comma-separated event types (add)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 2 on a usage error
    try:
        code: int = args.run(args)
        return code
    except Usage as exc:
        print(f"yachay: {exc}", file=sys.stderr)
        return USAGE
    except ApiError as exc:
        if args.json:
            print(json.dumps({"error": {"code": exc.code, "message": exc.message}}))
        print(f"yachay: {exc.message} ({exc.code})", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return INTERRUPTED
