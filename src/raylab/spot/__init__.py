"""Spot on Ray: the interruption watcher (every worker node) and the capacity guard (next to the autoscaler).

- ``imds_watcher``: polls IMDSv2 for spot interruption / rebalance notices and drains its Ray node.
- ``guard``: sees spot launch failures (InsufficientInstanceCapacity, ...) and caps the spot node
  type in the autoscaling YAML so the burst goes to on-demand, restoring it after a cooldown.
- ``guard_status``: what `raylab status` reads of the guard's events and state (operator side only).
- ``metrics``: tasks_retried, nodes_reclaimed, nodes_replaced, capacity_events for stress results.
- ``chaos``: the drills (capacity windows, reclaims); ``chart``: the drill charts.
- ``fis``: stage 6 on AWS, both drills as FIS experiments (templates, waits, checks, what they prove).

A piece: may import other pieces and the base; never targets, stages or the CLI. ``guard.py`` and
``imds_watcher.py`` are also copied to the nodes as single files, so they import nothing of raylab.
"""

GUARD = "spot-guard"  # the capacity guard's name in raylab's process records (stage 6 starts it)
