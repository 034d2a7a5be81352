"""ok.capacity_for (SPEC §13.2): the smallest capacities that meet an SLO, checked where the
answer is known (M/M/c, Erlang C), infeasible with its reason, the same answer for the
same seed; its table, its chart (read, not only drawn) and ``orchkit capacity``."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from scipy.optimize import brentq
from test_charts import check_figure  # the suite's figure checks (SPEC §13.5)

import orchkit as ok
from orchkit.cli import main

MMC = ok.Plan.model_validate(
    {"id": "mmc", "steps": [{"id": "serve", "agentId": "server", "action": "serve"}]}
)
SERVER = {"agents": {"server": {"latency": {"dist": "exponential", "mean": 100}}}}
LAM, MEAN = 0.04, 100.0  # 40 arrivals/s, 100 ms mean service: offered load a = 4
WORK = ok.Workload(rate_per_s=40, horizon_ms=800_000)  # ~32,000 runs a study


def erlang_c(c: int, a: float) -> float:
    """P(an arrival waits) in M/M/c with offered load a = λ·E[S] < c."""
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def sojourn_p95(c: int, lam: float = LAM, mean: float = MEAN) -> float:
    """The p95 of the time in an M/M/c system (queue wait + service: the run's makespan).
    The wait is 0 with probability 1 − C and Exp(cμ − λ) with probability C = Erlang C,
    so P(T > t) = e^(−μt) + C·μ/(θ − μ)·(e^(−μt) − e^(−θt)), θ = cμ − λ."""
    mu = 1.0 / mean
    pw, theta = erlang_c(c, lam * mean), c * mu - lam

    def tail(t: float) -> float:
        if abs(theta - mu) < 1e-12:
            wait = pw * mu * t * math.exp(-mu * t)
        else:
            wait = pw * mu / (theta - mu) * (math.exp(-mu * t) - math.exp(-theta * t))
        return math.exp(-mu * t) + wait - 0.05

    return brentq(tail, 0.0, 1e6)


def _row(cp, caps: dict) -> pd.Series:
    t = cp.table()
    hit = t[(t[list(caps)] == pd.Series(caps)).fillna(False).all(axis=1)]
    assert len(hit) == 1, (caps, t)
    return hit.iloc[0]


def test_one_agent_gets_the_erlang_c_minimum():
    """M/M/c: Poisson arrivals at 40/s, exponential service of mean 100 ms. The closed form
    (Erlang C) gives p95 time in system 419.7 ms with 5 servers, 323.8 ms with 6, so for
    an SLO of 370 ms the minimum is 6. capacity_for bisects from the stability bound (a = 4
    busy servers: 5) and returns 6, having seen 5 miss. How conservative the interval makes
    it: over seeds 0-11, the 95% interval's upper end at 6 servers lay from 1% below to 4%
    above the true p95 (mean +2.5%), so every seed returned 6 here; an SLO within that
    margin above the true p95 of the minimum gets one server more (the next test)."""
    truth = {c: sojourn_p95(c) for c in range(5, 10)}
    assert truth[5] == pytest.approx(419.75, abs=0.05) and truth[6] == pytest.approx(
        323.76, abs=0.05
    )
    slo = 370.0
    c_star = min(c for c, p95 in truth.items() if p95 <= slo)
    cp = ok.capacity_for(MMC, SERVER, slo={"makespan_p95_ms": slo}, workload=WORK, progress=False)
    assert cp.feasible and cp.capacities == {"server": c_star} == {"server": 6}
    assert cp.search == "bisection" and cp.reason == ""
    answer = _row(cp, {"server": 6})
    assert answer["makespan_p95_ms_ci_low"] <= truth[6] <= answer["makespan_p95_ms_ci_high"] <= slo
    below = _row(cp, {"server": 5})
    assert not below["meets"] and below["makespan_p95_ms_ci_high"] > slo
    table = cp.table()
    assert table["server"].dropna().min() == 5  # never below the stability bound
    assert table["phase"].iloc[0] == "unlimited capacity" and pd.isna(table["server"].iloc[0])
    value, lo, hi = cp.bound["makespan_p95_ms"]  # unlimited: the service time alone
    assert lo <= MEAN * math.log(20) <= hi and value < truth[6]
    assert cp.summary is not None and cp.summary["makespan_p95_ms"] == answer["makespan_p95_ms"]
    assert cp.study is not None and cp.study.models.capacity("server") == 6
    assert "capacities server: 6 meet the SLO makespan_p95_ms <= 370 ms" in repr(cp)


def test_the_conservative_end_costs_a_server_when_the_slo_hugs_the_true_p95():
    """An SLO 0.7% above the true p95 with 6 servers (326 ms vs 323.8 ms): the study's
    estimate at 6 meets it, but its interval's upper end does not, so the answer is 7;
    the interval still holds the truth."""
    cp = ok.capacity_for(MMC, SERVER, slo={"makespan_p95_ms": 326}, workload=WORK, progress=False)
    assert cp.capacities == {"server": 7}
    six = _row(cp, {"server": 6})
    assert six["makespan_p95_ms"] <= 326 < six["makespan_p95_ms_ci_high"]
    assert six["makespan_p95_ms_ci_low"] <= sojourn_p95(6) <= six["makespan_p95_ms_ci_high"]


def test_same_seed_same_answer_and_another_seed_its_own():
    kw = dict(slo={"makespan_p95_ms": 370}, workload=ok.Workload(rate_per_s=40, horizon_ms=200_000))
    a = ok.capacity_for(MMC, SERVER, progress=False, seed=3, **kw)
    b = ok.capacity_for(MMC, SERVER, progress=False, seed=3, **kw)
    c = ok.capacity_for(MMC, SERVER, progress=False, seed=4, **kw)
    assert a.capacities == b.capacities and a.table().equals(b.table())
    assert not a.table()["makespan_p95_ms"].equals(c.table()["makespan_p95_ms"])


TWO_STEPS = ok.Plan.model_validate(
    {
        "id": "ask",
        "parallel": True,
        "steps": [
            {"id": "score", "agentId": "learning-agent-1", "action": "score"},
            {"id": "hint", "agentId": "tutor-agent-1", "action": "hint", "dependencies": ["score"]},
        ],
    }
)
TWO_AGENTS = {
    "agents": {
        "learning-agent-*": {"capacity": 8, "latency": {"dist": "constant", "value": 40}},
        "tutor-agent-*": {
            "capacity": 4,
            "latency": {"dist": "lognormal", "median": 800, "p95": 3000},
        },
    }
}


def test_infeasible_when_unlimited_capacity_misses_the_slo_with_the_bound_and_the_step():
    """The tutor step alone has p95 3 s: no capacity gets the session p95 under 2.5 s. The
    answer says so, with the unlimited-capacity bound computed and shown, the step that
    causes it and what could change it — no capacities, no best effort."""
    work = ok.Workload(rate_per_s=10, horizon_ms=300_000)
    cp = ok.capacity_for(
        TWO_STEPS, TWO_AGENTS, slo={"makespan_p95_ms": 2500}, workload=work, progress=False
    )
    assert not cp.feasible and cp.capacities == {} and cp.summary is None
    value, lo, hi = cp.bound["makespan_p95_ms"]
    assert lo > 2500 and value == pytest.approx(3040, rel=0.06)  # 40 ms + the tutor's p95
    assert cp.unlimited["makespan_p95_ms"] == value
    assert len(cp.table()) == 1  # the unlimited study decides it: nothing else is tried
    reason = cp.reason
    assert f"{value:,.0f} ms [{lo:,.0f} ms, {hi:,.0f} ms]" in reason
    assert "the lower bound no capacity can beat" in reason
    assert "step 'hint' (tutor-agent-1, hint) is on the critical path in 100% of runs" in reason
    assert "hedge" in reason and "timeout" in reason
    assert f"models.scaled('tutor-agent-*', latency={2500 / hi:.2f})" in reason  # SLO / bound
    assert repr(cp).startswith("infeasible (SLO makespan_p95_ms <= 2,500 ms):")
    fig = cp.chart()
    check_figure(fig)
    names = [t.name for t in fig.data]
    assert any(n.startswith("unlimited capacity") for n in names)
    assert "SLO: makespan_p95_ms <= 2,500 ms" in names and fig.layout.title.text.endswith(
        "(infeasible)"
    )


def test_a_success_rate_no_capacity_reaches_names_the_failing_step():
    models = {
        "agents": {
            "learning-agent-*": {"latency": {"dist": "constant", "value": 40}},
            "tutor-agent-*": {"latency": {"dist": "constant", "value": 100}, "error": 0.1},
        }
    }
    cp = ok.capacity_for(
        TWO_STEPS,
        models,
        slo={"success_rate": 0.99},
        workload=ok.Workload(rate_per_s=5, horizon_ms=200_000),
        progress=False,
    )
    assert not cp.feasible
    assert "success_rate must be >= 0.99" in cp.reason and "upper bound" in cp.reason
    assert "step 'hint' ends failed in" in cp.reason and "retries" in cp.reason


def test_max_capacity_too_small_says_so():
    cp = ok.capacity_for(
        MMC,
        SERVER,
        slo={"makespan_p95_ms": 370},
        workload=ok.Workload(rate_per_s=40, horizon_ms=100_000),
        max_capacity=4,
        progress=False,
    )
    assert not cp.feasible
    assert "needs at least 5 slots just to keep up" in cp.reason and "max_capacity" in cp.reason


def test_several_agents_greedy_by_bottleneck_then_no_capacity_can_go_down_by_one():
    """Both agents searched: the answer meets the SLO, and lowering any one capacity by one
    (the others as answered) either drops below the stability bound or was tried and
    missed."""
    models = {
        "agents": {
            "learning-agent-*": {"latency": {"dist": "exponential", "mean": 60}},
            "tutor-agent-*": {"latency": {"dist": "exponential", "mean": 150}},
        }
    }
    work = ok.Workload(rate_per_s=30, horizon_ms=300_000)
    slo = {"makespan_p95_ms": 800, "success_rate": 0.99}
    cp = ok.capacity_for(TWO_STEPS, models, slo=slo, workload=work, progress=False)
    assert cp.feasible and cp.agents == ["learning-agent-*", "tutor-agent-*"]
    assert cp.search == "greedy by bottleneck, then trimmed"
    table = cp.table()
    assert (
        table["phase"].str.startswith("greedy").any()
        and table["phase"].str.startswith("trim").any()
    )
    answer = _row(cp, cp.capacities)
    assert answer["meets"] and answer["makespan_p95_ms_ci_high"] <= 800
    stability = {"learning-agent-*": 2, "tutor-agent-*": 5}  # floor(λ·E[S]) + 1
    for p, n in cp.capacities.items():
        assert n >= stability[p]
        if n > stability[p]:
            assert not _row(cp, {**cp.capacities, p: n - 1})["meets"]
    assert cp.chart().layout.xaxis.title.text == "total slots of learning-agent-* + tutor-agent-*"


def test_agents_pick_the_patterns_searched_and_others_keep_theirs():
    cp = ok.capacity_for(
        TWO_STEPS,
        TWO_AGENTS,
        slo={"makespan_p95_ms": 60_000},
        workload=ok.Workload(rate_per_s=2, horizon_ms=60_000),
        agents="tutor-agent-1",  # an agent id: its entry
        progress=False,
    )
    assert cp.agents == ["tutor-agent-*"] and list(cp.capacities) == ["tutor-agent-*"]
    assert cp.study.models.capacity("learning-agent-1") == 8


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"slo": {"p95": 3000}}, ok.PlanValidationError, "not a summary metric.*makespan_p95_ms"),
        ({"slo": {}}, ok.PlanValidationError, "non-empty dict"),
        ({"slo": {"success_rate": 99}}, ok.PlanValidationError, "write 99% as 0.99"),
        ({"slo": {"makespan_p95_ms": "3s"}}, ok.PlanValidationError, "must be a number"),
        ({"workload": None}, ok.PlanValidationError, "workload is required"),
        ({"agents": ["speech-*"]}, ok.PlanValidationError, "it uses: learning-agent-\\*, tutor"),
        ({"max_capacity": 0}, ok.PlanValidationError, "max_capacity must be an int >= 1"),
        ({"seed": 1.5}, TypeError, "seed must be an int"),
    ],
)
def test_bad_input_is_named_before_anything_runs(kwargs, error, message):
    args = {
        "slo": {"makespan_p95_ms": 3000},
        "workload": ok.Workload(rate_per_s=2, horizon_ms=10_000),
        "progress": False,
        **kwargs,
    }
    with pytest.raises(error, match=message):
        ok.capacity_for(TWO_STEPS, TWO_AGENTS, **args)


def test_capacity_chart_reads_right_on_its_axes():
    """p95 against capacity: the SLO and the unlimited bound are traces in data units, so
    they sit where they say on the axis plotly draws (notebook 06's add_hline(y=20) on a
    log axis meant 10^20); the axis range holds the data, the intervals and both lines."""
    cp = ok.capacity_for(
        MMC,
        SERVER,
        slo={"makespan_p95_ms": 370},
        workload=ok.Workload(rate_per_s=40, horizon_ms=400_000),
        progress=False,
    )
    fig = ok.capacity_chart(cp)
    check_figure(fig)
    assert fig.layout.yaxis.type == "linear" and fig.layout.yaxis.title.text == (
        "makespan_p95_ms (ms)"
    )
    assert "server capacity" in fig.layout.xaxis.title.text
    slo = next(t for t in fig.data if t.name.startswith("SLO"))
    assert set(slo.y) == {370} and slo.mode == "lines"
    lo, hi = fig.layout.yaxis.range
    assert lo < 370 < hi
    ys = [v for t in fig.data for v in t.y]
    assert lo <= min(ys) and max(ys) <= hi
    star = next(t for t in fig.data if t.name.startswith("answer"))
    assert list(star.x) == [6] and star.name == "answer: server: 6"
    for t in fig.data:
        assert t.name and len(t.x) == len(t.y) > 0
    # a metric spanning more than 4x goes on a log axis, lines still in data units
    wide = ok.capacity_for(
        MMC,
        SERVER,
        slo={"makespan_p95_ms": 320, "makespan_mean_ms": 120},
        workload=ok.Workload(rate_per_s=40, horizon_ms=400_000),
        progress=False,
    )
    fig = wide.chart("makespan_mean_ms")
    check_figure(fig)
    lo, hi = fig.layout.yaxis.range
    values = [v for t in fig.data for v in t.y]
    if fig.layout.yaxis.type == "log":
        assert lo <= math.log10(min(values)) and math.log10(max(values)) <= hi
    else:
        assert lo <= min(values) and max(values) <= hi
    with pytest.raises(ok.PlanValidationError, match="not a metric of the SLO"):
        cp.chart("success_rate")


def test_cli_capacity_answers_infeasible_and_feasible_and_exits_0(tmp_path, capsys):
    code = main(
        [
            "capacity",
            "session_initialization",
            "--slo",
            "makespan_p95_ms=3000",
            "--workload",
            "rate=20,horizon=120000",
            "--scale",
            "tutor-agent-*:latency=2",
            "--agents",
            "tutor-agent-*",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "scaled tutor-agent-*:latency=2" in out and "infeasible (SLO makespan_p95_ms" in out
    assert "the lower bound no capacity can beat" in out and "step 'init_tutor'" in out
    models = tmp_path / "m.yaml"
    ok.AgentModels.from_dict(SERVER).save(models)
    plan = tmp_path / "p.json"
    MMC.save(plan)
    chart = tmp_path / "c.html"
    code = main(
        [
            "capacity",
            str(plan),
            "--models",
            str(models),
            "--slo",
            "makespan_p95_ms=370",
            "--workload",
            "rate=40",
            "--chart",
            str(chart),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "capacities server: 6 meet the SLO" in out
    assert "horizon 600 s: give horizon=MS to change it" in out and chart.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slo", "p95<3000", "--workload", "rate=2"], "write METRIC=BOUND"),
        (["--slo", "makespan_p95_ms=fast", "--workload", "rate=2"], "write METRIC=BOUND"),
        (["--slo", "p95=3000", "--workload", "rate=2"], "not a summary metric"),
        (["--slo", "makespan_p95_ms=3000", "--workload", "rate=two"], "is not a number"),
        (["--slo", "makespan_p95_ms=3000", "--workload", "rate=0:5;1000:2"], "need a horizon"),
        (
            ["--slo", "makespan_p95_ms=3000", "--workload", "rate=2", "--scale", "tutor"],
            "write PATTERN:latency=FACTOR",
        ),
        (
            [
                "--slo",
                "makespan_p95_ms=3000",
                "--workload",
                "rate=2",
                "--scale",
                "nobody:latency=2",
            ],
            "matches no agent entry",
        ),
        (
            [
                "--slo",
                "makespan_p95_ms=3000",
                "--workload",
                "rate=2",
                "--scale",
                "tutor-*:latency=0",
            ],
            "latency is a factor",
        ),
        (
            ["--slo", "makespan_p95_ms=3000", "--workload", "rate=2", "--agents", "speech-*"],
            "names no agent pattern the plan uses",
        ),
    ],
)
def test_cli_capacity_bad_input_is_one_error_line_exit_2(args, message, capsys):
    code = main(["capacity", "session_initialization", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert re.search(message, err), err
