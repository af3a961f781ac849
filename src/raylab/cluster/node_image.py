"""The node image: one AMI for every Ray node of a cluster, and a root volume it fits in (pure).

``configs/ray-cluster.yaml`` names the image by a public SSM parameter in EC2's own syntax
(``resolve:ssm:/aws/service/debian/release/12/latest/amd64``). Before `ray up`, the AWS target
resolves each reference once (``raylab.targets.aws.image``) and ``pin`` writes the concrete
``ami-...`` into every node type, so the head and every worker the autoscaler launches later boot the
same image even if the parameter moves mid-lab, and the head's role needs no SSM access. ``pin`` also
sizes the root volume: ``VolumeSize`` is never below the AMI's own root snapshot (RunInstances
refuses that with ``InvalidBlockDeviceMapping``), and the mapping must name the AMI's root device
(any other name adds a second volume and leaves the root at the snapshot's size).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from raylab.errors import RaylabError

SSM_PREFIX = "resolve:ssm:"
DEBIAN_12 = f"{SSM_PREFIX}/aws/service/debian/release/12/latest/amd64"


@dataclass(frozen=True)
class NodeImage:
    image_id: str  # ami-...
    name: str  # the AMI's name, e.g. debian-12-amd64-20261101-1920
    root_device: str  # RootDeviceName, e.g. /dev/xvda
    root_gb: int  # the root snapshot's size
    source: str  # the reference it was resolved from (resolve:ssm:... or the ami id itself)


def image_refs(cfg: Mapping[str, Any]) -> list[str]:
    """The distinct ImageId references of the node types, in order; RaylabError if one has none."""
    refs: list[str] = []
    for name, nt in (cfg.get("available_node_types") or {}).items():
        ref = ((nt or {}).get("node_config") or {}).get("ImageId")
        if not ref:
            raise RaylabError(
                f"node type {name!r} has no ImageId: Ray 2.60 would boot its Deep Learning AMI "
                "(Ubuntu 18.04, no Python for Ray 2.60, root snapshot over 100 GB)",
                f"set node_config.ImageId, e.g. {DEBIAN_12!r} as in configs/ray-cluster.yaml")
        if str(ref) not in refs:
            refs.append(str(ref))
    return refs


def pin(cfg: Mapping[str, Any], images: Mapping[str, NodeImage]) -> dict[str, Any]:
    """A copy of ``cfg`` whose node types name the resolved AMI and a root volume that fits it."""
    out = copy.deepcopy(dict(cfg))
    for name, nt in (out.get("available_node_types") or {}).items():
        nc = nt.setdefault("node_config", {})
        img = images[str(nc.get("ImageId"))]
        nc["ImageId"] = img.image_id
        bdm = nc.get("BlockDeviceMappings")
        if not bdm:
            continue  # no mapping: EC2 gives the AMI's own root volume
        root = [d for d in bdm if isinstance(d, dict) and d.get("DeviceName") == img.root_device]
        if not root:
            names = ", ".join(str(d.get("DeviceName")) for d in bdm if isinstance(d, dict))
            raise RaylabError(
                f"node type {name!r}: BlockDeviceMappings names {names} but the root device of "
                f"{img.image_id} ({img.name}) is {img.root_device}: the node would get a second volume "
                f"and an {img.root_gb} GB root",
                f"set DeviceName: {img.root_device} in configs/ray-cluster.yaml")
        ebs = root[0].setdefault("Ebs", {})
        ebs["VolumeSize"] = max(int(ebs.get("VolumeSize") or 0), img.root_gb)
    return out
