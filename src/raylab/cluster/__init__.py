"""The cluster YAML (a piece): render (``config``), check (``validate``, ``rules_ec2``, ``findings``),
edit keeping comments (``edit``), the local config form (``local_form``), Ray's view (``status``),
instance types, and the vocabulary spelled once (``vocab``: markets, quota codes, Ray's defaults).

May import: other pieces and the base (state, ui, errors, labid, procs, context, checks); never
targets, stages or the CLI.
"""
