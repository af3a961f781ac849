"""Stage 3 cluster: the Ray head and autoscaler v2 from the rendered lab config.

apply: render the cluster YAML for the scenario from stages 1-2's outputs, validate it with Ray's
own schema (a RaylabError before anything is created), write it under ``.raylab/``, then let the
target start the head (local: a head instance on the twin + `ray start --head`; a live head is a
noop). verify: Ray's v2 status and describe_instances by the ``ray-cluster-name`` tag name the same
running instances and the head is among them; on the local target every node is on 127.0.0.1.
destroy: stop the head, terminate every instance of the cluster tag, wait for the processes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylab.stages.base import Check

if TYPE_CHECKING:
    from raylab.context import Context

AGREE_TIMEOUT_S = 60.0
DEFAULT_SCALE = 4


def outputs_of(ctx: Context) -> dict[str, str]:
    """network ∪ identity outputs (flat strings), as the render contract takes them."""
    net = {k: str(v) for k, v in ctx.state.get("network").items() if k != "stack_name"}
    ident = {k: str(v) for k, v in ctx.state.get("identity").items()}
    return {**net, **ident}


def render_config(ctx: Context) -> dict[str, Any]:
    """Render the cluster YAML for this target and scenario.

    The base is the working copy `raylab scale` edits (``.raylab/config/ray-cluster.yaml``) when it
    exists, so re-running stage 3 keeps the trainee's scaling edits; otherwise ``configs/``.
    """
    from raylab.cluster.config import render

    endpoint = ctx.target.aws_env(ctx).get("AWS_ENDPOINT_URL")
    scale = int(ctx.options.get("scale", DEFAULT_SCALE))
    working = ctx.workdir / "config" / "ray-cluster.yaml"
    return render(target=ctx.target_name, scenario=ctx.scenario, lab=ctx.lab, outputs=outputs_of(ctx),
                  scale=scale, endpoint_url=endpoint, base=working if working.exists() else None)


def write_config(ctx: Context, cfg: dict[str, Any]) -> Path:
    import yaml

    ctx.state.ensure_dir()
    path = ctx.workdir / "cluster.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tmp.replace(path)
    return path


class ClusterStage:
    number = 3
    name = "cluster"
    summary = "`ray up` through the bastion (local: head + autoscaler v2 on the twin)"
    verified_by = "Ray's cluster status and describe_instances by the ray-cluster-name tag agree"

    def apply(self, ctx: Context) -> dict[str, Any]:
        cfg = render_config(ctx)
        if ctx.target_name == "local":
            from raylab.targets.local.render import validate

            validate(cfg)
        path = write_config(ctx, cfg)
        info = ctx.target.cluster_up(ctx, path)
        ctx.state.update("cluster", scenario=ctx.scenario, scale=int(ctx.options.get("scale", DEFAULT_SCALE)))
        return {k: info.get(k) for k in ("cluster_name", "gcs_address", "dashboard_url", "head_instance_id",
                                         "config_path", "head_ready_s")}

    def verify(self, ctx: Context) -> list[Check]:
        try:
            st = ctx.target.cluster_status(ctx)
        except Exception as e:  # noqa: BLE001 - reported as a failed check
            return [Check("ray status", False, f"{type(e).__name__}: {e}", "see .raylab/logs/ray-head.log")]
        # Booting or stopping nodes make Ray and EC2 briefly disagree: poll until they settle.
        deadline = time.monotonic() + AGREE_TIMEOUT_S
        while not st["agreement"]["ok"] and time.monotonic() < deadline:
            time.sleep(2)
            st = ctx.target.cluster_status(ctx)
        head_id = ctx.state.get("cluster").get("head_instance_id")
        checks = [Check("head running", st["agreement"]["head_ok"],
                        f"head instance {head_id} is a live Ray node and a running EC2 instance"
                        if st["agreement"]["head_ok"] else f"head instance {head_id} missing from Ray or EC2",
                        "see .raylab/logs/ray-head.log")]
        a = st["agreement"]
        detail = (f"{len(a['running'])} running instance(s) = {len(a['running'])} live Ray node(s)" if a["ok"]
                  else f"Ray only: {a['ray_only'] or '-'}; EC2 only: {a['ec2_only'] or '-'}")
        checks.append(Check("ray and ec2 agree", a["ok"], detail,
                            "see `raylab status` and .raylab/twin/logs/"))
        if ctx.target_name == "local":
            ips = sorted({n["ip"] for n in st["ray_nodes"] if n["group"] in ("active", "idle")})
            ok = bool(ips) and all(ip.startswith("127.") for ip in ips)
            checks.append(Check("loopback only", ok, f"node addresses: {', '.join(ips) or 'none'}",
                                "a node bound a non-loopback address: see targets/local/loopback/"))
        return checks

    def destroy(self, ctx: Context) -> None:
        if not ctx.state.get("cluster"):
            return
        ctx.target.cluster_down(ctx)


STAGE = ClusterStage()
