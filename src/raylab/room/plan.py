"""`raylab room plan` decisions (pure): quota requests, the day's cost, and stage 4's stagger.

One trainee's footprint comes from the same forecast as `raylab plan` (Ray 2.60's own autoscaler
code on a simulated cloud, ``raylab.plan.forecast.simulate``):

- baseline: every lab keeps its head and its bastion all day (on-demand vCPUs, and with the NAT
  gateway about $0.77/h per lab at the offline prices);
- stage 4 burst: the worker vCPUs one trainee's stress job holds at its quota wall, forecast at the
  lesson's quota (``LESSON_QUOTA`` on-demand vCPUs, head and bastion included, as `raylab plan`);
- stage 6 burst: the spot worker vCPUs of the same job under the ``mixed`` scenario (spot preferred),
  forecast with the lesson's quota on each market (the spot quota is separate on AWS).

The account's vCPU quota is one pool for the whole room (AWS enforces it per account and region, not
per lab). The stagger is how many trainees can run stage 4 at once while the room's bastions and heads
plus that many bursts still fit the on-demand quota: then every one of them can reach the wall the
forecast shows. One more at once and the bursts together pass the quota, so someone's launches fail
before their own wall: a collision, not the lesson.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from raylab.aws.quotas import NAT_GATEWAY_PER_HOUR, QUOTA_NAMES
from raylab.cluster.vocab import ON_DEMAND_QUOTA, SPOT_QUOTA
from raylab.errors import RaylabError
from raylab.plan.cost import Prices
from raylab.plan.forecast import Forecast, PlanInput
from raylab.plan.model import Workload

MAX_TRAINEES = 100
LESSON_QUOTA = 160  # stage 4's wall: `raylab plan`'s default on-demand quota (head + bastion + 8 workers)
BASTION_TYPE = "t3.micro"  # the lab's bastion (infra/cloudformation), in the on-demand quota
DEFAULT_HOURS = 8.0
LEAD_TIME = ("request both quotas at least a week before class (Service Quotas console or "
             "`aws service-quotas request-service-quota-increase --service-code ec2 --quota-code CODE "
             "--desired-value N`): small increases are often approved within minutes, larger ones go to "
             "AWS Support and can take several business days, and a new account may get less than asked")
SHARED_QUOTA_NOTE = ("AWS counts each vCPU quota per account and region, not per lab: the stagger keeps a "
                     "wave's bursts within the quota together, and trainees who start together split it "
                     "about evenly (each autoscaler launches in rounds); a trainee who starts early in a "
                     "wave can still take more than their share")


# --- input -------------------------------------------------------------------------------------------
def parse_count(raw: str | None, flag: str, *, lo: int = 1, hi: int | None = None) -> int | None:
    """A whole number in [lo, hi] from the command line; None stays None; anything else -> RaylabError."""
    if raw is None:
        return None
    text = raw.strip()
    try:
        x = float(text)
    except ValueError:
        raise RaylabError(f"{flag} {raw!r} is not a number", f"give {flag} a whole number") from None
    if x != x or x in (math.inf, -math.inf) or x != int(x):
        raise RaylabError(f"{flag} {raw!r} is not a whole number", f"give {flag} a whole number")
    n = int(x)
    if n < lo or (hi is not None and n > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise RaylabError(f"{flag} {raw!r} is out of range", f"give {flag} a whole number {rng}")
    return n


def parse_hours(raw: str) -> float:
    try:
        h = float(raw)
    except ValueError:
        raise RaylabError(f"--hours {raw!r} is not a number",
                          "give the class length in hours, e.g. 8") from None
    if h != h or not 0 < h <= 24:
        raise RaylabError(f"--hours {raw!r} is out of range", "give the class length in hours, > 0 and <= 24")
    return h


# --- one trainee, from the forecast ---------------------------------------------------------------------
@dataclass(frozen=True)
class TraineeLoad:
    """One trainee's footprint: what every lab holds all day, and what its stage 4 and 6 add."""

    head_type: str
    head_vcpus: int
    bastion_vcpus: int
    burst_workers: int  # stage 4: workers alive at the wall (forecast peak)
    wanted_workers: int  # stage 4: workers Ray's scheduler wanted (the demand the wall cuts)
    burst_ondemand_vcpus: int  # stage 4: on-demand worker vCPUs at the wall
    burst_spot_vcpus: int  # stage 6 (mixed scenario): spot worker vCPUs at peak
    slot_s: float  # stage 4: job submit -> workers back to their floor (the quota is free again)
    stage4_usd: float  # stage 4 workers' cost (the head is in the baseline)
    stage6_usd: float  # stage 6 workers' cost
    baseline_usd_per_hour: float  # NAT gateway + bastion + head

    @property
    def baseline_vcpus(self) -> int:
        return self.head_vcpus + self.bastion_vcpus


