"""The local target's per-instance IMDSv2 inside the twin: ``register(twin)`` serves every instance's
metadata, runs a spot interruption watcher beside every local spot node and adds the reclaim routes.

The metadata server itself (store, handlers, ``ImdsServer``) is ``raylab.aws.imds_server``, shared
with the rehearsal; its names are re-exported here. ``python -m raylab.targets.local.imds --port N``
serves one standalone.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from raylab.aws.imds_server import (  # noqa: F401 - re-exported: the IMDS's public names
    ACTIONS,
    CONTROL_PREFIX,
    MAX_TTL,
    TOKEN_HEADER,
    TOKEN_TTL_HEADER,
    ImdsServer,
    InstanceMetadata,
    MetadataStore,
    Response,
    aws_time,
    handle,
    handle_control,
)

# --- inside the twin -------------------------------------------------------------------------------
#
# twin.py calls ``register(twin)`` at start-up. It adds, without touching moto:
# - an IMDS for every EC2 instance of the twin on its own loopback port (``GET /raylab/imds``);
# - a spot interruption watcher process beside every running local spot node (the local twin of the
#   worker start command that runs it on AWS), stopped when the node stops;
# - control routes: ``POST /raylab/imds/interruption {instance_id, seconds, action}``,
#   ``POST /raylab/imds/rebalance {instance_id}``, ``POST /raylab/spot/reclaim {instance_ids,
#   notice_s}`` (notices, then EC2 terminates them at the deadline), ``POST /raylab/spot/event``
#   (the capacity guard's decisions into the twin's timeline), ``GET /raylab/spot/watchers``.

WATCHER_INTERVAL_S = 1.0  # AWS advises 5 s against 2-minute notices; local notices are scaled down


def _twin_lookup(twin: Any) -> Callable[[str], dict[str, Any] | None]:
    def lookup(instance_id: str) -> dict[str, Any] | None:
        for i in twin.snapshot():
            if i["id"] == instance_id:
                return {"instance_type": i["type"], "az": i["az"] or "", "lifecycle": i["market"]}
        return None

    return lookup


class WatcherManager:
    """One ``raylab.spot.imds_watcher`` process per running local spot node of a registered cluster."""

    def __init__(self, twin: Any, imds: ImdsServer, interval: float = WATCHER_INTERVAL_S) -> None:
        self.twin = twin
        self.imds = imds
        self.interval = interval
        self.procs: dict[str, Any] = {}  # instance id -> Popen
        self.logs: dict[str, str] = {}
        self._stop = threading.Event()

    def start(self) -> None:
        import atexit

        threading.Thread(target=self._loop, name="spot-watchers", daemon=True).start()
        atexit.register(self.shutdown)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # never take the twin down
                self.reconcile()
            self._stop.wait(1.0)

    def reconcile(self) -> None:
        machines = {m["instance_id"]: m for m in self.twin.machines.listing()}
        for iid, m in machines.items():
            if m["state"] == "running" and m["market"] == "spot" and iid not in self.procs:
                reg = self.twin.machines.clusters.get(m["cluster"])
                if reg is not None:
                    self._spawn(iid, reg.gcs_address)
        for iid, p in list(self.procs.items()):
            m = machines.get(iid)
            if m is None or m["state"] not in ("booting", "running"):
                self._end(iid, p)

    def _spawn(self, iid: str, gcs_address: str) -> None:
        import os
        import subprocess
        import sys
        from pathlib import Path

        from raylab.targets.local.head import driver_env

        log = Path(self.twin.state_dir) / "logs" / f"watcher-{iid}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "raylab.spot.imds_watcher", f"--gcs-address={gcs_address}",
               f"--instance-id={iid}", f"--endpoint={self.imds.endpoint_for(iid)}",
               f"--interval={self.interval}", f"--log={log}", "--exit-with-parent"]
        env = {k: v for k, v in driver_env(dict(os.environ)).items()
               if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "RAY_CLOUD_INSTANCE_ID")}
        self.procs[iid] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=open(log, "ab"), env=env,  # noqa: SIM115
                                           start_new_session=True)
        self.logs[iid] = str(log)
        self.twin.event("spot_watcher_start", instance_id=iid, pid=self.procs[iid].pid, log=str(log))

    def _end(self, iid: str, p: Any) -> None:
        from raylab.procs import stop_group

        self.procs.pop(iid, None)
        threading.Thread(target=stop_group, args=(p.pid, 3.0), daemon=True).start()
        self.twin.event("spot_watcher_stop", instance_id=iid, pid=p.pid)

    def listing(self) -> list[dict[str, Any]]:
        return [{"instance_id": i, "pid": p.pid, "alive": p.poll() is None, "log": self.logs.get(i)}
                for i, p in list(self.procs.items())]

    def shutdown(self) -> None:
        from raylab.procs import stop_group

        self._stop.set()
        for iid, p in list(self.procs.items()):
            self.procs.pop(iid, None)
            stop_group(p.pid, 2.0)


def reclaim(twin: Any, store: MetadataStore, instance_ids: list[str], notice_s: float,
            action: str = "terminate") -> dict[str, Any]:
    """EC2 reclaims spot instances: a notice now (when notice_s > 0), termination at the deadline."""
    known = {i["id"]: i for i in twin.snapshot()}
    bad = [i for i in instance_ids if i not in known or known[i]["state"] != "running"]
    if bad:
        raise ValueError(f"not running instances: {', '.join(bad)}")
    notices = {}
    for iid in instance_ids:
        if notice_s > 0:
            notices[iid] = store.mark_interruption(iid, notice_s, action)
            twin.event("spot_interruption_notice", instance_id=iid, node_type=known[iid]["tags"].get(
                "ray-user-node-type"), market=known[iid]["market"], **notices[iid])

    def terminate() -> None:
        for iid in instance_ids:
            twin.event("spot_reclaim", instance_id=iid, notice_s=notice_s,
                       node_type=known[iid]["tags"].get("ray-user-node-type"))
            twin.terminate_instance(iid, "Server.SpotInstanceTermination: spot instance reclaimed by EC2")

    if notice_s > 0:
        threading.Timer(notice_s, terminate).start()
    else:
        terminate()
    return {"instance_ids": instance_ids, "notice_s": notice_s, "notices": notices,
            "terminate_at": round(time.time() + max(0.0, notice_s), 3)}


def register(twin: Any) -> ImdsServer:
    """Mount the IMDS, the watchers and the spot control routes in the twin (called by twin.py)."""
    import sys

    # The twin runs as ``python -m raylab.targets.local.twin`` (module ``__main__``): register on the
    # ROUTES of the module that defines the running twin, not on a second import of twin.py.
    route = sys.modules[type(twin).__module__].route

    store = MetadataStore(lookup=_twin_lookup(twin))
    srv = ImdsServer(store).start()
    watchers = WatcherManager(twin, srv)
    twin.imds = srv
    twin.spot_watchers = watchers

    @route("GET", "/raylab/imds")
    def _imds(t: Any, body: dict, q: dict) -> Any:
        with store._lock:
            notices = {i: {"instance_action": m.instance_action, "rebalance": m.rebalance}
                       for i, m in store.instances.items() if m.instance_action or m.rebalance}
        return {"endpoint": srv.base_url, "per_instance": srv.base_url + "/<instance-id>", "notices": notices}

    @route("POST", "/raylab/imds/interruption")
    def _interrupt(t: Any, body: dict, q: dict) -> Any:
        iid = str(body["instance_id"])
        if store.get(iid) is None:
            return 404, {"error": f"no instance {iid}"}
        notice = store.mark_interruption(iid, float(body.get("seconds", 120)),
                                         str(body.get("action", "terminate")))
        t.event("spot_interruption_notice", instance_id=iid, **notice)
        return notice

    @route("POST", "/raylab/imds/rebalance")
    def _rebalance(t: Any, body: dict, q: dict) -> Any:
        iid = str(body["instance_id"])
        if store.get(iid) is None:
            return 404, {"error": f"no instance {iid}"}
        notice = store.mark_rebalance(iid)
        t.event("rebalance_recommendation", instance_id=iid, **notice)
        return notice

    @route("POST", "/raylab/spot/reclaim")
    def _reclaim(t: Any, body: dict, q: dict) -> Any:
        return reclaim(t, store, [str(i) for i in body.get("instance_ids", [])],
                       float(body.get("notice_s", 0) or 0), str(body.get("action", "terminate")))

    @route("POST", "/raylab/spot/event")
    def _event(t: Any, body: dict, q: dict) -> Any:
        data = {k: v for k, v in body.items() if k not in ("seq", "t")}
        kind = str(data.pop("kind", "guard"))
        return t.event(kind, source="guard", **data)

    @route("GET", "/raylab/spot/watchers")
    def _watchers(t: Any, body: dict, q: dict) -> Any:
        return {"watchers": watchers.listing()}

    watchers.start()
    twin.event("imds_start", endpoint=srv.base_url)
    return srv


def main(argv: list[str] | None = None) -> None:
    """``python -m raylab.targets.local.imds --port N``: serve until killed (tests, manual drills)."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    srv = ImdsServer(port=args.port)
    print(json.dumps({"endpoint": srv.base_url}), flush=True)
    srv._srv.serve_forever()


if __name__ == "__main__":
    main()
