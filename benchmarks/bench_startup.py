"""Start-up cost: `import orchkit` and `orchkit validate` against a bare interpreter, in
fresh processes (best of 7). Target: import orchkit <= 200 ms over `python -c pass`, and
`orchkit validate` imports neither pandas nor numpy. Run: python benchmarks/bench_startup.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orchkit as ok

PLAN = (
    str(ok.examples.path("parallel_analysis"))
    if hasattr(ok, "examples")
    else str(Path(__file__).resolve().parents[1] / "data/plans/parallel_analysis.json")
)


def best_ms(args: list[str], repeat: int = 7) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t)
    return best * 1000


def main() -> None:
    py = sys.executable
    bare = best_ms([py, "-c", "pass"])
    imp = best_ms([py, "-c", "import orchkit"])
    validate = best_ms([py, "-m", "orchkit", "validate", PLAN])
    heavy = (
        subprocess.run(
            [
                py,
                "-c",
                "import sys, orchkit.cli as c\n"
                "try:\n    c.main(['validate', sys.argv[1]])\nexcept SystemExit:\n    pass\n"
                "print(' '.join(m for m in ('pandas', 'numpy', 'simpy', 'plotly', 'scipy') "
                "if m in sys.modules) or 'none')",
                PLAN,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    print(f"{'python -c pass':34}{bare:8.1f} ms")
    print(f"{'python -c import orchkit':34}{imp:8.1f} ms   (+{imp - bare:.1f} ms; target <= +200)")
    print(f"{'python -m orchkit validate PLAN':34}{validate:8.1f} ms   (+{validate - bare:.1f} ms)")
    print(f"heavy modules imported by `orchkit validate`: {heavy} (target: none of pandas/numpy)")


if __name__ == "__main__":
    main()