def workers_usd(plan: PlanInput, fc: Forecast, prices: Prices) -> float:
    """What the forecast's workers cost at each node type's market price (the head excluded)."""
    total = 0.0
    for w in plan.workers:
        secs = fc.instance_seconds.get(w.name, 0.0)
        table = prices.spot if w.market == "spot" else prices.ondemand
        total += secs / 3600.0 * table[w.instance_type]
    return round(total, 4)


def worker_vcpus(plan: PlanInput, fc: Forecast, market: str) -> int:
    return sum(fc.peak_by_type.get(w.name, 0) * w.vcpus for w in plan.workers if w.market == market)


def trainee_load(stage4: tuple[PlanInput, Forecast], stage6: tuple[PlanInput, Forecast],
                 prices: Prices, bastion_vcpus: int) -> TraineeLoad:
    """A trainee's footprint from a stage-4 forecast (autoscale) and a stage-6 one (mixed)."""
    p4, f4 = stage4
    p6, f6 = stage6
    head = p4.head
    slot = f4.scale_down_s if f4.scale_down_s is not None else p4.horizon_s
    baseline = NAT_GATEWAY_PER_HOUR + prices.ondemand[BASTION_TYPE] + prices.ondemand[head.instance_type]
    return TraineeLoad(
        head_type=head.instance_type, head_vcpus=head.vcpus, bastion_vcpus=bastion_vcpus,
        burst_workers=f4.peak_workers, wanted_workers=sum(f4.desired_by_type.values()),
        burst_ondemand_vcpus=worker_vcpus(p4, f4, "ondemand"), burst_spot_vcpus=worker_vcpus(p6, f6, "spot"),
        slot_s=slot, stage4_usd=workers_usd(p4, f4, prices), stage6_usd=workers_usd(p6, f6, prices),
        baseline_usd_per_hour=round(baseline, 4),
    )


def stage_plans(cfg_stage4: dict[str, Any], cfg_stage6: dict[str, Any],
                bastion_vcpus: int) -> tuple[PlanInput, PlanInput]:
    """The forecasts' inputs: stage 4's job (480 x 1 CPU x 300 s, `raylab plan`'s default) at the
    lesson's quota with the bastion in it, on the autoscale config (stage 4) and the mixed one (stage 6)."""
    from raylab.plan.inputs import plan_input

    kw: dict[str, Any] = {"workload": Workload(), "quota_ondemand": LESSON_QUOTA, "quota_spot": LESSON_QUOTA,
                          "boot_seconds": 120.0, "other_vcpus": bastion_vcpus}
    return plan_input(cfg_stage4, **kw), plan_input(cfg_stage6, **kw)


