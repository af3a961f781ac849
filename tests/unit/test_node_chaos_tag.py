"""Finding 14: the reclaim drill never picks the head, read by Ray's own node-kind tag."""

from __future__ import annotations

from ray.autoscaler.tags import TAG_RAY_NODE_KIND, TAG_RAY_USER_NODE_TYPE

from raylab.spot import chaos

CL = "raylab-t1"


def _ray_tagged(iid: str, kind: str) -> dict:
    """An instance tagged exactly as Ray 2.60's AWS node provider tags it (no raylab-only tags)."""
    return {"id": iid, "state": "running", "market": "spot",
            "tags": {"ray-cluster-name": CL, TAG_RAY_NODE_KIND: kind,
                     TAG_RAY_USER_NODE_TYPE: "ray.worker.spot"}}


def test_reclaim_skips_a_spot_head_tagged_by_ray() -> None:
    xs = [_ray_tagged("i-1", "head"), _ray_tagged("i-2", "worker"), _ray_tagged("i-3", "worker")]
    assert [i["id"] for i in chaos.reclaimable(xs, CL)] == ["i-2", "i-3"]
    assert chaos.RAY_NODE_KIND_TAG == TAG_RAY_NODE_KIND == "ray-node-type"
