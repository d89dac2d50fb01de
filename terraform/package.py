"""Builds one source folder per function for Terraform to zip and deploy:
build/functions/<name>/ = functions/<name>/main.py + shared/ + requirements.txt.

Terraform names each archive by its hash, so a change to a function or to shared/ redeploys it.
Each folder ships its bytecode (checked-hash .pyc files: valid whatever the files' times, and
the same bytes for the same source, so the archive hash stays stable), so a cold start does not
compile shared/ first.

    python terraform/package.py [BUILD_DIR]
"""

from __future__ import annotations

import compileall
import py_compile
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def package(build: Path) -> list[str]:
    out = build / "functions"
    shutil.rmtree(out, ignore_errors=True)
    names = []
    for main in sorted((ROOT / "functions").glob("*/main.py")):
        name = main.parent.name
        dest = out / name
        shutil.copytree(main.parent, dest, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(
            ROOT / "shared", dest / "shared", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copy(ROOT / "functions" / "requirements.txt", dest / "requirements.txt")
        compile_bytecode(dest)
        names.append(name)
    return names


def compile_bytecode(folder: Path) -> None:
    """Writes checked-hash .pyc files for every module under `folder`."""
    ok = compileall.compile_dir(
        folder,
        quiet=1,
        invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
    )
    if not ok:
        raise SystemExit(f"could not compile {folder}")


if __name__ == "__main__":
    build = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build"
    print("packaged:", ", ".join(package(build)))
