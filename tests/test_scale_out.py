"""Studies beyond one machine (SPEC §20): every study kind (independent runs, workload
replications, sweep cells, capacity candidates, tune trials) on a process pool, a Dask
LocalCluster and Ray, with 1, 2 and 4 workers, gives the frames of one process; tune's
``n_jobs`` and ``storage``; the message of a pool or cluster started without the
``__main__`` guard."""

from __future__ import annotations

import concurrent.futures as cf
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import pandas as pd
import pytest

import orchkit as ok

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(180)

MODELS = {
    "agents": {
        "fast-*": {
            "latency": {"dist": "lognormal", "median": 50, "p95": 200},
            "error": 0.15,
            "hang": 0.02,
            "capacity": 4,
        },
        "slow": {"latency": {"dist": "gamma", "mean": 120, "cv": 0.8}, "error": 0.1, "capacity": 2},
    }
}


def _step(sid, agent, deps=(), **kw):
    return {"id": sid, "agentId": agent, "action": sid, "dependencies": list(deps), **kw}


PLAN = {  # retries with jitter, timeouts, hangs, a deadline: every draw a run can make
    "id": "scale",
    "parallel": True,
    "timeout": 900,
    "steps": [
        _step(
            "a",
            "fast-1",
            timeout=300,
            retryPolicy={"maxRetries": 2, "backoffMs": 20, "jitter": 0.5},
        ),
        _step("b", "fast-2", timeout=250, retryPolicy={"maxRetries": 1, "backoffMs": 10}),
        _step("c", "slow", deps=["a", "b"], retryPolicy={"maxRetries": 1, "backoffMs": 5}),
    ],
}
WORK = ok.Workload(rate_per_s=8, horizon_ms=60_000)
SPACE = {"steps.a.timeout": ok.Float(100, 800), "agents.slow.capacity": ok.Int(1, 4)}


def independent_runs(executor):
    mc = ok.monte_carlo(
        PLAN,
        MODELS,
        runs=300,
        seed=5,
        method="simpy",
        chunk_runs=64,
        progress=False,
        executor=executor,
    )
    return mc.runs, mc.spans, mc.breakers


def replications(executor):
    mc = ok.monte_carlo(
        PLAN, MODELS, seed=5, workload=WORK, replications=4, progress=False, executor=executor
    )
    return mc.runs, mc.spans, mc.summary().metrics


def sweep_cells(executor):
    grid = {"steps.a.timeout": [200, 400], "agents.slow.capacity": [1, 2]}
    frame = ok.sweep(
        PLAN, MODELS, grid, runs=200, seed=5, method="simpy", progress=False, executor=executor
    )
    return (frame.frame,)


def capacity_candidates(executor):
    cp = ok.capacity_for(
        PLAN,
        MODELS,
        slo={"makespan_p95_ms": 700},
        workload=WORK,
        seed=5,
        progress=False,
        executor=executor,
    )
    assert cp.feasible and len(cp.candidates) >= 5  # greedy, then trimmed by bisection
    return cp.table(), cp.study.runs, cp.study.spans, cp.unlimited.metrics


def tune_trials(executor):
    result = ok.tune(
        PLAN,
        MODELS,
        SPACE,
        minimize="makespan_p95_ms",
        trials=8,
        runs=200,
        seed=5,
        progress=False,
        executor=executor,
        n_jobs=4,
    )
    return (result.trials,)


KINDS = {
    "independent runs": independent_runs,
    "replications": replications,
    "sweep cells": sweep_cells,
    "capacity candidates": capacity_candidates,
    "tune trials": tune_trials,
}


def assert_same(expected: tuple, got: tuple) -> None:
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        pd.testing.assert_frame_equal(a, b)


@pytest.fixture(scope="module")
def single_process():
    """Each kind's frames in this process (tune's 4 trials at a time, one after another)."""
    out = {kind: fn(None) for kind, fn in KINDS.items() if kind != "tune trials"}
    with cf.ThreadPoolExecutor(1) as one:  # one thread of this process
        out["tune trials"] = tune_trials(one)
    return out


