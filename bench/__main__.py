"""Run every bench module: each `bench/*.py` that defines `main()` (called with no arguments)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    failed = []
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        entry = getattr(module, "main", None)
        if not callable(entry):
            continue
        print(f"== bench.{info.name} ==", flush=True)
        try:
            entry()
        except Exception as exc:  # one broken bench must not hide the others
            print(f"bench.{info.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(info.name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
