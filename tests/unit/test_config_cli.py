"""`raylab config check` and `raylab config render` through the real CLI: exit codes, exact lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from raylab.cluster.config import dump_yaml, render
from tests.conftest import ROOT, json_out, run_cli
from tests.unit.test_config_rules import OUTPUTS

NT = "available_node_types"
NO_AWS = {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "testing",
          "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-west-2"}


@pytest.fixture(scope="module")
def good() -> dict[str, Any]:
    return render(target="aws", scenario="spot", lab="kim", outputs=OUTPUTS)


def write(tmp_path: Path, cfg: dict[str, Any] | str, name: str = "cluster.yaml") -> Path:
    p = tmp_path / name
    p.write_text(cfg if isinstance(cfg, str) else dump_yaml(cfg))
    return p


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_clean_file_exits_0(tmp_path: Path, good: dict[str, Any]) -> None:
    f = write(tmp_path, good)
    p = run_cli("config", "check", str(f), env=NO_AWS)
    assert p.returncode == 0, p.stderr
    assert lines(p.stderr) == [f"✓ {f}: no findings"]


def test_one_error_exact_line_and_exit_2(tmp_path: Path, good: dict[str, Any]) -> None:
    f = write(tmp_path, {**good, "target_utilization_fraction": 0.8})
    p = run_cli("config", "check", str(f), env=NO_AWS)
    assert p.returncode == 2
    assert lines(p.stderr) == [
        "ERROR target_utilization_fraction: removed in Ray 2.x and rejected by its schema: the autoscaler "
        "no longer aims at a utilization fraction, it sizes the cluster to the resources queued tasks and "
        "actors ask for (delete it and set upscaling_speed instead: each autoscaler loop may add up to "
        "upscaling_speed x the running nodes of a type, at least 1; 1.0 is the default)",
        f"{f}: 1 error(s), 0 warning(s)",
    ]
    assert p.stdout == ""


def test_warnings_only_exit_0(tmp_path: Path, good: dict[str, Any]) -> None:
    cfg = json.loads(json.dumps(good))
    cfg["provider"]["cache_stopped_nodes"] = True
    f = write(tmp_path, cfg)
    p = run_cli("config", "check", str(f), env=NO_AWS)
    assert p.returncode == 0, p.stderr
    assert lines(p.stderr) == [
        "WARN provider.cache_stopped_nodes: true with spot workers ray.worker.spot: idle spot nodes are "
        "stopped instead of terminated, and a stopped spot instance is not reused reliably "
        "(set provider.cache_stopped_nodes: false)",
        f"{f}: 0 error(s), 1 warning(s)",
    ]
    q = run_cli("config", "check", str(f), "--quiet", env=NO_AWS)
    assert (q.returncode, q.stderr) == (0, "")


def test_typo_in_provider_and_unknown_instance_type(tmp_path: Path, good: dict[str, Any]) -> None:
    cfg = json.loads(json.dumps(good))
    cfg["provider"]["cache_stoped_nodes"] = cfg["provider"].pop("cache_stopped_nodes")
    cfg[NT]["ray.worker.spot"]["node_config"]["InstanceType"] = "c7i.4xlarg"
    f = write(tmp_path, cfg)
    p = run_cli("config", "check", str(f), env=NO_AWS)
    assert p.returncode == 2
    got = lines(p.stderr)
    assert got[:2] == [
        "ERROR provider.cache_stoped_nodes: unknown key 'cache_stoped_nodes' in provider: Ray ignores it "
        "silently (did you mean 'cache_stopped_nodes'?)",
        "ERROR available_node_types[ray.worker.spot].node_config.InstanceType: unknown EC2 instance type "
        "'c7i.4xlarg' (did you mean 'c7i.4xlarge'?)",
    ]
    # the typo also means cache_stopped_nodes is unset, so Ray's default (true) applies to spot
    assert got[2].startswith("WARN provider.cache_stopped_nodes: not set, so Ray's default true applies")
    assert got[3] == f"{f}: 2 error(s), 1 warning(s)"


@pytest.mark.parametrize(("content", "expected"), [
    ("", "ERROR (file): the file is empty (no YAML document) (start from configs/ray-cluster.yaml)"),
    ("max_workers: [1, 2\n",
     "ERROR (file): YAML syntax error at line 2, column 1: expected ',' or ']', but got "
     "'<stream end>' (fix the YAML (indentation, quotes, colons), then check again)"),
    ("max_workers: 3\nmax_workers: 4\n",
     "ERROR (file): YAML syntax error at line 2, column 1: duplicate key "
     "'max_workers' (first at line 1): YAML keeps only the last one (fix the "
     "YAML (indentation, quotes, colons), then check again)"),
], ids=["empty", "syntax", "duplicate key"])
def test_file_level_errors(tmp_path: Path, content: str, expected: str) -> None:
    f = write(tmp_path, content)
    p = run_cli("config", "check", str(f))
    assert p.returncode == 2
    assert lines(p.stderr)[0] == expected
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize(("content", "expected"), [
    ("# only a comment\n\n", "ERROR (file): the file is empty (no YAML document) "
                             "(start from configs/ray-cluster.yaml)"),
    ("- a\n- b\n", "ERROR (file): the top level is a list, not a mapping (a cluster YAML is a mapping of "
                   "keys such as cluster_name, provider, ...)"),
    ("a: !!python/object:os.system x\n", "ERROR (file): YAML syntax error at line 1, column 4: could not "
                                         "determine a constructor for the tag"),
], ids=["comments only", "a list", "unsafe tag"])
def test_file_level_errors_in_process(tmp_path: Path, content: str, expected: str) -> None:
    from raylab.cluster.validate import check_file

    assert check_file(write(tmp_path, content))[0].line().startswith(expected)


def test_missing_file_directory_and_binary_never_trace(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage")
    for arg, first in ((missing, f"ERROR (file): no such file: '{missing}' (check the path)"),
                       (tmp_path, f"ERROR (file): '{tmp_path}' is a directory (pass the cluster YAML file "
                                  "itself, e.g. configs/ray-cluster.yaml)"),
                       (binary, f"ERROR (file): cannot read '{binary}'")):
        p = run_cli("config", "check", str(arg))
        assert p.returncode == 2, p.stderr
        assert lines(p.stderr)[0].startswith(first)
        assert "Traceback" not in p.stderr


def test_json_is_one_object_on_stdout(tmp_path: Path, good: dict[str, Any]) -> None:
    f = write(tmp_path, {**good, "upscaling_speed": -1})
    p = run_cli("config", "check", str(f), "--json", env=NO_AWS)
    assert p.returncode == 2
    out = json_out(p)
    assert (out["ok"], out["errors"], out["warnings"], out["target"]) == (False, 1, 0, "local")
    assert out["findings"] == [{"level": "ERROR", "path": "upscaling_speed", "message": "-1 is negative",
                                "hint": "write a number >= 0, e.g. 1.0", "check": "numbers"}]


def test_the_lab_template_checks_clean_but_for_its_placeholders() -> None:
    p = run_cli("config", "check", "configs/ray-cluster.yaml", "--json")
    assert p.returncode == 0, p.stderr
    assert [f["check"] for f in json_out(p)["findings"]] == ["placeholders"]


# --- --target aws: EC2's describe_instance_types, on loopback only -------------------------------
def test_target_aws_asks_ec2_through_a_local_moto_server(tmp_path: Path, good: dict[str, Any]) -> None:
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {**NO_AWS, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
        ok = run_cli("config", "check", str(write(tmp_path, good, "ok.yaml")), "--target", "aws", env=env)
        assert ok.returncode == 0, ok.stderr
        cfg = json.loads(json.dumps(good))
        cfg[NT]["ray.worker.spot"]["node_config"]["InstanceType"] = "c7i.4xlarg"
        bad = run_cli("config", "check", str(write(tmp_path, cfg, "bad.yaml")), "--target", "aws", env=env)
    finally:
        server.stop()
    assert bad.returncode == 2
    assert lines(bad.stderr)[0] == (
        "ERROR available_node_types[ray.worker.spot].node_config.InstanceType: EC2 does not offer instance "
        "type 'c7i.4xlarg' in us-west-2 (did you mean 'c7i.4xlarge'?)")


def test_target_aws_unreachable_is_a_warning(tmp_path: Path, good: dict[str, Any]) -> None:
    p = run_cli("config", "check", str(write(tmp_path, good)), "--target", "aws", env=NO_AWS)
    assert p.returncode == 0, p.stderr
    first = lines(p.stderr)[0]
    assert first.startswith("WARN (file): could not ask EC2 about instance types: EndpointConnectionError")
    assert first.endswith("(check AWS credentials and region; the offline table was used)")


# --- render ---------------------------------------------------------------------------------------
def test_render_prints_the_yaml_ray_up_gets(tmp_path: Path) -> None:
    outs = tmp_path / "outputs.json"
    outs.write_text(json.dumps(OUTPUTS))
    p = run_cli("config", "render", "--target", "aws", "--scenario", "mixed", "--lab", "kim",
                "--outputs", str(outs), "--workdir", str(tmp_path / ".raylab"))
    assert p.returncode == 0, p.stderr
    assert yaml.safe_load(p.stdout) == render(target="aws", scenario="mixed", lab="kim", outputs=OUTPUTS)
    assert "{{" not in p.stdout


def test_render_json_and_outputs_from_state(tmp_path: Path) -> None:
    wd = tmp_path / ".raylab"
    wd.mkdir()
    network = {k: v for k, v in OUTPUTS.items() if not k.startswith(("head_", "worker_"))}
    identity = {k: v for k, v in OUTPUTS.items() if k.startswith(("head_", "worker_"))}
    (wd / "state.json").write_text(json.dumps({"network": {**network, "stack_name": "raylab-kim-network"},
                                               "identity": identity}))
    p = run_cli("config", "render", "--target", "aws", "--scenario", "static", "--lab", "kim", "--json",
                "--workdir", str(wd))
    assert p.returncode == 0, p.stderr
    out = json_out(p)
    assert (out["ok"], out["scenario"], out["findings"]) == (True, "static", [])
    assert out["config"]["cluster_name"] == "raylab-kim"
    subnets = out["config"][NT]["ray.worker.ondemand"]["node_config"]["SubnetIds"]
    assert subnets == ["subnet-priv1", "subnet-priv2"]


def test_render_without_outputs_names_the_placeholder(tmp_path: Path) -> None:
    p = run_cli("config", "render", "--target", "aws", "--lab", "kim", "--workdir", str(tmp_path / ".raylab"))
    assert p.returncode == 2
    assert lines(p.stderr) == [
        "error: placeholder {{ AvailabilityZones }} has no value (also: BastionPublicIp, PrivateSubnetIds, "
        "RaySecurityGroupId, head_instance_profile_arn, worker_instance_profile_arn) (run stages 1-2 first, "
        "or pass --outputs FILE with a JSON object holding 'AvailabilityZones')"]
    assert p.stdout == ""


def test_render_bad_outputs_file(tmp_path: Path) -> None:
    f = tmp_path / "o.json"
    f.write_text("{not json")
    p = run_cli("config", "render", "--target", "aws", "--outputs", str(f), "--workdir", str(tmp_path / "w"))
    assert p.returncode == 2
    assert lines(p.stderr) == [
        f"error: --outputs {f}: not valid JSON: line 1, column 2: Expecting property name enclosed in "
        'double quotes (write one JSON object, e.g. {"PrivateSubnetIds": "subnet-a,subnet-b", ...})']


def test_outputs_file_must_be_an_object_of_strings(tmp_path: Path) -> None:
    from raylab.cli.cmd_config import _read_outputs
    from raylab.errors import RaylabError

    f = tmp_path / "o.json"
    f.write_text("[1, 2]")
    with pytest.raises(RaylabError, match="the top level is not a JSON object"):
        _read_outputs(f)
    f.write_text(json.dumps({"PrivateSubnetIds": ["subnet-a", "subnet-b"], "n": 3, "skip": None}))
    assert _read_outputs(f) == {"PrivateSubnetIds": "subnet-a,subnet-b", "n": "3"}


def test_render_unknown_scenario(tmp_path: Path) -> None:
    p = run_cli("config", "render", "--scenario", "cheap", "--workdir", str(tmp_path / "w"))
    assert p.returncode == 2
    assert lines(p.stderr) == ["error: unknown scenario 'cheap' (use one of: static, autoscale, spot, mixed)"]


def test_config_files_are_where_the_cli_looks() -> None:
    for name in ("static", "autoscale", "spot", "mixed"):
        assert (ROOT / "configs" / "scenarios" / f"{name}.yaml").is_file()
