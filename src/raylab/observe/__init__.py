"""Watching a run: the timeline (JSON lines), the live view, the chart, the stress job runner.

Modules: ``timeline`` (records and pure summaries), ``sources`` (Ray status, EC2, cloud events),
``job`` (the Ray Job), ``run`` (one observed stress run), ``live`` and ``chart``.

A piece: may import other pieces and the base; never targets, stages or the CLI.
"""
