"""Real AMIs the rehearsal's cloud knows, as data (pure: no AWS, no moto).

Each entry says what a node booted from that image finds: the root device and the size of its root
snapshot (RunInstances refuses a smaller root volume), the login user, the ``python3`` it ships and the
PATH of its login shell (Ray's updater runs ``bash --login``), and the public SSM parameter that
names it, if any.

Where the IDs come from:
- ``dlami-ubuntu1804-v71``: Ray 2.60's ``DEFAULT_AMI`` table (``ray/autoscaler/_private/aws/config.py``),
  the image Ray boots when a node type has no ``ImageId``; 140 GB root snapshot (Ray PR 27075).
- ``al2023``: the IDs AWS published for ``al2023-ami-kernel-default-x86_64`` (2026-11-02 release), as
  recorded in moto 5.2.6's own resources (``ssm/resources/ami-amazon-linux-latest/<region>.json.gz``).
- ``debian-12``: PLAUSIBLE, NOT REAL IDs (``ami-`` + 17 hex digits, made up): Debian publishes new
  IDs with every point release and none were at hand offline. The name follows Debian's pattern.
- ``ubuntu-22.04``: PLAUSIBLE, NOT REAL IDs either (Canonical re-publishes every few weeks); the name,
  owner, root device, user and Python 3.10 are Canonical's jammy server image's. It is the image whose
  ``python3`` is the oldest Python Ray 2.60 supports: a lab run by an operator on 3.10 gets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Ami:
    key: str  # "debian-12", "ubuntu-22.04", "dlami-ubuntu1804-v71", "al2023"
    name: str  # the AMI's Name as DescribeImages shows it
    ids: Mapping[str, str]  # region -> ami id
    root_device: str  # RootDeviceName
    snapshot_gb: int  # size of the root snapshot: the smallest root volume RunInstances accepts
    user: str  # the login user of the image
    python: str  # the python3 the image ships
    path: tuple[str, ...]  # PATH of the login user's login shell
    ssm_parameter: str | None  # the public SSM parameter whose value is this AMI, if any
    owner_id: str = "amazon"  # the publishing account

    def id_in(self, region: str) -> str | None:
        return self.ids.get(region)


DEBIAN_12 = Ami(
    key="debian-12",
    name="debian-12-amd64-20261101-1920",
    ids=MappingProxyType({  # made up: see the module docstring
        "us-west-2": "ami-0d6a3f2c1b9e84f57",
        "us-east-1": "ami-04c8e1a7b35f92d06",
        "ap-northeast-2": "ami-0b7f2e91c4d5a6038",
    }),
    root_device="/dev/xvda",
    snapshot_gb=8,
    user="admin",
    python="3.11",
    path=("/usr/local/bin", "/usr/bin", "/bin", "/usr/games"),
    ssm_parameter="/aws/service/debian/release/12/latest/amd64",
    owner_id="136693071363",  # Debian's AMI publishing account
)

DLAMI_UBUNTU1804_V71 = Ami(
    key="dlami-ubuntu1804-v71",
    name="Deep Learning AMI (Ubuntu 18.04) Version 71.0",  # Ray calls it "AWS Deep Learning AMI ... V71.0"
    ids=MappingProxyType({  # Ray 2.60 DEFAULT_AMI, every region it lists
        "us-east-1": "ami-0271ce88f6c03e149",
        "us-east-2": "ami-0ce21b0ce8e0f5a37",
        "us-west-1": "ami-030896954b2b72361",
        "us-west-2": "ami-0a2b85e15b7c0ac34",
        "ca-central-1": "ami-044b98bea12677052",
        "eu-central-1": "ami-004d285ecf53fb335",
        "eu-west-1": "ami-0e17ed40febe794a6",
        "eu-west-2": "ami-0ad9e6b9d4e22df1a",
        "eu-west-3": "ami-05698775025146698",
        "sa-east-1": "ami-004b19c7ed8d790bc",
        "ap-northeast-1": "ami-03e45b1f18378ea97",
        "ap-northeast-2": "ami-095bae3e623e2ff99",
        "ap-northeast-3": "ami-02fd0ba69c1ef37ad",
        "ap-southeast-1": "ami-03ef1223872072e95",
        "ap-southeast-2": "ami-0bcf4f75e44e0a866",
    }),
    root_device="/dev/sda1",
    snapshot_gb=140,
    user="ubuntu",
    python="3.6",  # Ubuntu 18.04's python3; conda envs sit under ~/anaconda3/envs, not on PATH
    path=("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin",
          "/usr/games", "/usr/local/games", "/snap/bin"),
    ssm_parameter=None,
    owner_id="898082745236",  # the Deep Learning AMIs' publishing account
)

UBUNTU_2204 = Ami(
    key="ubuntu-22.04",
    name="ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20261105",
    ids=MappingProxyType({  # made up: see the module docstring
        "us-west-2": "ami-05e2a7c19d8b4f360",
        "us-east-1": "ami-0a91d4c6e2f7b3815",
        "ap-northeast-2": "ami-0c3b8f5d7e1a29c64",
    }),
    root_device="/dev/sda1",
    snapshot_gb=8,
    user="ubuntu",
    python="3.10",  # jammy's python3 (3.10.12)
    path=("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin",
          "/usr/games", "/usr/local/games", "/snap/bin"),
    ssm_parameter="/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id",
    owner_id="099720109477",  # Canonical's AMI publishing account
)

AL2023 = Ami(
    key="al2023",
    name="al2023-ami-2023.12.20261102.0-kernel-6.18-x86_64",
    ids=MappingProxyType({  # AWS's published IDs, as recorded in moto 5.2.6
        "us-west-2": "ami-09f02015912e773f7",
        "us-east-1": "ami-0c230065b91270bc6",
        "ap-northeast-2": "ami-05becc39a92b78fa5",
    }),
    root_device="/dev/xvda",
    snapshot_gb=8,
    user="ec2-user",
    python="3.9",
    path=("/home/ec2-user/.local/bin", "/home/ec2-user/bin", "/usr/local/bin", "/usr/bin",
          "/usr/local/sbin", "/usr/sbin"),
    ssm_parameter="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
    owner_id="137112412989",  # Amazon's AMI publishing account
)

CATALOG: tuple[Ami, ...] = (DEBIAN_12, UBUNTU_2204, DLAMI_UBUNTU1804_V71, AL2023)
REGIONS: tuple[str, ...] = ("us-west-2", "us-east-1", "ap-northeast-2")  # every AMI exists in these


def by_id(ami_id: str) -> Ami | None:
    """The catalog AMI with this ID in any region, or None."""
    return next((a for a in CATALOG if ami_id in a.ids.values()), None)


def by_key(key: str) -> Ami:
    """The catalog AMI named ``key``; KeyError names the known keys."""
    for a in CATALOG:
        if a.key == key:
            return a
    raise KeyError(f"no AMI {key!r} in the rehearsal catalog (known: {', '.join(a.key for a in CATALOG)})")
