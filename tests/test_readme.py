"""The README's own examples run as written (the "Ten lines", with their top-level awaits
as in a notebook), from an empty folder; so do the docs' examples whose output the text
states (the capacity guide's study, its capacity for an SLO and its deployment bundle, the
command line's `orchkit tune` line, the learning analytics guide's cohort), checked here for
what they print and write.
tests/test_docs.py runs every block of the docs as well."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import plotly.io as pio
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def page(path: str) -> str:
    """A page of the docs site (``docs/``-relative)."""
    return (ROOT / "docs" / path).read_text(encoding="utf-8")


CAPACITY = page("guides/capacity.md")
CLI = page("guides/cli.md")
ANALYTICS = page("guides/analytics.md")


def block_after(heading: str, text: str = README, lang: str = "python") -> str:
    """The first ```lang block after ``heading`` in ``text`` (the README by default)."""
    rest = text[text.index(heading) :]
    return re.search(rf"```{lang}\n(.*?)```", rest, re.S).group(1)


def run_block(source: str) -> dict:
    code = compile(source, "<example>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
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
        ns = run_block(block_after("# Capacity studies", CAPACITY))
    assert ns["mc"].workload is not None and len(ns["mc"].runs) > 100


def test_the_command_line_tune_space_works_on_the_shipped_plan(tmp_path, capsys):
    """The command line guide's `orchkit tune` line and its space.yaml comment, run as
    written (fewer trials and runs): exit 0, a tuned plan written."""
    import yaml

    from orchkit.cli import main

    lines = block_after("# Command line", CLI, lang="bash").splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("orchkit tune "))
    command = " ".join(ln.rstrip("\\").strip() for ln in lines[start : start + 2])
    space = []
    for ln in lines[start + 2 :]:
        if not ln.startswith("#"):
            break
        if ln.startswith("#   "):  # the file's lines; the others say what it is
            space.append(ln[4:])
    assert len(space) >= 3, lines[start:]
    assert yaml.safe_load("\n".join(space))  # it is YAML
    (tmp_path / "space.yaml").write_text("\n".join(space) + "\n")
    argv = command.split()[1:]
    argv = [a.strip('"') for a in argv]
    assert argv[:2] == ["tune", "parallel_analysis"] and "--space" in argv
    for flag, value in (("--trials", "10"), ("--runs", "400")):
        argv[argv.index(flag) + 1] = value
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "plan 'multi_analysis_999': 10 trials" in out and "error" not in err
    assert (tmp_path / "tuned.json").exists() and "verified on fresh seed" in out


def test_the_capacity_for_an_slo_block_runs(capsys):
    """The new user's task in one cell: infeasible with its reason, then a hedge and the
    smallest tutor capacity, as the capacity guide's comments say."""
    ns = run_block(block_after("## Capacity for an SLO", CAPACITY))
    out = capsys.readouterr().out
    assert out.startswith("infeasible (SLO makespan_p95_ms <= 3,000 ms):")
    assert "6,402 ms [6,132 ms, 6,723 ms]" in out and "step 'init_tutor'" in out
    answer = ns["answer"]
    assert answer.feasible and answer.capacities == {"tutor-agent-*": 66}
    r = answer.summary.metrics.loc["makespan_p95_ms"]
    assert (round(r["value"]), round(r["ci_low"]), round(r["ci_high"])) == (2892, 2805, 2965)
    assert len(answer.candidates) == 8


def test_the_deployment_block_runs_after_the_capacity_block(capsys):
    """The bundle of the capacity guide's answer saves, loads back equal and carries its
    capacity; `orchkit simulate --deployment` on it predicts the answer's study."""
    from orchkit.cli import main

    ns = run_block(block_after("## Capacity for an SLO", CAPACITY))
    ns = run_block_in(block_after("## Deployment bundles", CAPACITY), ns)
    d = ns["d"]
    import orchkit as ok

    assert ok.Deployment.load("deploy.yaml") == d
    assert d.capacity("tutor-agent-123") == 66 and d.plan().steps[1].hedge is not None
    assert d.meta["capacityFor"]["predicted"]["makespan_p95_ms"]["ciHigh"] <= 3000
    capsys.readouterr()
    assert (
        main(
            [
                "simulate",
                "--deployment",
                "deploy.yaml",
                "--workload",
                "rate=20,horizon=600000",
                "--json",
            ]
        )
        == 0
    )
    import json

    out = json.loads(capsys.readouterr().out)
    assert round(out["metrics"]["makespan_p95_ms"]["value"]) == 2892


def test_the_learning_analytics_block_runs(capsys):
    """BKT recovers the block's learners (prior 0.2, learn ~0.13 on average, guess 0.2,
    slip 0.1) and finds less learning after the tutor's timeouts, with an interval below 0."""
    ns = run_block(block_after("# Learning analytics", ANALYTICS))
    fitted = ns["model"].params.loc["fractions"]
    for name, true in {"prior": 0.2, "guess": 0.2, "slip": 0.1}.items():
        assert abs(fitted[name] - true) < 0.05, fitted.to_dict()
    timeout = ns["gain"].loc["timeout"]
    assert timeout["diff"] < 0 and timeout["diff_high"] < 0
    assert "timeout" in capsys.readouterr().out


def run_block_in(source: str, namespace: dict) -> dict:
    """Run a block in the namespace an earlier block left."""
    exec(compile(source, "<example>", "exec"), namespace)
    return namespace