@pytest.fixture(scope="module")
def dask_client():
    """One Dask process cluster of 4 single-threaded workers for the module; n workers:
    an executor whose tasks may only go to n of them."""
    pytest.importorskip("distributed")
    with ok.executors.dask(n_workers=4, threads_per_worker=1) as client:
        yield client


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray of 4 CPUs for the module (no auth token written under $HOME, its
    session files in a temporary directory, removed); n workers: tasks of 4/n CPUs."""
    if not _installed("ray"):
        pytest.skip("ray is not installed (pip install ray: its wheels exist for Python < 3.14)")
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    tmp = tempfile.mkdtemp(prefix="okray")  # short: Ray's socket paths must fit 107 bytes
    owner = ok.executors.ray(num_cpus=4, _temp_dir=tmp)
    try:
        yield owner
    finally:
        owner.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("where", ["process pool", "dask", "ray"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_study_kind_gives_the_single_process_frames(
    request, single_process, kind, where, workers
):
    if where == "process pool":
        with cf.ProcessPoolExecutor(workers) as pool:
            got = KINDS[kind](pool)
    elif where == "dask":
        client = request.getfixturevalue("dask_client")
        chosen = sorted(client.scheduler_info()["workers"])[:workers]
        got = KINDS[kind](client.get_executor(workers=chosen))
    else:
        request.getfixturevalue("ray_cluster")
        got = KINDS[kind](ok.executors.ray(task_options={"num_cpus": 4 // workers}))
    assert_same(single_process[kind], got)


def test_a_dask_client_and_the_processes_shorthand_are_accepted(single_process, dask_client):
    assert_same(single_process["sweep cells"], sweep_cells(dask_client))
    assert_same(single_process["replications"], replications("processes"))


def test_the_readme_cluster_example_runs_on_local_clusters(dask_client, ray_cluster):
    """The scale-out guide's block (docs/guides/scale-out.md), with the scheduler's address of
    a local Dask cluster and the running local Ray in place of the clusters of several
    machines (and fewer runs)."""
    guide = (ROOT / "docs" / "guides" / "scale-out.md").read_text(encoding="utf-8")
    rest = guide[guide.index("# Beyond one machine") :]
    block = rest[rest.index("```python\n") + 10 : rest.index("```\n", rest.index("```python"))]
    address = dask_client.scheduler.address
    assert '"tcp://scheduler:8786"' in block and 'ok.executors.ray("auto")' in block
    block = block.replace('"tcp://scheduler:8786"', repr(address))
    block = block.replace('ok.executors.ray("auto")', "ok.executors.ray()")
    block = block.replace("runs=20_000", "runs=500")
    ns = {"ok": ok, "plan": ok.examples.plan("parallel_analysis"), "models": ok.examples.models()}
    exec(compile(block, "scale-out.md", "exec"), ns)
    expected = ok.sweep(ns["plan"], ns["models"], ns["grid"], runs=500, progress=False)
    pd.testing.assert_frame_equal(ns["frame"].frame, expected.frame)


def test_an_executor_of_another_kind_is_refused_naming_the_accepted_ones():
    with pytest.raises(TypeError, match="concurrent.futures.Executor.*Dask.*executors.ray"):
        independent_runs(42)
    with pytest.raises(ValueError, match="'processes'"):
        independent_runs("threads")


def test_capacity_for_runs_the_next_candidates_ahead_but_records_the_same_search(single_process):
    """While the search waits for a study, the ones it may ask for next run on the free
    workers: more studies run than the search records, and the record is unchanged."""

    class Counting(cf.ProcessPoolExecutor):
        submitted = 0

        def submit(self, fn, /, *args, **kwargs):
            Counting.submitted += 1
            return super().submit(fn, *args, **kwargs)

    with Counting(4) as pool:
        got = capacity_candidates(pool)
    assert_same(single_process["capacity candidates"], got)
    assert Counting.submitted > len(got[0])


def test_a_warning_raised_on_a_worker_reaches_the_caller():
    overloaded = {
        "agents": {**MODELS["agents"], "slow": {**MODELS["agents"]["slow"], "capacity": 1}}
    }
    fast = ok.Workload(rate_per_s=20, horizon_ms=5_000)
    with cf.ProcessPoolExecutor(2) as pool, pytest.warns(ok.OverloadWarning, match="agent 'slow'"):
        ok.sweep(
            PLAN,
            overloaded,
            {"steps.a.timeout": [200, 400]},
            workload=fast,
            progress=False,
            executor=pool,
        )


# ------------------------------------------------------------------ tune: n_jobs, storage


def _tune(**kw):
    kw = {
        "minimize": "makespan_p95_ms",
        "trials": 12,
        "runs": 200,
        "seed": 3,
        "progress": False,
        **kw,
    }
    return ok.tune(PLAN, MODELS, SPACE, **kw).trials


def test_tune_n_jobs_1_on_an_executor_is_the_sequential_search():
    with cf.ProcessPoolExecutor(2) as pool:
        pd.testing.assert_frame_equal(_tune(), _tune(executor=pool, n_jobs=1))


def test_tune_trials_across_n_jobs_what_optuna_keeps_and_what_it_does_not():
    """Random and grid samplers: the same trials whatever n_jobs. TPE: the same first
    (random, n_startup_trials = 3 here) trials, then its choices depend on the batch."""
    with cf.ThreadPoolExecutor(1) as one:
        for sampler in ("random", "grid"):
            space = (
                SPACE
                if sampler == "random"
                else {"agents.slow.capacity": ok.Int(1, 4), "agents.fast-*.capacity": ok.Int(1, 2)}
            )
            a = ok.tune(
                PLAN,
                MODELS,
                space,
                minimize="makespan_p95_ms",
                trials=8,
                runs=200,
                seed=3,
                sampler=sampler,
                progress=False,
            ).trials
            b = ok.tune(
                PLAN,
                MODELS,
                space,
                minimize="makespan_p95_ms",
                trials=8,
                runs=200,
                seed=3,
                sampler=sampler,
                progress=False,
                executor=one,
                n_jobs=3,
            ).trials
            pd.testing.assert_frame_equal(a, b)
        one_at_a_time, four = _tune(sampler="tpe"), _tune(sampler="tpe", executor=one, n_jobs=4)
    pd.testing.assert_frame_equal(one_at_a_time.head(3), four.head(3))
    assert not one_at_a_time.equals(four)  # after its startup TPE saw other trials


def test_tune_n_jobs_alone_runs_a_process_pool_with_the_same_trials():
    with cf.ThreadPoolExecutor(1) as one:
        expected = _tune(executor=one, n_jobs=2, trials=4)
    pd.testing.assert_frame_equal(expected, _tune(n_jobs=2, trials=4))


def test_tune_records_its_trials_in_a_journal_file_and_a_later_call_adds_to_them(tmp_path):
    optuna = pytest.importorskip("optuna")
    journal = tmp_path / "tune.log"
    with cf.ProcessPoolExecutor(2) as pool:
        first = _tune(executor=pool, n_jobs=2, trials=4, storage=journal)
        pd.testing.assert_frame_equal(first, _tune(executor=pool, n_jobs=2, trials=4))
        more = _tune(executor=pool, n_jobs=2, trials=4, storage=journal)
    assert more["trial"].tolist() == list(range(8))
    pd.testing.assert_frame_equal(more.head(4), first, check_dtype=False)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    (summary,) = optuna.get_all_study_summaries(storage)
    assert summary.study_name.startswith("orchkit-scale-") and summary.n_trials == 8


def test_tune_storage_on_redis(redis_server):
    optuna = pytest.importorskip("optuna")
    name = f"scale-{os.getpid()}"
    with cf.ThreadPoolExecutor(1) as one:
        frame = _tune(executor=one, n_jobs=2, trials=4, storage=redis_server.url, study_name=name)
        pd.testing.assert_frame_equal(frame, _tune(executor=one, n_jobs=2, trials=4))
    with warnings.catch_warnings():  # "JournalRedisBackend is experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        backend = optuna.storages.journal.JournalRedisBackend(redis_server.url)
    study = optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.user_attrs["orchkit_row"]["trial"] == t.number for t in study.trials)


SHARED = """
import sys
import optuna
import orchkit as ok
sys.path.insert(0, {tests!r})
from test_scale_out import MODELS, PLAN, SPACE

