"""Spot on Ray: the interruption watcher (every worker node) and the capacity guard (next to the autoscaler).

- ``imds_watcher``: polls IMDSv2 for spot interruption / rebalance notices and drains its Ray node.
- ``guard``: sees spot launch failures (InsufficientInstanceCapacity, ...) and caps the spot node
  type in the autoscaling YAML so the burst goes to on-demand, restoring it after a cooldown.
- ``metrics``: tasks_retried, nodes_reclaimed, nodes_replaced, capacity_events for stress results.
"""

GUARD = "spot-guard"  # the capacity guard's name in raylab's process records (stage 6 starts it)
