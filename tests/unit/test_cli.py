"""The CLI without a server: it calls only what the published spec has, refuses bad usage with
exit code 2, and keeps its key readable by its owner only."""

from __future__ import annotations

import json
import stat
from typing import Any

import pytest

from shared.datasets import validate
from shared.openapi import PUBLIC_SPEC, ROOT
from yachay_cli import api, main


def test_every_call_the_cli_makes_is_in_the_published_spec() -> None:
    paths = json.loads(PUBLIC_SPEC.read_text())["paths"]
    for name, (method, template) in api.CALLS.items():
        assert template in paths, f"{name}: {template} is not in docs/openapi.json"
        assert method.lower() in paths[template], f"{name}: {method} {template} is not in the spec"


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "--model", "m"],  # neither a file nor a dataset
        ["submit", "a.jsonl", "--dataset", "d", "--model", "m"],  # both
        ["estimate", "--model", "m", "--dataset", "d", "--hp", "epochs"],  # --hp without =
    ],
)
def test_usage_mistakes_exit_2(argv: list[str], monkeypatch, capsys) -> None:
    monkeypatch.setenv("YACHAY_API_KEY", "yk_test_x")
    monkeypatch.setenv("YACHAY_BASE_URL", "http://127.0.0.1:9")
    assert main.main(argv) == main.USAGE
    assert "yachay:" in capsys.readouterr().err


def test_no_key_is_a_usage_error(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("YACHAY_API_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert main.main(["models"]) == main.USAGE


def test_argparse_mistakes_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main.main(["frobnicate"])
    assert exc.value.code == 2


def test_an_unreachable_api_is_a_failure_not_a_crash(monkeypatch, capsys) -> None:
    monkeypatch.setenv("YACHAY_API_KEY", "yk_test_x")
    monkeypatch.setenv("YACHAY_BASE_URL", "http://127.0.0.1:9")
    assert main.main(["models"]) == main.FAILED
    assert "does not answer" in capsys.readouterr().err


def test_the_saved_key_is_readable_by_its_owner_only(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    path = tmp_path / "yachay" / "config.json"
    path.parent.mkdir()
    path.write_text("{}")
    path.chmod(0o644)  # a file someone left readable is tightened
    assert main.save_config("http://x", "yk_test_secret") == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["api_key"] == "yk_test_secret"


def test_the_cli_checks_files_by_the_server_s_own_rules(tmp_path) -> None:
    assert (ROOT / "cli" / "yachay_cli" / "jsonl_rules.py").read_bytes() == (
        ROOT / "shared" / "jsonl_rules.py"
    ).read_bytes(), "the CLI's copy of shared/jsonl_rules.py is stale: run `make openapi`"
    f = tmp_path / "bad.jsonl"
    f.write_text('{"messages": []}\nnot json\n\n{"text": "x"}\n')
    problems = main.check_file(f)
    assert [p.split(":")[0] for p in problems] == ["line 1", "line 2", "line 4"]
    assert problems == [message for _, message in validate(f.read_bytes(), 1 << 30).errors]


def _estimate_body(*options: str) -> dict[str, Any]:
    """The request body `yachay estimate --model m --dataset ds-1 OPTIONS` sends, checked
    against the schema the server holds it to."""
    from shared import schemas

    args = main.parser().parse_args(["estimate", "--model", "m", "--dataset", "ds-1", *options])
    body = main.job_body(args, "ds-1")
    assert schemas.JobRequest.check(body) == body  # what the server accepts
    return body


def test_training_options_become_the_documented_request_fields() -> None:
    body = _estimate_body(
        "--validation-split", "0.1", "--eval-every", "5", "--from-job", "ft-a:4", "--merged"
    )
    assert body == {
        "model": "m",
        "dataset_id": "ds-1",
        "validation_split": 0.1,
        "eval_every_steps": 5,
        "from_job": "ft-a:4",
        "outputs": ["merged"],
    }


def test_each_declared_hyperparameter_is_an_option() -> None:
    from shared.contract import Hyperparameters

    body = _estimate_body(
        "--lora-rank", "8", "--learning-rate", "1e-4", "--lora-target-modules", "q_proj,v_proj"
    )
    assert body["hyperparameters"] == {
        "lora_rank": 8,
        "learning_rate": 1e-4,
        "lora_target_modules": ["q_proj", "v_proj"],
    }
    assert Hyperparameters.from_dict(body["hyperparameters"]).lora_target_modules == (
        "q_proj",
        "v_proj",
    )


def test_download_refuses_a_file_name_that_leaves_the_folder(monkeypatch, tmp_path) -> None:
    class Links:
        def call(self, *a, **kw):
            return {"files": [{"name": "../evil", "url": "http://x", "size": 1, "sha256": None}]}

    monkeypatch.setattr(main, "client", lambda: Links())
    code = main.main(["download", "ft-a", "--out", str(tmp_path / "out")])
    assert code == main.FAILED
    assert not (tmp_path / "evil").exists()


def test_a_202_is_asked_again_after_retry_after_until_the_answer(monkeypatch) -> None:
    """While a large file's tokens are counted the API answers 202 with Retry-After; the CLI
    sends the same request again (told once), and gives up waiting after wait_s, returning the
    202 body rather than looping for ever. A small HTTP server on loopback plays the API."""
    import http.server
    import threading

    answers: list[tuple[int, dict[str, object]]] = [
        (202, {"object": "token_count", "message": "counting"})
    ] * 2
    answers.append((200, {"object": "estimate", "price_cents": 50}))
    seen: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.rfile.read(int(self.headers["Content-Length"])))
            status, body = answers.pop(0) if answers else (202, {"object": "token_count"})
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sleeps: list[float] = []
    monkeypatch.setattr("yachay_cli.api.time.sleep", sleeps.append)
    try:
        told: list[dict] = []
        client = api.Client(f"http://127.0.0.1:{server.server_port}", "k", waiting=told.append)
        assert client.call("estimate", body={"model": "m"}) == answers_done()
        assert sleeps == [1.0, 1.0] and len(told) == 2 and len(set(seen)) == 1
        impatient = api.Client(f"http://127.0.0.1:{server.server_port}", "k", wait_s=0)
        assert impatient.call("estimate", body={"model": "m"})["object"] == "token_count"
    finally:
        server.shutdown()
        server.server_close()


def answers_done() -> dict:
    return {"object": "estimate", "price_cents": 50}
