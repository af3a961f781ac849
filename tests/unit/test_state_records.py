"""Typed state records read what older raylab versions wrote, and say so when nothing is there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raylab.errors import RaylabError
from raylab.state import ClusterRecord, State


def test_an_older_cluster_section_is_read_with_its_target_keys_left_aside(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"cluster": {
        "cluster_name": "raylab-kim", "config_path": "/w/cluster.yaml", "scenario": "spot", "scale": "4",
        "head_pid": 123, "temp_root": "/tmp/rl-x", "ports": {"gcs": 6390}}}))  # local's own keys
    rec = State(tmp_path).cluster()
    assert rec == ClusterRecord(cluster_name="raylab-kim", config_path="/w/cluster.yaml", scenario="spot",
                                scale=4)
    assert rec.node_python is None and rec.required() is rec


@pytest.mark.parametrize("section", [{}, {"cluster_name": "raylab-kim"}, {"config_path": "/w/c.yaml"}])
def test_no_recorded_cluster_is_one_clear_error(tmp_path: Path, section: dict[str, str]) -> None:
    State(tmp_path).put("cluster", section)
    with pytest.raises(RaylabError) as e:
        State(tmp_path).cluster().required()
    assert e.value.one_line() == ("no running cluster recorded in .raylab/ "
                                  "(run `raylab up` first (stages 1-3))")


def test_the_network_section_keeps_the_stacks_outputs_by_their_cloudformation_names(tmp_path: Path) -> None:
    state = State(tmp_path)
    assert state.network().bastion_public_ip == ""  # stage 1 has not run
    state.put("network", {"VpcId": "vpc-1", "BastionInstanceId": "i-b", "BastionPublicIp": "203.0.113.7",
                          "PrivateSubnetIds": "subnet-a,subnet-b", "stack_name": "raylab-kim-network"})
    net = state.network()
    assert (net.vpc_id, net.bastion_instance_id, net.bastion_public_ip, net.stack_name) == (
        "vpc-1", "i-b", "203.0.113.7", "raylab-kim-network")
    assert dict(net.outputs) == {"VpcId": "vpc-1", "BastionInstanceId": "i-b",  # what stage 3 renders from
                                 "BastionPublicIp": "203.0.113.7", "PrivateSubnetIds": "subnet-a,subnet-b"}
