"""Stage 3 cluster: the Ray head and autoscaler v2 from the rendered lab config.

apply: render the cluster YAML for the scenario from stages 1-2's outputs, validate it with Ray's
own schema (a RaylabError before anything is created), write it under ``.raylab/``, then let the
target start the head (local: a head instance on the twin + `ray start --head`; a live head is a
noop). verify: Ray's v2 status and describe_instances by the ``ray-cluster-name`` tag name the same
running instances and the head is among them; on the local target every node is on 127.0.0.1.
destroy: stop the head, terminate every instance of the cluster tag, wait for the processes.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raylab.stages import BY_NAME
from raylab.stages.base import Check

if TYPE_CHECKING:
    from raylab.cluster.config import RenderInputs
    from raylab.context import Context

AGREE_TIMEOUT_S = 60.0  # nodes booting or stopping, with no worker expected
PARALLEL_LAUNCHES = 10  # Ray's AUTOSCALER_MAX_CONCURRENT_LAUNCHES: nodes set up at the same time


def workers_up(agreement: dict[str, Any], head_id: str | None) -> int:
    """Workers that are both running EC2 instances and live Ray nodes (the head not counted)."""
    return len([i for i in agreement.get("running") or [] if i != head_id])


def settled(agreement: dict[str, Any], expected_workers: int, head_id: str | None) -> bool:
    """Ray and EC2 agree, and the workers min_workers asks for are among them (pure). Agreement
    alone can come before the autoscaler has launched anyone."""
    return bool(agreement.get("ok")) and workers_up(agreement, head_id) >= expected_workers


def agree_timeout_s(expected_workers: int, node_setup_s: float, parallel: int = PARALLEL_LAUNCHES,
                    base_s: float = AGREE_TIMEOUT_S) -> float:
    """How long verify waits for Ray and EC2 to agree. With min_workers > 0 the workers are
    `running` in EC2 long before their setup ends and Ray lists them: allow a setup per wave of
    ``parallel`` launches on top of the base wait."""
    if expected_workers <= 0:
        return base_s
    return base_s + math.ceil(expected_workers / max(parallel, 1)) * node_setup_s


def expected_workers(cfg: dict[str, Any]) -> int:
    """Workers the autoscaler starts by itself: the sum of min_workers, capped by max_workers."""
    head = cfg.get("head_node_type")
    n = sum(int(nt.get("min_workers") or 0) for name, nt in (cfg.get("available_node_types") or {}).items()
            if name != head)
    cap = cfg.get("max_workers")
    return min(n, int(cap)) if cap is not None else n


def outputs_of(ctx: Context) -> dict[str, str]:
    """network ∪ identity outputs (flat strings), as the render contract takes them."""
    net = ctx.state.network().outputs
    ident = {k: str(v) for k, v in ctx.state.get("identity").items()}
    return {**net, **ident}


def lab_scale(ctx: Context) -> int:
    """The lab scale stage 3 renders and records (stage 4 reads it): --scale, else the target's."""
    return int(ctx.options.scale or ctx.target.default_scale)


def lab_node_python(ctx: Context) -> str | None:
    """The nodes' Python minor (--node-python; a re-run keeps what stage 3 recorded), None: the
    operator's. The local target's nodes run raylab's own Python, so it takes none."""
    py = ctx.options.node_python or ctx.state.cluster().node_python
    return str(py) if py else None


def render_inputs(ctx: Context) -> RenderInputs:
    """What stage 3 renders the cluster YAML from (stage 5 re-renders from the same, see
    ``stage5_scaling.rerender``). The base is the working copy `raylab scale` edits
    (``.raylab/config/ray-cluster.yaml``) when it exists, so re-running stage 3 keeps the trainee's
    scaling edits; otherwise ``configs/``."""
    from raylab.cluster.config import RenderInputs

    working = ctx.workdir / "config" / "ray-cluster.yaml"
    return RenderInputs(target=ctx.target_name, scenario=ctx.scenario, lab=ctx.lab, outputs=outputs_of(ctx),
                        scale=lab_scale(ctx), endpoint_url=ctx.target.aws_env(ctx).get("AWS_ENDPOINT_URL"),
                        base=working if working.exists() else None, node_python=lab_node_python(ctx))


def render_config(ctx: Context, inputs: RenderInputs | None = None) -> dict[str, Any]:
    """The one render of the lab's cluster YAML: stage 3's (``render_inputs``), or stage 5's."""
    from raylab.cluster.config import render

    return render(**(inputs or render_inputs(ctx)).as_kwargs())


