"""raylab.iac.terraform: finding terraform and the provider mirror, the CLI config, outputs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from raylab.errors import RaylabError
from raylab.iac import terraform as T


def _mirror(root: Path) -> Path:
    (root / "registry.terraform.io" / "hashicorp" / "aws" / "5.100.0" / "linux_amd64").mkdir(parents=True)
    return root


@pytest.fixture
def no_default_roots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Search only under tmp_path (the machine's real mirror must not answer these tests)."""
    monkeypatch.setattr(T, "LIKELY_MIRROR_ROOTS", (str(tmp_path / "likely"),))
    monkeypatch.setattr(T, "SEARCH_PARENTS", (str(tmp_path / "parents"),))
    return tmp_path


def test_env_override_wins(no_default_roots: Path) -> None:
    m = _mirror(no_default_roots / "mine")
    _mirror(no_default_roots / "likely")
    assert T.find_mirror({T.MIRROR_ENV: str(m)}) == m.resolve()


def test_env_override_that_is_not_a_mirror_is_a_clear_error(no_default_roots: Path) -> None:
    with pytest.raises(RaylabError) as e:
        T.find_mirror({T.MIRROR_ENV: str(no_default_roots)})
    assert "registry.terraform.io" in e.value.one_line()


def test_mirror_found_under_a_search_parent(no_default_roots: Path) -> None:
    m = _mirror(no_default_roots / "parents" / "tf-plugins")
    assert T.find_mirror({}) == m.resolve()


def test_no_mirror_anywhere(no_default_roots: Path) -> None:
    assert T.find_mirror({}) is None


def test_local_target_without_mirror_is_refused_before_anything_runs(no_default_roots: Path) -> None:
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not on PATH")
    with pytest.raises(RaylabError) as e:
        T.for_lab(
            source=Path("infra/terraform"),
            raylab_dir=no_default_roots / ".raylab",
            lab="x",
            env={},
            require_mirror=True,
        )
    assert "no local Terraform provider mirror" in e.value.message and T.MIRROR_ENV in (e.value.hint or "")
    assert not (no_default_roots / ".raylab").exists()


def test_aws_target_without_mirror_downloads_normally(no_default_roots: Path) -> None:
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not on PATH")
    tf = T.for_lab(
        source=Path("infra/terraform"),
        raylab_dir=no_default_roots / ".raylab",
        lab="x",
        env={},
        require_mirror=False,
    )
    assert tf.cli_config is None
    assert tf.workdir == no_default_roots / ".raylab" / "terraform" / "x"


def test_missing_terraform_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RaylabError) as e:
        T.for_lab(
            source=Path("infra/terraform"),
            raylab_dir=tmp_path,
            lab="x",
            env={"PATH": str(tmp_path)},
            require_mirror=True,
        )
    assert e.value.message == "terraform is not on PATH"
    assert "install Terraform" in (e.value.hint or "")


def test_cli_config_uses_only_the_mirror(tmp_path: Path) -> None:
    text = T.cli_config_text(tmp_path)
    assert f'path    = "{tmp_path}"' in text
    assert 'exclude = ["registry.terraform.io/*/*"]' in text
    p = T.write_cli_config(tmp_path / ".raylab", tmp_path)
    assert p == tmp_path / ".raylab" / "terraform" / "terraformrc" and p.read_text() == text


def test_parse_outputs_flattens_values() -> None:
    raw = json.dumps(
        {
            "head_role_arn": {"sensitive": False, "type": "string", "value": "arn:x"},
            "ids": {"value": ["a", "b"]},
        }
    )
    assert T.parse_outputs(raw) == {"head_role_arn": "arn:x", "ids": '["a", "b"]'}
    assert T.parse_outputs("") == {}


@pytest.mark.parametrize(
    ("lines", "noop"),
    [
        (["No changes. Your infrastructure matches the configuration."], True),
        (["Apply complete! Resources: 0 added, 0 changed, 0 destroyed."], True),
        (["Apply complete! Resources: 6 added, 0 changed, 0 destroyed."], False),
    ],
)
def test_summary_is_noop(lines: list[str], noop: bool) -> None:
    assert T.summary_is_noop(lines) is noop


def test_var_args_are_sorted_pairs() -> None:
    assert T.var_args({"region": "us-west-2", "lab_id": "kim"}) == [
        "-var",
        "lab_id=kim",
        "-var",
        "region=us-west-2",
    ]


