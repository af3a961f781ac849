"""What stage 6 records on a FIS target (AWS): what each drill proves and does not, and the record's
top-level form before the drills fill it in (``raylab.spot.fis.run_drills``). Pure."""

from __future__ import annotations

from typing import Any

CLAIMS = {
    "reclaim": ("proves: AWS itself sent real spot interruption notices (PT2M) to a third of the spot "
                "workers and reclaimed them while the job ran, and the head stayed; does not prove: that "
                "each node drained before it went, nor that no task was lost (the job's result and the "
                "watcher logs on the nodes say that), nor anything about AWS's real reclaim rate"),
    "capacity": ("proves: every RunInstances by the head's role in the spot subnet's AZ was refused with "
                 "InsufficientInstanceCapacity for the window, as AWS reports a real shortage; does not "
                 "prove: a real shortage (which hits one market and type, not every launch of one role), "
                 "that on-demand launched elsewhere unless on-demand workers use another AZ, nor the "
                 "guard's reaction (read it on the head: `raylab status`)"),
}


def new_record(endpoint: str, acts: bool) -> dict[str, Any]:
    """What stage 6 records on a FIS target, before the drills fill it in (its keys are pinned by a
    test; pure). ``job`` is the stress job's id, or why there is none."""
    return {"method": "fis", "endpoint": endpoint, "fis_acts": acts, "head_id": None, "fis_role": None,
            "drills": {}, "claims": CLAIMS, "job": {}}
