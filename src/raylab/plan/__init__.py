"""`raylab plan` (a piece): the forecast runs Ray 2.60's own autoscaler on a simulated cloud
(``forecast``, ``sim``), over typed records (``model``) read from a cluster YAML (``inputs``), with
cost (``cost``), the JSON answer (``summary``) and the human one (``render``).

May import: other pieces (``cluster``) and the base; never targets, stages or the CLI.
"""