# --- the room ----------------------------------------------------------------------------------------
def fitting_stagger(quota_ondemand: int, trainees: int, load: TraineeLoad) -> int:
    """The most trainees whose stage-4 bursts fit the on-demand quota next to every lab's baseline."""
    free = quota_ondemand - trainees * load.baseline_vcpus
    if free < 0:
        return 0
    if load.burst_ondemand_vcpus <= 0:
        return trainees
    return min(trainees, free // load.burst_ondemand_vcpus)


@dataclass(frozen=True)
class QuotaRequest:
    code: str
    market: str
    vcpus: int  # what the room needs
    current: int | None  # the account's quota now, if given
    why: str

    @property
    def name(self) -> str:
        return QUOTA_NAMES[self.code]

    @property
    def increase_needed(self) -> bool | None:
        return None if self.current is None else self.vcpus > self.current

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name, "increase_needed": self.increase_needed}


def quota_requests(trainees: int, at_once: int, load: TraineeLoad, *, current_ondemand: int | None = None,
                   current_spot: int | None = None) -> list[QuotaRequest]:
    od = trainees * load.baseline_vcpus + at_once * load.burst_ondemand_vcpus
    out = [QuotaRequest(
        ON_DEMAND_QUOTA, "ondemand", od, current_ondemand,
        f"{trainees} x {load.baseline_vcpus} (head + bastion of every lab) + {at_once} x "
        f"{load.burst_ondemand_vcpus} (stage 4 workers at the wall, {at_once} at once)")]
    if load.burst_spot_vcpus:
        out.append(QuotaRequest(
            SPOT_QUOTA, "spot", at_once * load.burst_spot_vcpus, current_spot,
            f"{at_once} x {load.burst_spot_vcpus} (stage 6 spot workers, same stagger)"))
    return out


def day_cost(trainees: int, hours: float, load: TraineeLoad) -> dict[str, float]:
    baseline = trainees * hours * load.baseline_usd_per_hour
    s4, s6 = trainees * load.stage4_usd, trainees * load.stage6_usd
    return {"hours": hours, "baseline_usd_per_lab_hour": load.baseline_usd_per_hour,
            "baseline_usd": round(baseline, 2), "stage4_usd": round(s4, 2), "stage6_usd": round(s6, 2),
            "total_usd": round(baseline + s4 + s6, 2),
            "per_trainee_usd": round((baseline + s4 + s6) / trainees, 2)}


def room_plan(trainees: int, load: TraineeLoad, *, stagger: int | None = None, hours: float = DEFAULT_HOURS,
              quota_ondemand: int | None = None, quota_spot: int | None = None) -> dict[str, Any]:
    """The room's plan. Stagger: as given; else what the given on-demand quota fits; else everyone."""
    if not 1 <= trainees <= MAX_TRAINEES:
        raise RaylabError(f"--trainees {trainees} is out of range",
                          f"give a whole number between 1 and {MAX_TRAINEES}")
    if stagger is not None and not 1 <= stagger <= trainees:
        raise RaylabError(f"--stagger {stagger} is out of range",
                          f"give how many trainees run stage 4 at once, between 1 and {trainees}")
    fits = None if quota_ondemand is None else fitting_stagger(quota_ondemand, trainees, load)
    if stagger is not None:
        at_once, source = stagger, "as given by --stagger"
    elif fits is not None:
        at_once, source = max(1, fits), f"the most the on-demand quota {quota_ondemand} holds"
    else:
        at_once, source = trainees, "everyone: no --stagger or --quota-ondemand given"
    waves = math.ceil(trainees / at_once)
    requests = quota_requests(trainees, at_once, load, current_ondemand=quota_ondemand,
                              current_spot=quota_spot)
    return {
        "trainees": trainees,
        "per_trainee": {**asdict(load), "baseline_vcpus": load.baseline_vcpus,
                        "lesson_quota_vcpus": LESSON_QUOTA},
        "stagger": {
            "at_once": at_once, "source": source, "waves": waves,
            "fits_quota_now": fits,
            "slot_minutes": round(load.slot_s / 60.0, 1),
            "stage4_minutes": round(waves * load.slot_s / 60.0, 1),
        },
        "quota_requests": [r.as_dict() for r in requests],
        "lead_time": LEAD_TIME,
        "note": SHARED_QUOTA_NOTE,
        "cost": day_cost(trainees, hours, load),
    }
