"""``orchkit simulate PLAN --models M [--runs N] [--seed S] [--workload ...] [--json]
[--gantt FILE.html]``: the numbers it prints are the library's."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
import yaml

import orchkit as ok
from orchkit.cli import main

MODELS = {
    "agents": {
        "learning-*": {"latency": {"dist": "lognormal", "median": 60, "p95": 200}, "error": 0.1},
        "tutor-*": {
            "capacity": 2,
            "latency": {"dist": "gamma", "mean": 150, "cv": 0.6},
            "error": 0.05,
        },
    }
}
PLAN = {
    "id": "cli-plan",
    "parallel": True,
    "timeout": 5000,
    "steps": [
        {
            "id": "learn",
            "agentId": "learning-agent-1",
            "action": "analyze",
            "retryPolicy": {"maxRetries": 2, "backoffMs": 20},
        },
        {
            "id": "tutor",
            "agentId": "tutor-agent-1",
            "action": "hint",
            "retryPolicy": {"maxRetries": 1, "backoffMs": 50},
        },
        {
            "id": "report",
            "agentId": "learning-agent-1",
            "action": "report",
            "dependencies": ["learn", "tutor"],
        },
    ],
}


@pytest.fixture()
def files(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump(MODELS))
    return tmp_path, str(plan), str(models)


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_simulate_prints_the_summary(files, capsys):
    _, plan, models = files
    code, out, err = _run(
        capsys,
        "simulate",
        plan,
        "--models",
        models,
        "--runs",
        "800",
        "--seed",
        "3",
        "--method",
        "simpy",
    )
    assert code == 0, err
    assert "plan 'cli-plan': 800 runs, seed 3, simpy path" in out
    summary = ok.monte_carlo(
        plan, models, runs=800, seed=3, method="simpy", progress=False
    ).summary()
    for metric in (
        "makespan_mean_ms",
        "makespan_p50_ms",
        "makespan_p95_ms",
        "makespan_p99_ms",
        "success_rate",
        "attempts_per_run",
    ):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(metric + " "))
        value, lo, hi = (float(x.replace(",", "")) for x in re.findall(r"-?[\d,]+\.\d+", line))
        row = summary.metrics.loc[metric]
        assert value == pytest.approx(row["value"], abs=1e-3)
        assert (lo, hi) == pytest.approx((row["ci_low"], row["ci_high"]), abs=1e-3)
    assert re.search(r"learning-agent-1\s+capacity unlimited", out)
    assert re.search(r"tutor-agent-1\s+capacity 2 ", out)


def test_simulate_json(files, capsys):
    _, plan, models = files
    code, out, err = _run(
        capsys,
        "simulate",
        plan,
        "--models",
        models,
        "--runs",
        "500",
        "--seed",
        "9",
        "--json",
        "--method",
        "simpy",
    )
    assert code == 0, err
    data = json.loads(out)
    assert (data["plan_id"], data["runs"], data["seed"], data["method"]) == (
        "cli-plan",
        500,
        9,
        "simpy",
    )
    mc = ok.monte_carlo(plan, models, runs=500, seed=9, method="simpy", progress=False)
    summary = mc.summary()
    for metric, row in data["metrics"].items():
        assert set(row) == {"runs", "value", "ci_low", "ci_high"}
        if row["value"] is None:  # NaN (goodput of independent runs) is JSON null
            assert math.isnan(summary[metric]), metric
        else:
            assert row["value"] == pytest.approx(summary[metric])
    assert data["metrics"]["makespan_mean_ms"]["value"] == pytest.approx(
        mc.runs["makespan_ms"].mean()
    )
    assert {"success_rate", "makespan_p95_ms", "makespan_p99_ms"} <= set(data["metrics"])
    agents = {a["agent_id"]: a for a in data["agents"]}
    assert set(agents) == {"learning-agent-1", "tutor-agent-1"}
    assert agents["tutor-agent-1"]["capacity"] == 2
    assert agents["learning-agent-1"]["utilisation"] is None  # unlimited: NaN -> null


def test_simulate_workload(files, capsys):
    _, plan, models = files
    code, out, err = _run(
        capsys,
        "simulate",
        plan,
        "--models",
        models,
        "--seed",
        "1",
        "--workload",
        "rate=5,horizon=20000",
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    study = ok.monte_carlo(
        plan, models, seed=1, progress=False, workload=ok.Workload(rate_per_s=5, horizon_ms=20_000)
    )
    assert data["runs"] == len(study.runs)
    assert abs(data["runs"] - 100) <= 5 * math.sqrt(100)
    assert data["metrics"]["makespan_mean_ms"]["value"] == pytest.approx(
        study.summary()["makespan_mean_ms"]
    )
    tutor = next(a for a in data["agents"] if a["agent_id"] == "tutor-agent-1")
    assert 0 < tutor["utilisation"] < 1

    code, out, err = _run(
        capsys, "simulate", plan, "--models", models, "--workload", "arrivals=0;0;100", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["runs"] == 3
    code, out, err = _run(
        capsys, "simulate", plan, "--models", models, "--workload", "interval=100,horizon=1000"
    )
    assert code == 0, err
    assert "workload interval=100,horizon=1000" in out


@pytest.mark.parametrize(
    "spec, match",
    [
        ("speed=5", "--workload 'speed=5'"),
        ("rate=5", "horizon_ms"),
        ("rate=-1,horizon=10", "rate_per_s must be > 0"),
    ],
)
def test_simulate_bad_workload(files, capsys, spec, match):
    _, plan, models = files
    code, out, err = _run(capsys, "simulate", plan, "--models", models, "--workload", spec)
    assert code == 2
    assert match in err and out == ""


def test_simulate_writes_a_gantt_chart(files, capsys):
    tmp, plan, models = files
    html = tmp / "gantt.html"
    code, out, err = _run(
        capsys,
        "simulate",
        plan,
        "--models",
        models,
        "--runs",
        "50",
        "--gantt",
        str(html),
        "--method",
        "simpy",
    )
    assert code == 0, err
    assert f"Gantt chart of one run written to {html}" in out
    text = html.read_text()
    assert "plotly" in text.lower() and "cli-plan: one simulated run (seed 0)" in text
    for step in ("learn", "tutor", "report"):
        assert f'"{step}"' in text
    html2 = tmp / "quiet.html"
    code, out, _ = _run(
        capsys,
        "simulate",
        plan,
        "--models",
        models,
        "--runs",
        "50",
        "--gantt",
        str(html2),
        "--json",
        "--method",
        "simpy",
    )
    assert code == 0 and html2.exists()
    json.loads(out)  # --json output stays parseable


def test_simulate_bad_plan_exits_2_with_the_message(files, capsys):
    tmp, _, models = files
    bad = tmp / "cycle.json"
    bad.write_text(
        json.dumps(
            {
                "id": "loop",
                "steps": [
                    {"id": "a", "agentId": "learning-1", "action": "x", "dependencies": ["b"]},
                    {"id": "b", "agentId": "learning-1", "action": "x", "dependencies": ["a"]},
                ],
            }
        )
    )
    code, out, err = _run(capsys, "simulate", str(bad), "--models", models, "--runs", "10")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "loop" in err and "a -> b -> a" in err

    typo = tmp / "typo.json"
    typo.write_text(
        json.dumps(
            {
                "id": "t",
                "steps": [{"id": "a", "agentId": "learning-1", "action": "x", "dependecies": []}],
            }
        )
    )
    code, _, err = _run(capsys, "simulate", str(typo), "--models", models)
    assert code == 2 and "dependecies" in err

    orphan = tmp / "orphan.json"
    orphan.write_text(
        json.dumps({"id": "o", "steps": [{"id": "a", "agentId": "speech-agent-1", "action": "x"}]})
    )
    code, _, err = _run(capsys, "simulate", str(orphan), "--models", models)
    assert code == 2
    assert "speech-agent-1" in err and "learning-*" in err and "tutor-*" in err

    code, _, err = _run(capsys, "simulate", str(orphan), "--models", str(tmp / "missing.yaml"))
    assert code == 2 and "missing.yaml" in err


def test_the_installed_command_runs(files):
    """The real entry point, in a fresh interpreter: exit codes and streams."""
    _, plan, models = files
    cmd = [
        sys.executable,
        "-m",
        "orchkit",
        "simulate",
        plan,
        "--models",
        models,
        "--runs",
        "200",
        "--seed",
        "2",
        "--json",
        "--method",
        "simpy",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["runs"] == 200
    done = subprocess.run(
        cmd[:4] + ["/nonexistent/plan.json"] + cmd[5:], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "cannot read plan file" in done.stderr and done.stdout == ""


def test_simulate_workload_with_a_mix_of_plans(files, capsys):
    """--mix PLAN:WEIGHT: the same study as the API's Workload(plans=...), the positional
    plan taking the rest of the weight; bad weights are one line, exit 2."""
    tmp, plan, models = files
    other = dict(PLAN, id="other")
    (tmp / "other.json").write_text(json.dumps(other))
    code, out, err = _run(
        capsys,
        "simulate",
        plan,
        "--models",
        models,
        "--seed",
        "2",
        "--workload",
        "rate=5,horizon=20000",
        "--mix",
        f"{tmp / 'other.json'}:0.25",
        "--json",
    )
    assert code == 0, err
    study = ok.monte_carlo(
        None,
        models,
        seed=2,
        progress=False,
        workload=ok.Workload(
            rate_per_s=5, horizon_ms=20_000, plans=[(plan, 0.75), (str(tmp / "other.json"), 0.25)]
        ),
    )
    data = json.loads(out)
    assert data["runs"] == len(study.runs)
    assert set(study.runs["plan_id"]) == {PLAN["id"], "other"}
    assert data["metrics"]["makespan_mean_ms"]["value"] == pytest.approx(
        study.summary()["makespan_mean_ms"]
    )
    for bad, match in (
        (f"{tmp / 'other.json'}:1.5", "weight in (0, 1)"),
        (f"{tmp / 'other.json'}", "PLAN:WEIGHT"),
    ):
        code, out, err = _run(
            capsys,
            "simulate",
            plan,
            "--models",
            models,
            "--workload",
            "rate=5,horizon=20000",
            "--mix",
            bad,
        )
        assert code == 2 and match in err and len(err.strip().splitlines()) == 1
    code, out, err = _run(
        capsys, "simulate", plan, "--models", models, "--mix", f"{tmp / 'other.json'}:0.5"
    )
    assert code == 2 and "--mix applies to a --workload study" in err


def test_an_overloaded_study_says_every_run_hit_the_deadline(capsys):
    """Under overload every run times out at the plan's deadline: the makespans are the
    deadline, said once, not intervals like [60,000.000, 60,000.000]."""
    code, out, err = _run(
        capsys, "simulate", "parallel_analysis", "--workload", "rate=20,horizon=60000"
    )
    assert code == 0 and "offered load" in err  # the overload warnings
    for metric in ("makespan_mean_ms", "makespan_p50_ms", "makespan_p95_ms", "makespan_p99_ms"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(metric + " "))
        assert line.endswith("= the plan's deadline: every run timed out (no interval)"), line
    assert "[60,000.000, 60,000.000]" not in out
    assert "makespan_ok_p95_ms          n/a   (no run to measure: none succeeded)" in out
    text = " ".join(out.split())
    assert "every run hit the plan's 60,000 ms deadline" in text


def test_a_bound_at_the_deadline_is_flagged(capsys):
    code, out, _ = _run(
        capsys,
        "simulate",
        "parallel_analysis",
        "--seed",
        "1",
        "--workload",
        "rate=1,horizon=600000",
    )
    assert code == 0
    p95 = next(ln for ln in out.splitlines() if ln.strip().startswith("makespan_p95_ms "))
    assert p95.endswith(", 60,000.000†]")  # its upper bound: runs timed out at that rank
    assert "† the plan's deadline (60,000 ms): a run that times out counts at it" in out
    # the figures stay the library's
    s = ok.monte_carlo(
        ok.examples.plan("parallel_analysis"),
        ok.examples.models(),
        seed=1,
        progress=False,
        workload=ok.Workload(rate_per_s=1, horizon_ms=600_000),
    ).summary()
    assert s.metrics.loc["makespan_p95_ms", "ci_high"] == 60_000