def test_sync_module_keeps_state_and_drops_stale_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "policies").mkdir(parents=True)
    (src / "main.tf").write_text("# main")
    (src / "policies" / "p.json.tftpl").write_text("{}")
    (src / "notes.md").write_text("not terraform")
    tf = T.Terraform(source=src, workdir=tmp_path / "lab", env={})
    tf.module_dir.mkdir(parents=True)
    (tf.module_dir / "old.tf").write_text("# removed upstream")
    tf.state_file.write_text(
        json.dumps(
            {"resources": [{"mode": "managed", "type": "aws_iam_role", "name": "head", "instances": [{}]}]}
        )
    )
    tf.sync_module()
    assert sorted(
        p.relative_to(tf.module_dir).as_posix() for p in tf.module_dir.rglob("*") if p.is_file()
    ) == ["main.tf", "policies/p.json.tftpl", "terraform.tfstate"]
    assert tf.has_state()
    assert oct(os.stat(tf.workdir).st_mode & 0o777) == "0o700"


def test_state_addresses_lists_managed_resources(tmp_path: Path) -> None:
    f = tmp_path / "terraform.tfstate"
    f.write_text(
        json.dumps(
            {
                "resources": [
                    {"mode": "managed", "type": "aws_iam_role", "name": "head", "instances": [{}]},
                    # a create killed before it finished leaves an entry without instances
                    {"mode": "managed", "type": "aws_iam_instance_profile", "name": "head", "instances": []},
                    {"mode": "data", "type": "aws_partition", "name": "current", "instances": [{}]},
                ]
            }
        )
    )
    assert T.state_addresses(f) == {"aws_iam_role.head"}
    assert T.state_addresses(tmp_path / "missing") == set()


def test_state_without_resources_is_no_state(tmp_path: Path) -> None:
    f = tmp_path / "terraform.tfstate"
    assert not T.state_has_resources(f)
    f.write_text(json.dumps({"version": 4, "resources": []}))
    assert not T.state_has_resources(f)


def test_failed_terraform_run_names_the_error_and_the_log(tmp_path: Path) -> None:
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not on PATH")
    src = tmp_path / "src"
    src.mkdir()
    (src / "main.tf").write_text('resource "nope" "x" {\n')  # unparsable
    tf = T.Terraform(source=src, workdir=tmp_path / "lab", env=dict(os.environ))
    with pytest.raises(RaylabError) as e:
        tf.init()
    assert e.value.message.startswith("terraform init failed: Error:")
    assert str(tf.log) in (e.value.hint or "")


def test_docstring_says_why_not_python_terraform() -> None:
    doc = T.__doc__ or ""
    assert "python-terraform" in doc and "-force" in doc and "0.15" in doc


@pytest.mark.parametrize(("given", "seen"), [(None, T.GOGC), ("100", "100")])
def test_terraform_and_its_provider_run_with_the_labs_gc_target_unless_you_set_one(
        tmp_path: Path, given: str | None, seen: str) -> None:
    """Go's GC target reaches terraform (and the provider it starts): measured 30% less CPU."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "terraform"
    fake.write_text('#!/bin/sh\necho "GOGC=$GOGC"\n')
    fake.chmod(0o755)
    src = tmp_path / "src"
    src.mkdir()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", **({"GOGC": given} if given else {})}
    tf = T.Terraform(source=src, workdir=tmp_path / "lab", env=env)
    tf.validate()
    assert f"GOGC={seen}" in tf.last_output


TWIN = "http://127.0.0.1:5000"


@pytest.mark.parametrize(("given", "kept"), [
    # with a twin endpoint, every service goes there: a service's own variable is dropped
    ({"AWS_ENDPOINT_URL": TWIN, "AWS_ENDPOINT_URL_IAM": "https://iam.example"}, {"AWS_ENDPOINT_URL": TWIN}),
    # ... and so is the flag that would make the SDK ignore AWS_ENDPOINT_URL itself
    ({"AWS_ENDPOINT_URL": TWIN, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}, {"AWS_ENDPOINT_URL": TWIN}),
    # the rest of the environment stays
    ({"AWS_ENDPOINT_URL": TWIN, "AWS_REGION": "us-west-2", "PATH": "/bin"},
     {"AWS_ENDPOINT_URL": TWIN, "AWS_REGION": "us-west-2", "PATH": "/bin"}),
    # on AWS (no twin) the operator's environment is left as it is
    ({"AWS_ENDPOINT_URL_IAM": "https://vpce.example"}, {"AWS_ENDPOINT_URL_IAM": "https://vpce.example"}),
])
def test_terraform_reaches_the_twin_endpoint_for_every_service(given: dict[str, str],
                                                               kept: dict[str, str]) -> None:
    assert T.endpoint_env(given) == kept


def test_the_terraform_module_names_no_endpoint_of_its_own() -> None:
    """The endpoint comes from the environment only (an `endpoints` block cost 2.2 CPU-s per
    provider configuration); `endpoint_url` still turns the twin's skip flags on."""
    tf = (Path(__file__).resolve().parents[2] / "infra" / "terraform" / "main.tf").read_text()
    code = "\n".join(ln.split("#")[0] for ln in tf.splitlines())
    assert "endpoints" not in code
    assert "skip_credentials_validation = local.local_endpoint" in code
