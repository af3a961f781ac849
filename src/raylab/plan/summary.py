"""From a forecast to the answers a user wants: did a quota stop it, what to request, the JSON object."""

from __future__ import annotations

from typing import Any

from raylab.cluster.vocab import Market
from raylab.plan.model import MARKETS, RAY_VERSION, Forecast, PlanInput

QUOTA_NAMES = {m.key: f"{m.quota_name} ({m.quota_code})" for m in Market}


def quota_by_market(plan: PlanInput, fc: Forecast) -> list[dict[str, Any]]:
    """Per market: the vCPUs the scheduler's target shape needs (head included) vs the quota."""
    out = []
    for market in MARKETS:
        types = [w for w in plan.workers if w.market == market]
        head_vcpus = plan.head.vcpus if plan.head.market == market else 0
        other = plan.other_vcpus if market == "ondemand" else 0
        if not types and not head_vcpus:
            continue
        desired = sum(fc.desired_by_type.get(w.name, 0) for w in types)
        reached = sum(fc.peak_by_type.get(w.name, 0) for w in types)
        needed = other + head_vcpus + sum(fc.desired_by_type.get(w.name, 0) * w.vcpus for w in types)
        failed = sum(r.failed.get(w.name, 0) for r in fc.rounds for w in types)
        quota = plan.quota(market)
        limited = quota is not None and needed > quota and (failed > 0 or reached < desired)
        item: dict[str, Any] = {
            "market": market, "limited": limited, "quota_vcpus": quota, "needed_vcpus": needed,
            "other_vcpus": other, "wanted_workers": desired, "reached_workers": reached,
            "capped_workers": max(0, desired - reached) if limited else 0,
            "failed_nodes": failed, "quota_name": QUOTA_NAMES[market],
        }
        if limited:
            item["request"] = f"request an increase to {needed} vCPUs"
        out.append(item)
    return out


def quota_summary(plan: PlanInput, fc: Forecast) -> dict[str, Any]:
    markets = quota_by_market(plan, fc)
    limited = [m for m in markets if m["limited"]]
    main = dict(limited[0] if limited else (markets[0] if markets else {"market": "ondemand"}))
    main.setdefault("limited", False)
    main["markets"] = markets
    if len(limited) > 1:
        main["capped_workers"] = sum(m["capped_workers"] for m in limited)
        main["request"] = "; ".join(f"{m['market']}: {m['request']}" for m in limited)
    return main


def forecast_dict(plan: PlanInput, fc: Forecast, cost: dict[str, Any]) -> dict[str, Any]:
    return {
        "peak_workers": fc.peak_workers,
        "peak_by_type": fc.peak_by_type,
        "wanted_by_type": fc.desired_by_type,
        "rounds": [r.as_dict() for r in fc.rounds],
        "round_count": len(fc.rounds),
        "failed_launch_calls": fc.failed_launch_calls,
        "makespan_s": None if fc.makespan_s is None else round(fc.makespan_s, 1),
        "scale_down_s": None if fc.scale_down_s is None else round(fc.scale_down_s, 1),
        "job_start_s": round(fc.job_start_s, 1),
        "tasks_done": fc.tasks_done,
        "quota": quota_summary(plan, fc),
        "cost": cost,
        "workers_over_time": [[round(t, 1), n] for t, n in fc.timeline],
        "inputs": inputs_dict(plan),
        "engine": f"ray {RAY_VERSION} autoscaler v2 Reconciler.reconcile() on a simulated cloud, "
                  f"{plan.tick_s:g} s ticks",
    }


def inputs_dict(plan: PlanInput) -> dict[str, Any]:
    return {
        "tasks": plan.workload.tasks, "cpus": plan.workload.cpus, "duration_s": plan.workload.duration_s,
        "max_workers": plan.max_workers, "upscaling_speed": plan.upscaling_speed,
        "idle_timeout_minutes": plan.idle_timeout_minutes, "boot_seconds": plan.boot_seconds,
        "max_concurrent_boots": plan.max_concurrent_boots, "worker_start_s": plan.worker_start_s,
        "quota_ondemand": plan.quota_ondemand, "quota_spot": plan.quota_spot, "other_vcpus": plan.other_vcpus,
        "head": {"type": plan.head.name, "instance_type": plan.head.instance_type, "cpus": plan.head.cpus},
        "workers": [{"type": w.name, "instance_type": w.instance_type, "market": w.market, "vcpus": w.vcpus,
                     "cpus": w.cpus, "min_workers": w.min_workers, "max_workers": w.max_workers}
                    for w in plan.workers],
    }