if __name__ == "__main__":
    result = ok.tune(
        PLAN, MODELS, SPACE, minimize="makespan_p95_ms", trials=5, runs=200, seed=3,
        progress=False, storage={journal!r}, study_name="shared",
        sampler=optuna.samplers.RandomSampler(seed=int(sys.argv[1])),
    )
    print("trials", len(result.trials))
"""


def test_two_tune_callers_share_one_study_through_the_storage(tmp_path):
    """Two processes (as on two machines) add their trials to one study: each sees the
    union; which trial gets which number depends on timing (not reproducible)."""
    script = tmp_path / "caller.py"
    journal = tmp_path / "shared.log"
    script.write_text(SHARED.format(tests=str(ROOT / "tests"), journal=str(journal)))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(k)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (1, 2)
    ]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert all(int(out.split()[-1]) >= 5 for out, _ in outs)  # its own, and the other's so far
    frame = _tune(trials=1, storage=journal, study_name="shared", sampler="random")
    assert frame["trial"].tolist() == list(range(11))


# ------------------------------------------------------------------ the __main__ guard

UNGUARDED_POOL = """
import multiprocessing, concurrent.futures as cf
import orchkit as ok
pool = cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
ok.monte_carlo(ok.examples.plan("parallel_analysis"), ok.examples.models(), runs=200,
               method="simpy", chunk_runs=64, executor=pool, progress=False)
