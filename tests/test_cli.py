"""``orchkit validate PLAN`` and ``orchkit export PLAN [--compat seed] [-o FILE]``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchkit import Plan
from orchkit.cli import main

ROOT = Path(__file__).resolve().parent.parent
SEED_PLANS = sorted((ROOT / "data" / "plans").glob("*.json"))
EXE = Path(sys.executable).parent / "orchkit"

EXTENDED = {
    "id": "tuned",
    "parallel": True,
    "maxConcurrency": 2,
    "failFast": True,
    "timeout": 900,
    "steps": [
        {
            "id": "a",
            "agentId": "x",
            "action": "go",
            "timeout": 50,
            "retryPolicy": {
                "maxRetries": 2,
                "backoffMs": 10,
                "strategy": "exponential",
                "jitter": 0.1,
            },
        },
        {"id": "b", "agentId": "x", "action": "go", "dependencies": ["a"]},
    ],
}


def write(tmp_path, name, data) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


@pytest.mark.parametrize("path", SEED_PLANS, ids=lambda p: p.stem)
def test_validate_seed_plans_exit_0(path, capsys):
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "is valid" in out and Plan.load(path).id in out and err == ""


@pytest.mark.parametrize(
    "data, words",
    [
        (
            {
                "id": "loop",
                "steps": [
                    {"id": "a", "agentId": "x", "action": "y", "dependencies": ["b"]},
                    {"id": "b", "agentId": "x", "action": "y", "dependencies": ["a"]},
                ],
            },
            ["plan 'loop'", "a -> b -> a"],
        ),
        (
            {
                "id": "typo",
                "steps": [{"id": "a", "agentId": "x", "action": "y", "dependecies": []}],
            },
            ["plan 'typo'", "step 'a'", "did you mean 'dependencies'"],
        ),
        ('{"id": "p", "steps": [', ["not valid JSON"]),
    ],
)
def test_validate_a_bad_file_exits_2_with_the_message_on_stderr(tmp_path, capsys, data, words):
    path = write(tmp_path, "bad.json", data)
    assert main(["validate", path]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ")
    for word in words:
        assert word in err, (word, err)


def test_validate_a_missing_file_exits_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.json")]) == 2
    assert "cannot read plan file" in capsys.readouterr().err


def test_validate_yaml(tmp_path, capsys):
    path = tmp_path / "plan.yaml"
    Plan.model_validate(EXTENDED).save(path)
    assert main(["validate", str(path)]) == 0
    assert "plan 'tuned' is valid (2 steps in 1 plan(s))" in capsys.readouterr().out


def test_export_seed_prints_json_and_warns_about_dropped_fields(tmp_path, capsys):
    path = write(tmp_path, "tuned.json", EXTENDED)
    assert main(["export", path, "--compat", "seed"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert "maxConcurrency" not in data and "failFast" not in data
    assert data["steps"][0]["retryPolicy"] == {"maxRetries": 2, "backoffMs": 10}
    assert "timeout" not in data["steps"][0] and data["timeout"] == 900
    assert err.startswith("warning: ")
    for field in (
        "maxConcurrency",
        "failFast",
        "step 'a': timeout",
        "retryPolicy.strategy",
        "retryPolicy.jitter",
    ):
        assert field in err, field
    assert Plan.model_validate(data).id == "tuned"  # what it prints loads again


def test_export_without_compat_round_trips_and_is_silent(tmp_path, capsys):
    path = write(tmp_path, "tuned.json", EXTENDED)
    out_file = tmp_path / "out.json"
    assert main(["export", path, "-o", str(out_file)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert Plan.load(out_file) == Plan.model_validate(EXTENDED)


def test_export_of_a_seed_plan_drops_nothing(capsys):
    path = ROOT / "data" / "plans" / "graceful_degradation.json"
    assert main(["export", str(path), "--compat", "seed"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and json.loads(out) == json.loads(path.read_text())


def test_export_a_bad_plan_exits_2(tmp_path, capsys):
    path = write(tmp_path, "bad.json", {"id": "p", "steps": []})
    assert main(["export", path, "--compat", "seed"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "plan 'p'" in err and "'steps'" in err


def test_the_installed_command(tmp_path):
    good = subprocess.run(
        [str(EXE), "validate", str(ROOT / "data/plans/parallel_analysis.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert good.returncode == 0, good.stderr
    assert "multi_analysis_999" in good.stdout
    bad = write(
        tmp_path,
        "bad.json",
        {"id": "p", "steps": [{"id": "a", "agentId": "x", "action": "y", "dependencies": ["a"]}]},
    )
    proc = subprocess.run([str(EXE), "validate", bad], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "step 'a' depends on itself" in proc.stderr and proc.stdout == ""
    tuned = write(tmp_path, "tuned.json", EXTENDED)
    proc = subprocess.run(
        [str(EXE), "export", tuned, "--compat", "seed"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "maxConcurrency" in proc.stderr
    assert json.loads(proc.stdout)["id"] == "tuned"
