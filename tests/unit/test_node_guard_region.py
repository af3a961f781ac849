"""Finding 10: the capacity guard counts instances in the cluster's own region, never a default one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raylab.spot import guard


class _Stop(Exception):
    pass


def _config(tmp_path: Path, region: str | None) -> Path:
    p = tmp_path / "ray_bootstrap_config.yaml"
    provider = f"provider:\n  type: aws\n  region: {region}\n" if region else ""
    p.write_text("cluster_name: raylab-kim\n" + provider)
    return p


def _main_region(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> str:
    """The region main() builds its EC2 client for (stopped right there, nothing else runs)."""
    import boto3

    seen: dict[str, Any] = {}

    def client(service: str, **kw: Any) -> Any:
        seen.update(kw, service=service)
        raise _Stop

    monkeypatch.setattr(boto3, "client", client)
    with pytest.raises(_Stop):
        guard.main(argv)
    assert seen["service"] == "ec2"
    return str(seen["region_name"])


@pytest.mark.parametrize(("flag", "in_config", "expected"), [
    (None, "eu-central-1", "eu-central-1"),  # the cluster's own region, from the YAML the autoscaler reads
    ("ap-south-1", "eu-central-1", "ap-south-1"),  # an explicit --region wins
    (None, None, None),  # nothing known: no guessing
])
def test_cluster_region(tmp_path: Path, flag: str | None, in_config: str | None,
                        expected: str | None) -> None:
    assert guard.cluster_region(flag, _config(tmp_path, in_config)) == expected


def test_guard_on_the_head_watches_the_clusters_region(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    argv = ["--config", str(_config(tmp_path, "ap-southeast-2")), "--cluster-name", "raylab-kim",
            "--monitor-log", str(tmp_path / "monitor.log")]
    assert _main_region(monkeypatch, argv) == "ap-southeast-2"


def test_guard_without_a_region_refuses_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import boto3

    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setattr(boto3, "client", lambda *a, **kw: (_ for _ in ()).throw(_Stop()))  # never loop
    with pytest.raises(SystemExit) as e:
        guard.main(["--config", str(_config(tmp_path, None)), "--cluster-name", "raylab-kim",
                    "--monitor-log", str(tmp_path / "monitor.log")])
    assert e.value.code == 2 and "no region" in capsys.readouterr().err
