"""Dispatch ``python -m benchmarks NAME [args...]`` to ``benchmarks/bench_NAME.py:main``."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def _names() -> list[str]:
    here = Path(__file__).parent
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(here)])
        if m.name.startswith("bench_")
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = _names()
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in names:
        print("usage: python -m benchmarks {" + ",".join(names) + "} [options]")
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    mod = importlib.import_module(f"benchmarks.bench_{argv[0]}")
    return int(mod.main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
