"""The walls that keep the codebase's picture true (see README: Layout)."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def py_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_shared_never_imports_functions_or_the_trainer() -> None:
    for path in py_files("shared"):
        bad = {
            m
            for m in imports(path)
            if m.split(".")[0] in ("functions", "yachay_trainer", "devstack", "bench")
        }
        assert not bad, f"{path}: {bad}"


def test_functions_never_import_one_another() -> None:
    for path in py_files("functions"):
        assert not {m for m in imports(path) if m == "functions" or m.startswith("functions.")}


def test_only_adapters_import_cloud_sdks_and_stripe() -> None:
    adapters = {
        "store.py",
        "storage.py",
        "auth.py",
        "tasks.py",
        "batch.py",
        "payments.py",
        "checkout.py",
        "secretbox.py",
    }
    for path in py_files("shared"):
        sdk = {
            m for m in imports(path) if m.startswith(("google.cloud", "firebase_admin", "stripe"))
        }
        if sdk:
            assert path.name in adapters, f"{path} imports {sdk}"


def test_only_the_outbound_adapter_sends_to_addresses_users_give() -> None:
    """shared.outbound is the one place with the SSRF guard; a raw HTTP client elsewhere in the
    core would bypass it. auth.py fetches Google's token certificates (a fixed URL of ours)."""
    clients = ("urllib3", "socket", "http.client", "urllib.request", "requests", "httpx")
    users = {
        path.name
        for path in py_files("shared")
        if {m for m in imports(path) if m.split(".")[0] in clients or m in clients}
    }
    assert users == {"outbound.py", "auth.py"}


def test_core_never_imports_flask() -> None:
    for path in py_files("shared"):
        if path.name != "http.py":
            assert not {m for m in imports(path) if m.startswith("flask")}, path


def test_trainer_shares_only_the_contract_and_tokenization() -> None:
    used = set()
    for path in py_files("trainer_image"):
        used |= {m for m in imports(path) if m.startswith("shared.") and m.count(".") == 1}
    assert used == {"shared.contract", "shared.tokenization", "shared.jsonl_rules", "shared.sizing"}
    dockerfile = (ROOT / "trainer_image" / "Dockerfile").read_text()
    copied = set(re.findall(r"shared/(\w+)\.py", dockerfile))
    assert copied == {"__init__", "contract", "jsonl_rules", "sizing", "tokenization"}
    assert re.search(r"^FROM \S+@sha256:[0-9a-f]{64}$", dockerfile, re.M), "pin the base image"


def test_the_file_rules_and_the_sizing_import_nothing_of_ours() -> None:
    """shared/jsonl_rules.py ships inside the trainer image and, copied, inside the CLI;
    shared/sizing.py inside the trainer image."""
    for name in ("jsonl_rules.py", "sizing.py"):
        assert not {m for m in imports(ROOT / "shared" / name) if m.startswith("shared")}


def test_only_the_store_touches_firestore_documents() -> None:
    """No Firestore client, collection name or document outside shared/store.py in the API: the
    rest of the core and the functions work with shared.records."""
    from shared import store

    collections = {v for k, v in vars(store).items() if k.isupper() and isinstance(v, str)}
    for path in [*py_files("shared"), *py_files("functions")]:
        if path.name == "store.py":
            continue
        text = path.read_text()
        assert "store.client(" not in text and ".collection(" not in text, path
        assert not re.search(r"\bstore\.[A-Z_]{3,}\b", text), f"{path} names a collection"
        for name in collections:
            assert f'collection("{name}")' not in text, path
    trainer = "".join(p.read_text() for p in py_files("trainer_image"))
    assert ".collection(" not in trainer  # it writes the document its config names


def test_every_exit_code_lives_in_the_contract() -> None:
    from shared import batch, contract

    assert set(contract.FAIL_EXIT_CODES).isdisjoint(contract.RETRYABLE_EXIT_CODES)
    assert contract.EXIT_USER_ERROR in contract.FAIL_EXIT_CODES
    main = (ROOT / "trainer_image" / "yachay_trainer" / "__main__.py").read_text()
    assert not re.search(r"\breturn \d+\b", main), "return a contract.EXIT_* code"
    batch_src = (ROOT / "shared" / "batch.py").read_text()
    assert not re.search(r"exit_codes=\[?\(?\d", batch_src)
    assert vars(batch)["FAIL_EXIT_CODES"] is contract.FAIL_EXIT_CODES


def test_mypy_checks_every_python_file() -> None:
    """A new folder of Python is type-checked from its first file (pyproject's mypy `files`)."""
    import subprocess
    import tomllib

    checked = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(tracked) > 100
    missed = [p for p in tracked if not any(p == c or p.startswith(f"{c}/") for c in checked)]
    assert missed == []