def write_config(ctx: Context, cfg: dict[str, Any]) -> Path:
    import yaml

    ctx.state.ensure_dir()
    path = ctx.workdir / "cluster.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tmp.replace(path)
    return path


def applied_json(info: dict[str, Any]) -> dict[str, Any]:
    """Stage 3's result (from the target's cluster_up) as `raylab stage 3 --json` reports it (pure)."""
    return {k: info.get(k) for k in ("cluster_name", "gcs_address", "dashboard_url", "head_instance_id",
                                     "config_path", "head_ready_s")}


class ClusterStage:
    number, name, summary, verified_by = BY_NAME["cluster"].described

    def apply(self, ctx: Context) -> dict[str, Any]:
        from raylab.cluster.bootstrap import node_python

        cfg = render_config(ctx)
        ctx.target.validate_config(cfg)
        path = write_config(ctx, cfg)
        with ctx.clock.phase("cluster up (head instance, Ray head)"):
            info = ctx.target.cluster_up(ctx, path)
        ctx.state.update("cluster", scenario=ctx.scenario, scale=lab_scale(ctx),
                         node_python=node_python(lab_node_python(ctx)))
        return applied_json(info)

    def verify(self, ctx: Context) -> list[Check]:
        try:
            st = ctx.target.cluster_status(ctx)
        except Exception as e:  # noqa: BLE001 - reported as a failed check
            return [Check("ray status", False, f"{type(e).__name__}: {e}", "see .raylab/logs/ray-head.log")]
        # Booting or stopping nodes make Ray and EC2 briefly disagree: poll until they settle, for
        # as long as the workers min_workers asks for take to set up.
        expected = self._expected_workers(ctx)
        head_id = ctx.state.cluster().head_instance_id or None
        timeout = agree_timeout_s(expected, ctx.target.node_setup_s)
        if not settled(st["agreement"], expected, head_id) and timeout > AGREE_TIMEOUT_S:
            ctx.ui.info(f"waiting up to {timeout:.0f} s for Ray and EC2 to agree (min_workers' nodes set up)")
        deadline = time.monotonic() + timeout
        while not settled(st["agreement"], expected, head_id) and time.monotonic() < deadline:
            time.sleep(2)
            st = ctx.target.cluster_status(ctx)
        checks = [Check("head running", st["agreement"]["head_ok"],
                        f"head instance {head_id} is a live Ray node and a running EC2 instance"
                        if st["agreement"]["head_ok"] else f"head instance {head_id} missing from Ray or EC2",
                        "see .raylab/logs/ray-head.log")]
        a = st["agreement"]
        detail = (f"{len(a['running'])} running instance(s) = {len(a['running'])} live Ray node(s)" if a["ok"]
                  else f"Ray only: {a['ray_only'] or '-'}; EC2 only: {a['ec2_only'] or '-'}")
        checks.append(Check("ray and ec2 agree", a["ok"], detail,
                            "see `raylab status` and .raylab/twin/logs/"))
        if expected:
            up = workers_up(a, head_id)
            checks.append(Check("min_workers up", up >= expected,
                                f"{up} of {expected} worker(s) (min_workers) running and joined",
                                "see `raylab status` (a worker's setup may have failed: the head's "
                                "/tmp/ray/session_latest/logs/monitor.log)"))
        if ctx.target.loopback_only:
            ips = sorted({n["ip"] for n in st["ray_nodes"] if n["group"] in ("active", "idle")})
            ok = bool(ips) and all(ip.startswith("127.") for ip in ips)
            checks.append(Check("loopback only", ok, f"node addresses: {', '.join(ips) or 'none'}",
                                "a node bound a non-loopback address: see targets/local/loopback/"))
        return checks

    @staticmethod
    def _expected_workers(ctx: Context) -> int:
        import yaml

        path = ctx.state.cluster().config_path
        try:
            return expected_workers(yaml.safe_load(Path(path).read_text()) or {}) if path else 0
        except (OSError, yaml.YAMLError, TypeError, ValueError):
            return 0

    def destroy(self, ctx: Context) -> None:
        """Always the target's cluster_down, recorded cluster or not: a `ray up` that failed after
        the head launched (its setup failed) records no cluster, and its head must still go (the AWS
        target sweeps by the cluster tag; found by the AWS rehearsal)."""
        ctx.target.cluster_down(ctx)


STAGE = ClusterStage()
