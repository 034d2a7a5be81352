"""The README's own examples run as written (the "Ten lines", with their top-level awaits
as in a notebook, and the capacity-study block), from an empty folder."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import plotly.io as pio
import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def block_after(heading: str) -> str:
    """The first ```python block after ``heading``."""
    rest = README[README.index(heading) :]
    return re.search(r"```python\n(.*?)```", rest, re.S).group(1)


def run_block(source: str) -> dict:
    code = compile(source, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict = {}
    result = eval(code, namespace)  # a coroutine when the block awaits at top level
    if asyncio.iscoroutine(result):
        asyncio.run(result)
    return namespace


@pytest.fixture(autouse=True)
def quiet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pio.renderers, "default", "json")  # .show() prints, opens nothing
    monkeypatch.delenv("ORCHKIT_LLM_BASE_URL", raising=False)


def test_the_ten_lines_run(tmp_path, capsys):
    ns = run_block(block_after("## Ten lines"))
    assert ns["run"].status == "succeeded"
    assert "makespan_p95_ms" in capsys.readouterr().out
    assert (tmp_path / "tuned.json").exists()
    assert (
        ns["tuned"].steps[[s.id for s in ns["tuned"].steps].index("tutor_analysis")].timeout_ms
        == 12_000
    )
    assert ns["result"].status == "succeeded", ns["result"].errors


def test_the_capacity_study_block_runs():
    import orchkit as ok

    # its sweep tries 3 tutor slots at the peak rate: too few, and it says so
    with pytest.warns(ok.OverloadWarning, match="tutor-agent-123.*capacity 3"):
        ns = run_block(block_after("## Capacity studies"))
    assert ns["mc"].workload is not None and len(ns["mc"].runs) > 100
