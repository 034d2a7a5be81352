"""Remake the site's pictures from the shipped examples (not run by the build):

    .venv/bin/python docs/make_images.py      # needs the [notebook] extra (kaleido) + chromium

docs/images/gantt.png: one simulated run of the seed's parallel-analysis plan;
docs/images/makespan.png: that plan as it ships against a 12 s tutor timeout, 10,000 runs
each, percentiles with their 95% intervals.
"""

from __future__ import annotations

from pathlib import Path

import orchkit as ok

IMAGES = Path(__file__).resolve().parent / "images"


def main() -> None:
    plan = ok.examples.plan("parallel_analysis")
    models = ok.examples.models()
    run = ok.simulate(plan, models, seed=1)
    fig = ok.gantt(run, plan=plan)
    fig.update_layout(title="One simulated run of the parallel-analysis plan", margin_t=60)
    fig.write_image(IMAGES / "gantt.png", width=1100, height=380, scale=2)
    tuned = plan.with_values({"steps.tutor_analysis.timeout": 12_000})
    studies = {
        "as shipped": ok.monte_carlo(plan, models, runs=10_000, seed=1, progress=False),
        "tutor timeout 12 s": ok.monte_carlo(tuned, models, runs=10_000, seed=1, progress=False),
    }
    fig = ok.makespan_chart(studies)
    fig.update_layout(
        title="10,000 simulated runs: as shipped, and a 12 s tutor timeout", margin_t=60
    )
    fig.write_image(IMAGES / "makespan.png", width=1100, height=460, scale=2)


if __name__ == "__main__":
    main()
