"""The CLI (top layer): one small file per command, no logic; each checks its options, turns them
into a Context carrying a typed ``raylab.options.LabOptions`` (``options.make_context``; the shared
flags are declared once there, ``@takes_shared``) and calls the stages or pieces.

May import: everything below it; targets only to pick the target (``targets.get_target``).
"""
