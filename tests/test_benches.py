"""Every bench has a ``--quick`` mode and .ci/run runs it, so no bench can rot unnoticed again."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHES = sorted(p for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_"))


def test_every_bench_has_a_quick_mode_that_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert BENCHES
    for bench in BENCHES:
        assert '"--quick"' in bench.read_text(), f"{bench.name} has no --quick"
        pattern = rf"^\s*\S*python (-m bench\.{bench.stem}|bench/{bench.name}) --quick\s*$"
        assert re.search(pattern, ci, re.MULTILINE), f".ci/run does not run {bench.name} --quick"


def test_the_pacing_bench_waiters_role_runs() -> None:
    """The role that crashed (``describe`` given a string) parks waiters and reports their cost."""
    result = subprocess.run(
        [
            sys.executable,
            "bench/pacing.py",
            "waiters",
            "--backend",
            "local",
            "--prefix",
            "t",
            "--waiters",
            "50",
            "--quick",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"cpu_pct", "mib", "kib_per_waiter"} <= set(report)
