"""Resolve the node image on the account, once per `ray up` (see raylab.cluster.node_image).

``resolve:ssm:<name>`` is read with SSM GetParameter, then DescribeImages gives the AMI's root
device and the size of its root snapshot. An ``ami-...`` is described as it is.
"""

from __future__ import annotations

from typing import Any

from raylab.cluster.node_image import SSM_PREFIX, NodeImage, image_refs, pin
from raylab.errors import RaylabError


def resolve(ssm: Any, ec2: Any, ref: str) -> NodeImage:
    from botocore.exceptions import ClientError

    ami = ref
    try:
        if ref.startswith(SSM_PREFIX):
            ami = ssm.get_parameter(Name=ref[len(SSM_PREFIX):])["Parameter"]["Value"]
        images = ec2.describe_images(ImageIds=[ami]).get("Images") or []
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "?")
        raise RaylabError(f"cannot resolve the node image {ref!r} ({code}): {e}",
                          "check the region and the ImageId in configs/ray-cluster.yaml") from e
    if not images:
        raise RaylabError(f"the node image {ami!r} (from {ref!r}) does not exist in this region",
                          "use an AMI of this region, or a public SSM parameter (resolve:ssm:...)")
    img = images[0]
    root_device = img.get("RootDeviceName", "")
    sizes = [m["Ebs"]["VolumeSize"] for m in img.get("BlockDeviceMappings", [])
             if m.get("DeviceName") == root_device and "VolumeSize" in m.get("Ebs", {})]
    if not sizes:
        raise RaylabError(f"the node image {ami} ({img.get('Name')}) has no EBS root volume",
                          "use an EBS-backed AMI")
    return NodeImage(image_id=ami, name=str(img.get("Name", "")), root_device=root_device,
                     root_gb=int(sizes[0]), source=ref)


def pin_node_images(cfg: dict[str, Any], ssm: Any, ec2: Any) -> dict[str, Any]:
    """``cfg`` with one concrete AMI per image reference and root volumes that fit it."""
    return pin(cfg, {ref: resolve(ssm, ec2, ref) for ref in image_refs(cfg)})
