"""Client of the twin's control API (JSON over HTTP on the twin's port, under /raylab/).

Routes (see twin.py):
  GET  /raylab/health                      {ok, pid, uptime_s}
  GET  /raylab/quotas | PUT {on-demand|spot|L-...: vcpus}
  GET  /raylab/faults/capacity | POST {market, instance_type, az, seconds} | DELETE [?id=N]
  GET  /raylab/boot | PUT {boot_delay_s, max_concurrent_boots, boot_failure_node_types}
  GET  /raylab/clusters | PUT {name, gcs_address, temp_root, node_types, object_store_memory}
       DELETE ?name=...
  GET  /raylab/machines                    instance id -> Ray node pid, state, times
  GET  /raylab/instances[?region=]         every EC2 instance moto knows, as plain dicts
  GET  /raylab/events[?since=seq]          launch / quota_partial (filled short of MaxCount at the
                                           wall, no error: as AWS) / quota_error / capacity_error /
                                           terminate / stop / node_boot|running|stop|exit|boot_failed
  POST /raylab/shutdown                    stop every machine, then the twin
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

from raylab.errors import RaylabError
from raylab.targets.local.render import require_loopback


class TwinClient:
    def __init__(self, endpoint_url: str, timeout: float = 10.0) -> None:
        self.base = require_loopback(endpoint_url).rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              query: dict[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.base}/raylab/{path.lstrip('/')}"
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - loopback only
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            try:
                msg = json.loads(e.read()).get("error", str(e))
            except Exception:  # noqa: BLE001
                msg = str(e)
            raise RaylabError(f"twin refused {method} /raylab/{path}: {msg}",
                              "see .raylab/logs/twin.log") from None
        except (urllib.error.URLError, OSError) as e:
            raise RaylabError(f"the local twin at {self.base} does not answer ({e})",
                              "run `raylab up` to start it (or `raylab down` to clean a stale run)") from None

    # --- verbs -----------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._call("GET", "health")

    def alive(self) -> bool:
        try:
            return bool(self.health().get("ok"))
        except RaylabError:
            return False

    def quotas(self) -> dict[str, int]:
        return self._call("GET", "quotas")["quotas"]

    def set_quotas(self, **vcpus: int) -> dict[str, int]:
        """e.g. set_quotas(on_demand=64, spot=32) or set_quotas(**{"L-1216C47A": 64})."""
        return self._call("PUT", "quotas", {k.replace("_", "-") if not k.startswith("L-") else k: v
                                            for k, v in vcpus.items()})["quotas"]

    def capacity_faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "faults/capacity")["faults"]

    def add_capacity_fault(self, *, market: str = "*", instance_type: str = "*", az: str = "*",
                           seconds: float | None = None) -> dict[str, Any]:
        return self._call("POST", "faults/capacity",
                          {"market": market, "instance_type": instance_type, "az": az, "seconds": seconds})

    def clear_capacity_faults(self, fault_id: int | None = None) -> None:
        self._call("DELETE", "faults/capacity", query={"id": fault_id})

    def boot(self) -> dict[str, Any]:
        return self._call("GET", "boot")

    def set_boot(self, **settings: Any) -> dict[str, Any]:
        return self._call("PUT", "boot", settings)

    def register_cluster(self, reg: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", "clusters", reg)

    def unregister_cluster(self, name: str) -> None:
        self._call("DELETE", "clusters", query={"name": name})

    def machines(self) -> list[dict[str, Any]]:
        return self._call("GET", "machines")["machines"]

    def instances(self, region: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "instances", query={"region": region})["instances"]

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        return self._call("GET", "events", query={"since": since})["events"]

    def shutdown(self) -> None:
        self._call("POST", "shutdown", {})
