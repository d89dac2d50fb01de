"""The floor for cold starts: a bare functions-framework function that imports only the SDKs
named in YACHAY_BENCH_IMPORTS (comma-separated module names) and answers 200."""

import importlib
import os

for _module in filter(None, os.environ.get("YACHAY_BENCH_IMPORTS", "").split(",")):
    importlib.import_module(_module)


def hello(request: object) -> str:
    return "ok"
