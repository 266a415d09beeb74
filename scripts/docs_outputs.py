#!/usr/bin/env python3
"""Write the command outputs the docs show as committed files, so no page pastes an output that can go stale.

Usage: python scripts/docs_outputs.py [--check]   (--check: exit 1 if a file differs from its command's output)

Each file is exactly what its command prints today, run from the repository root on committed run files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# file (under the repository) -> the mnistbench command line whose stdout it holds
OUTPUTS = {
    "reference/rerun/compare-cpu.md": ["compare", "reference/cpu", "reference/rerun/cpu"],
    "reference/rerun/compare-fixed-budget-muon85-cpu.md": ["compare", "reference/fixed-budget-muon85-cpu",
                                                           "reference/rerun/fixed-budget-muon85-cpu"],
}


def output(args: list[str]) -> str:
    result = subprocess.run([sys.executable, "-m", "mnistbench", *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"mnistbench {' '.join(args)}: exit {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for name, args in OUTPUTS.items():
        path, text = ROOT / name, output(args)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not check:
            path.write_text(text, encoding="utf-8")
    if check and stale:
        print(f"out of date: {', '.join(stale)}; run python scripts/docs_outputs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
