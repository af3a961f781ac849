"""The twin: raylab's local "AWS" on 127.0.0.1 (one background process).

``python -m raylab.targets.local.twin --port P --state-dir D`` serves, on one port:

- moto's server (EC2, IAM, CloudFormation, STS, Service Quotas, ...), unmodified on disk;
- raylab's additions, installed in-process by wrapping moto's classes (``moto_patches.py``):
  EC2 vCPU quotas (visible through Service Quotas, enforced on RunInstances with AWS's error codes
  and texts), RunInstances honouring MaxCount, injectable InsufficientInstanceCapacity;
- the machines (``machines.py``): each running instance of a registered Ray cluster is a local
  Ray node;
- a small JSON control API under ``/raylab/`` (see ``ROUTES`` below; ``control.py`` is its client).

Other modules may add routes with ``route(method, path)`` (the IMDS of the spot stage lives in
``imds.py``: if it defines ``register(twin)``, it is called at start-up).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raylab.targets.local import ec2rules
from raylab.targets.local.machines import MAX_BOOT_SLOTS, Machines
from raylab.targets.local.moto_patches import install_moto_patches

log = logging.getLogger("raylab.twin")

Handler = Callable[["Twin", dict[str, Any], dict[str, Any]], Any]
ROUTES: dict[tuple[str, str], Handler] = {}
# Raw handlers by path prefix (e.g. an IMDS under "/imds/"): fn(twin, method, path, headers, body)
# -> (status, content_type, bytes). Checked before the JSON routes and moto.
RawHandler = Callable[["Twin", str, str, dict[str, str], bytes], tuple[int, str, bytes]]
PREFIXES: list[tuple[str, RawHandler]] = []


def mount(prefix: str, fn: RawHandler) -> None:
    """Serve every request whose path starts with ``prefix`` with ``fn`` (for imds.py and friends)."""
    PREFIXES.append((prefix, fn))


def route(method: str, path: str) -> Callable[[Handler], Handler]:
    """Register a control route: ``handler(twin, body, query) -> JSON-able`` (or (status, obj))."""

    def deco(fn: Handler) -> Handler:
        ROUTES[(method.upper(), path)] = fn
        return fn

    return deco


class TwinError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Twin:
    def __init__(self, state_dir: Path, quotas: dict[str, int]) -> None:
        self.state_dir = state_dir
        self.lock = threading.RLock()
        self.quotas: dict[str, int] = dict(quotas)
        self.faults: list[ec2rules.CapacityFault] = []
        self._fault_seq = 0
        self.events: list[dict[str, Any]] = []
        self._events_path = state_dir / "twin-events.jsonl"
        self.started = time.time()
        self.machines = Machines(self.snapshot, self.terminate_instance, self.event, state_dir / "logs")

    # --- events ----------------------------------------------------------------------------
    def event(self, kind: str, **data: Any) -> dict[str, Any]:
        with self.lock:
            ev = {"seq": len(self.events) + 1, "t": round(time.time(), 3), "kind": kind, **data}
            self.events.append(ev)
            with contextlib.suppress(OSError), open(self._events_path, "a") as fh:
                fh.write(json.dumps(ev, default=str) + "\n")
        return ev

    # --- moto access ---------------------------------------------------------------------------
    @staticmethod
    def _backends() -> list[Any]:
        from moto.ec2.models import ec2_backends

        out = []
        for account in list(ec2_backends.keys()):
            per_region = ec2_backends[account]
            for region in list(per_region.keys()):
                out.append(per_region[region])
        return out

    @staticmethod
    def describe(backend: Any, inst: Any) -> dict[str, Any]:
        from moto.ec2.models.instance_types import INSTANCE_TYPES

        itype = inst.instance_type
        vcpus = int(INSTANCE_TYPES.get(itype, {}).get("VCpuInfo", {}).get("DefaultVCpus", 0))
        return {"id": inst.id, "type": itype, "state": inst.state, "vcpus": vcpus,
                "market": "spot" if inst.lifecycle == "spot" else "on-demand",
                "az": inst.placement, "region": backend.region_name,
                "tags": dict(backend.tags.get(inst.id, {}))}

    def snapshot(self, region: str | None = None) -> list[dict[str, Any]]:
        """Every instance moto knows (all regions, or one), as plain dicts."""
        for _ in range(5):
            try:
                out: list[dict[str, Any]] = []
                for b in self._backends():
                    if region and b.region_name != region:
                        continue
                    for res in list(b.reservations.values()):
                        out.extend(self.describe(b, i) for i in list(res.instances))
                return out
            except RuntimeError:  # a dict changed while we iterated; try again
                time.sleep(0.05)
        return []

    def terminate_instance(self, instance_id: str, reason: str) -> None:
        with self.lock:
            for b in self._backends():
                with contextlib.suppress(Exception):
                    inst = b.get_instance(instance_id)
                    if inst.state not in ("terminated", "shutting-down"):
                        b.terminate_instances([instance_id])
                        self.event("terminate", instance_ids=[instance_id], by="twin", reason=reason)
                    return

    # --- RunInstances rules ----------------------------------------------------------------------
    def decide_launch(self, *, region: str, itype: str, market: str, az: str, min_count: int,
                      max_count: int) -> int:
        """How many instances to launch; raises moto's EC2ClientError with AWS's code otherwise."""
        from moto.ec2.exceptions import EC2ClientError
        from moto.ec2.models.instance_types import INSTANCE_TYPES

        now = time.time()
        for f in ec2rules.active_faults(self.faults, now):
            if f.matches(market, itype, az, now):
                code, msg = ec2rules.capacity_error(market, itype, az)
                self.event("capacity_error", code=code, instance_type=itype, market=market, az=az,
                           requested=max_count, fault_id=f.id)
                raise EC2ClientError(code, msg)
        vcpus = int(INSTANCE_TYPES.get(itype, {}).get("VCpuInfo", {}).get("DefaultVCpus", 0))
        qcode = ec2rules.quota_code_for(itype, market)
        limit = self.quotas.get(qcode) if qcode else None
        used = ec2rules.vcpus_used(self.snapshot(region), qcode) if qcode else 0
        n = ec2rules.launchable(min_count, max_count, vcpus, used, limit)
        if n == 0:
            code, msg = ec2rules.limit_error(qcode or "", int(limit or 0))
            self.event("quota_error", code=code, quota_code=qcode, limit=limit, used=used,
                       instance_type=itype, market=market, vcpus_each=vcpus, requested=max_count)
            raise EC2ClientError(code, msg)
        if n < max_count and limit is not None:
            # AWS fills what fits without an error; the wall shows as a short launch (and the
            # autoscaler's retry of the rest meets the error above)
            self.event("quota_partial", quota_code=qcode, limit=limit, used=used, instance_type=itype,
                       market=market, vcpus_each=vcpus, requested=max_count, launched=n)
        return n


# --- control API ------------------------------------------------------------------------------------
@route("GET", "/raylab/health")
def _health(twin: Twin, body: dict, q: dict) -> Any:
    return {"ok": True, "pid": os.getpid(), "uptime_s": round(time.time() - twin.started, 1)}


@route("GET", "/raylab/quotas")
def _quotas(twin: Twin, body: dict, q: dict) -> Any:
    return {"quotas": dict(twin.quotas), "names": ec2rules.QUOTA_NAMES}


@route("PUT", "/raylab/quotas")
def _set_quotas(twin: Twin, body: dict, q: dict) -> Any:
    with twin.lock:
        for key, value in body.items():
            code = ec2rules.QUOTA_ALIASES.get(key)
            if code is None:
                raise TwinError(400, f"unknown quota {key!r}: use on-demand, spot, or a quota code")
            if not isinstance(value, int | float) or value < 0:
                raise TwinError(400, f"quota {key!r} must be a number of vCPUs >= 0")
            twin.quotas[code] = int(value)
        twin.event("quota_set", quotas=dict(twin.quotas))
        return {"quotas": dict(twin.quotas)}


@route("GET", "/raylab/faults/capacity")
def _faults(twin: Twin, body: dict, q: dict) -> Any:
    return {"faults": [f.as_dict() for f in ec2rules.active_faults(twin.faults, time.time())]}


@route("POST", "/raylab/faults/capacity")
def _add_fault(twin: Twin, body: dict, q: dict) -> Any:
    seconds = body.get("seconds")
    with twin.lock:
        twin._fault_seq += 1
        f = ec2rules.CapacityFault(market=str(body.get("market", "*")),
                                   instance_type=str(body.get("instance_type", "*")),
                                   az=str(body.get("az", "*")),
                                   until=(time.time() + float(seconds)) if seconds else None,
                                   id=twin._fault_seq)
        twin.faults.append(f)
        twin.event("fault_set", fault=f.as_dict())
    return f.as_dict()


@route("DELETE", "/raylab/faults/capacity")
def _clear_faults(twin: Twin, body: dict, q: dict) -> Any:
    with twin.lock:
        fid = q.get("id")
        before = len(twin.faults)
        twin.faults = [f for f in twin.faults if fid is not None and str(f.id) != str(fid)]
        twin.event("fault_clear", removed=before - len(twin.faults))
    return {"faults": [f.as_dict() for f in twin.faults]}


@route("GET", "/raylab/boot")
def _boot(twin: Twin, body: dict, q: dict) -> Any:
    m = twin.machines
    return {"boot_delay_s": m.boot_delay_s, "max_concurrent_boots": m.max_concurrent_boots,
            "boot_failure_node_types": sorted(m.boot_failure_types)}


@route("PUT", "/raylab/boot")
def _set_boot(twin: Twin, body: dict, q: dict) -> Any:
    m = twin.machines
    with m.lock:
        if "boot_delay_s" in body:
            m.boot_delay_s = max(0.0, float(body["boot_delay_s"]))
        if "max_concurrent_boots" in body:
            m.max_concurrent_boots = max(1, min(MAX_BOOT_SLOTS, int(body["max_concurrent_boots"])))
        if "boot_failure_node_types" in body:
            m.boot_failure_types = set(body["boot_failure_node_types"] or [])
    return _boot(twin, {}, {})


@route("GET", "/raylab/clusters")
def _clusters(twin: Twin, body: dict, q: dict) -> Any:
    return {"clusters": {n: r.__dict__ for n, r in twin.machines.clusters.items()}}


@route("PUT", "/raylab/clusters")
def _register(twin: Twin, body: dict, q: dict) -> Any:
    name = str(body.get("name", ""))
    if not name or "gcs_address" not in body or "temp_root" not in body:
        raise TwinError(400, "a cluster registration needs name, gcs_address and temp_root")
    reg = twin.machines.register(name, body)
    twin.event("cluster_registered", cluster=name, gcs_address=reg.gcs_address)
    return {"cluster": reg.__dict__}


@route("DELETE", "/raylab/clusters")
def _unregister(twin: Twin, body: dict, q: dict) -> Any:
    twin.machines.unregister(str(q.get("name", "")))
    return {"ok": True}


@route("GET", "/raylab/machines")
def _machines(twin: Twin, body: dict, q: dict) -> Any:
    return {"machines": twin.machines.listing()}


@route("GET", "/raylab/instances")
def _instances(twin: Twin, body: dict, q: dict) -> Any:
    return {"instances": twin.snapshot(q.get("region"))}


@route("GET", "/raylab/events")
def _events(twin: Twin, body: dict, q: dict) -> Any:
    since = int(q.get("since", 0) or 0)
    with twin.lock:
        return {"events": [e for e in twin.events if e["seq"] > since]}


@route("POST", "/raylab/shutdown")
def _shutdown(twin: Twin, body: dict, q: dict) -> Any:
    threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    return {"ok": True}


def make_app(twin: Twin) -> Callable[..., Any]:
    """WSGI: /raylab/* -> the control API; everything else -> moto's dispatcher."""
    from urllib.parse import parse_qs

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    moto_app = DomainDispatcherApplication(create_backend_app)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        for prefix, raw_fn in PREFIXES:
            if path.startswith(prefix):
                length = int(environ.get("CONTENT_LENGTH") or 0)
                raw = environ["wsgi.input"].read(length) if length else b""
                headers = {k[5:].replace("_", "-").lower(): v
                           for k, v in environ.items() if k.startswith("HTTP_")}
                st, ctype, payload = raw_fn(twin, environ.get("REQUEST_METHOD", "GET"), path, headers, raw)
                start_response(f"{st} {'OK' if st < 400 else 'Error'}",
                               [("Content-Type", ctype), ("Content-Length", str(len(payload)))])
                return [payload]
        handler = ROUTES.get((environ.get("REQUEST_METHOD", "GET"), path.rstrip("/") or "/"))
        if handler is None and not path.startswith("/raylab/"):
            return moto_app(environ, start_response)
        status, obj = 200, None
        try:
            if handler is None:
                raise TwinError(404, f"no control route {environ.get('REQUEST_METHOD')} {path}")
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length else b""
            body = json.loads(raw) if raw else {}
            query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
            obj = handler(twin, body, query)
            if isinstance(obj, tuple):
                status, obj = obj
        except TwinError as e:
            status, obj = e.status, {"error": str(e)}
        except (ValueError, TypeError, KeyError) as e:
            status, obj = 400, {"error": f"{type(e).__name__}: {e}"}
        data = json.dumps(obj, default=str).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
        start_response(f"{status} {reason}", [("Content-Type", "application/json"),
                                              ("Content-Length", str(len(data)))])
        return [data]

    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="raylab's local AWS twin (moto + quotas + machines)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--quota-on-demand", type=int, default=ec2rules.DEFAULT_VCPU_QUOTA)
    p.add_argument("--quota-spot", type=int, default=ec2rules.DEFAULT_VCPU_QUOTA)
    p.add_argument("--boot-delay", type=float, default=0.0)
    p.add_argument("--max-concurrent-boots", type=int, default=None,
                   help="nodes booting at once (default: 1 per core, at least 2; see machines.boot_slots)")
    a = p.parse_args(argv)
    if __name__ == "__main__":  # `python -m`: let `import raylab.targets.local.twin` find THIS module
        sys.modules.setdefault("raylab.targets.local.twin", sys.modules[__name__])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request is noise
    a.state_dir.mkdir(parents=True, exist_ok=True)
    twin = Twin(a.state_dir, {ec2rules.ON_DEMAND_QUOTA: a.quota_on_demand, ec2rules.SPOT_QUOTA: a.quota_spot})
    twin.machines.boot_delay_s = a.boot_delay
    if a.max_concurrent_boots:
        twin.machines.max_concurrent_boots = a.max_concurrent_boots
    install_moto_patches(twin)
    with contextlib.suppress(ImportError):
        from raylab.targets.local import imds  # owned by the spot stage; optional

        if hasattr(imds, "register"):
            imds.register(twin)

    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", a.port, make_app(twin), threaded=True,
                         request_handler=MotoRequestHandler)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    twin.machines.start()
    twin.event("twin_start", port=a.port, pid=os.getpid())
    log.info("twin listening on http://127.0.0.1:%d", a.port)
    try:
        server.serve_forever()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        log.info("twin stopping: stopping every machine")
        twin.machines.shutdown()
        twin.event("twin_stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
