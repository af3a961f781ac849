"""infra/terraform reaches the twin through AWS_ENDPOINT_URL alone, and nothing else.

The provider block has no `endpoints` block (validating it cost 2.2 CPU-s per provider
configuration, three per apply): IAM and STS must reach the twin through the environment raylab
sets. A provider that stopped honouring it would go to AWS's own endpoints. This test therefore
runs stage 2's Terraform (raylab's own runner, the real binary and provider from the mirror) in a
network namespace of its own, where only loopback exists, against a moto server on that loopback:
any call that went elsewhere would fail the apply, and none could leave the machine. The service
override a shell may carry (AWS_ENDPOINT_URL_IAM to an address where nothing listens) is dropped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

INSIDE = textwrap.dedent("""
    import json, os, subprocess, sys
    from pathlib import Path
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    from moto.server import ThreadedMotoServer
    import boto3
    from raylab.iac.terraform import for_lab
    from raylab.stages.stage2_identity import tf_variables

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    url = "http://127.0.0.1:%d" % server._server.server_port
    env = {"AWS_ENDPOINT_URL": url, "AWS_DEFAULT_REGION": "us-west-2",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ["AWS_ENDPOINT_URL_IAM"] = "http://127.0.0.1:9"  # the operator's shell: dropped
    work = Path(sys.argv[1])
    tf = for_lab(source=Path(sys.argv[2]), raylab_dir=work, lab="ep", env=env, require_mirror=True)
    variables = tf_variables(lab="ep", cluster_name="raylab-ep", env=env)
    tf.init()
    tf.apply(variables)
    iam = boto3.client("iam", endpoint_url=url, region_name="us-west-2",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    roles = sorted(r["RoleName"] for r in iam.list_roles()["Roles"])
    outputs = tf.output()
    tf.destroy(variables)
    left = sorted(r["RoleName"] for r in iam.list_roles()["Roles"])
    print(json.dumps({"roles": roles, "left": left, "outputs": outputs,
                      "env_overrides": sorted(k for k in tf.env if k.startswith("AWS_ENDPOINT_URL_"))}))
    server.stop()
""")


@pytest.mark.skipif(shutil.which("terraform") is None or shutil.which("unshare") is None
                    or os.geteuid() != 0, reason="needs terraform, unshare and root (a network namespace)")
def test_stage2_terraform_reaches_only_the_endpoint_in_its_environment(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    env.pop("AWS_ENDPOINT_URL", None)
    r = subprocess.run(["unshare", "--net", sys.executable, "-c", INSIDE, str(tmp_path / ".raylab"),
                        str(ROOT / "infra" / "terraform")],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["roles"] == ["raylab-ep-ray-head", "raylab-ep-ray-worker"]  # created in this moto
    assert got["outputs"]["head_role_arn"].startswith("arn:aws:iam::123456789012:role/")  # moto's account
    assert got["left"] == []
    assert got["env_overrides"] == []
