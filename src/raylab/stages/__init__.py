"""The numbered lab stages (top layer under the CLI). Numbers are the ones the trainee guide
(docs/lab/ko/) uses; every stage is described once, in ``registry.py``, and its code lives in
``stage<N>_<name>.py`` with ``apply`` and ``verify`` (see ``base.py``).

May import: targets, pieces (cluster, aws, spot, plan, observe, datajob, iac) and the base. Nothing
below imports a stage. The registry's names are re-exported here for the stage modules.
"""

from __future__ import annotations

from raylab.stages.registry import BY_NAME, BY_NUMBER, LAB_STAGES, STAGES, UP_STAGES, StageInfo, find, load

__all__ = ["BY_NAME", "BY_NUMBER", "LAB_STAGES", "STAGES", "UP_STAGES", "StageInfo", "find", "load"]
