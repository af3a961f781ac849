"""Ray's side of ``raylab config check``: Ray's own schema (read from the installed Ray 2.60) and Ray's
validator run on a config, its errors turned into findings; ``_covered`` drops a Ray finding that says
nothing new next to one of raylab's ERRORs at the same place.

Imports: the finding vocabulary (``findings``) only; Ray and jsonschema inside the functions.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from raylab.cluster.findings import ERROR, FILE, RAY_DOCS, WARN, Finding, key_path


# --- Ray's schema, read from the installed Ray --------------------------------------------------------
@lru_cache(maxsize=1)
def ray_schema() -> dict[str, Any]:
    import json
    import os

    import ray.autoscaler

    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        return json.load(f)


def schema_keys(*where: str) -> frozenset[str]:
    """Known keys at the top level (no args) or under a top-level section (provider, auth, docker)."""
    props = ray_schema()["properties"]
    if not where:
        return frozenset(props)
    return frozenset(props[where[0]].get("properties", {}))


def node_type_keys() -> frozenset[str]:
    nts = ray_schema()["properties"]["available_node_types"]["patternProperties"][".*"]
    return frozenset(nts["properties"])


# Provider keys Ray's AWS provider and autoscaler read that its schema does not list.
AWS_PROVIDER_EXTRA = frozenset({
    "aws_credentials", "key_pair", "disable_launch_config_check", "foreground_node_launch",
    "worker_liveness_check", "worker_rpc_drain", "launch_multiple", "use_external_head_ip",
})


# --- Ray's own validator ----------------------------------------------------------------------------
def _schema_finding(e: Any) -> Finding:
    parts: list[str | int] = list(e.absolute_path)
    m = re.search(r"'([^']+)' was unexpected", e.message)
    if e.validator == "additionalProperties" and m:
        parts.append(m.group(1))
    return Finding(ERROR, key_path(*parts), f"Ray's schema rejects it: {e.message}", f"see {RAY_DOCS}",
                   "ray-schema")


def _ray_error(e: Exception) -> Finding:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    path = next((k for k in ("head_node_type", "max_workers") if k in text), FILE)
    return Finding(ERROR, path, f"Ray rejects the config: {type(e).__name__}: {text}", f"see {RAY_DOCS}",
                   "ray-schema")


def ray_findings(cfg: Mapping[str, Any]) -> list[Finding]:
    """Ray's own ``prepare_config`` then ``validate_config`` (quietly), as `ray up` calls them; every
    complaint of Ray's schema (not only the first, which is all ``validate_config`` raises) as findings."""
    import jsonschema

    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except Exception as e:  # noqa: BLE001
        return [Finding(WARN, FILE, f"Ray's validator is unavailable: {type(e).__name__}: {e}",
                        "install ray[default]==2.60.0", "ray-schema")]
    sink = io.StringIO()
    before = logging.root.manager.disable
    logging.disable(logging.CRITICAL)  # Ray logs INFO/WARNING lines through its own stderr handler
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            try:
                prepared = prepare_config(copy.deepcopy(dict(cfg)))
            except Exception as e:  # noqa: BLE001 - KeyError/ValueError from Ray's merging
                return [_ray_error(e)]
            found = [_schema_finding(e) for e in
                     jsonschema.Draft7Validator(ray_schema()).iter_errors(prepared)]
            try:
                validate_config(prepared)
            except jsonschema.ValidationError as e:
                if not found:
                    found.append(_schema_finding(e))
            except Exception as e:  # noqa: BLE001 - Ray's own checks after the schema
                found.append(_ray_error(e))
            return found
    finally:
        logging.disable(before)


def _covered(ray: Finding, ours: list[Finding]) -> bool:
    """Ray's finding says nothing new when one of ours is an ERROR at, above or below its path."""
    for f in ours:
        if f.level != ERROR:
            continue
        if ray.path == FILE or f.path == ray.path or f.path.startswith(ray.path + ".") \
                or f.path.startswith(ray.path + "[") or ray.path.startswith(f.path + "."):
            return True
    return False
