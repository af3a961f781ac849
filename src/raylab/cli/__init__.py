"""The CLI (top layer): one small file per command, no logic; each turns options into a Context
(``options.make_context``) and calls the stages or pieces.

May import: everything below it; targets only to pick the target (``targets.get_target``).
"""