print("done")
"""

GUARDED_POOL = """
import multiprocessing, concurrent.futures as cf
import orchkit as ok

if __name__ == "__main__":
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        mc = ok.monte_carlo(ok.examples.plan("parallel_analysis"), ok.examples.models(),
                            runs=200, method="simpy", chunk_runs=64, executor=pool, progress=False)
    print("done", len(mc.runs))
"""

UNGUARDED_DASK = """
import orchkit as ok
client = ok.executors.dask(n_workers=1)
ok.sweep(ok.examples.plan("parallel_analysis"), ok.examples.models(),
         {"steps.*.timeout": [1000, 2000]}, runs=100, executor=client, progress=False)
print("done")
"""


def _script(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "study.py"
    path.write_text(textwrap.dedent(text))
    return subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )


@pytest.mark.parametrize("text", [UNGUARDED_POOL, UNGUARDED_DASK], ids=["spawn pool", "dask"])
def test_a_pool_or_cluster_started_without_the_main_guard_names_the_fix(tmp_path, text):
    out = _script(tmp_path, text)
    assert out.returncode == 1 and "done" not in out.stdout
    # (multiprocessing's resource tracker may warn of leaked semaphores after the error)
    lines = [
        line
        for line in out.stderr.strip().splitlines()
        if "resource_tracker" not in line and not line.strip().startswith("warnings.warn(")
    ]
    last = lines[-1]
    assert last.startswith("orchkit._studies.parallel.GuardError:"), out.stderr[-3000:]
    assert 'under `if __name__ == "__main__":`' in last


def test_with_the_guard_the_same_spawned_pool_runs(tmp_path):
    out = _script(tmp_path, GUARDED_POOL)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["done", "200"]
