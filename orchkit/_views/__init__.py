"""Charts: tidy frames in, plotly figures out (``charts``: Gantt, makespan CDF, DAG,
utilisation; ``learning``: learning by tutor outcome), in ms, with the outcome colours
shared by every chart.

Rule: reads results, never runs anything; imports only the wings below it.
"""
