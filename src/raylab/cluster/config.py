"""Render the lab's cluster YAML: template + scenario overlay + stage outputs -> what `ray up` gets.

``configs/ray-cluster.yaml`` is a template whose stage-dependent values are placeholders written
``"{{ Name }}"``; ``configs/scenarios/<scenario>.yaml`` is an overlay merged on top (mappings merge
key by key, other values replace, ``null`` deletes). ``render`` fills every placeholder from the
stage outputs (CloudFormation ∪ Terraform, flat strings) plus values derived from the lab id, and
refuses (RaylabError naming it) to return a config with a placeholder left. The node command lists
the config does not give itself (setup and start commands) come from ``raylab.cluster.bootstrap``.
For the local target the filled config is handed to ``raylab.cluster.local_form.to_local``.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from raylab.context import SCENARIOS, TARGETS
from raylab.errors import RaylabError
from raylab.labid import names

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_WHOLE = re.compile(r"^\s*\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\s*$")


# --- files ------------------------------------------------------------------------------------
def default_base() -> Path:
    """configs/ray-cluster.yaml of the project (repo checkout or the current directory)."""
    from raylab.context import project_root

    return project_root() / "configs" / "ray-cluster.yaml"


def scenario_path(scenario: str, base: Path | None = None) -> Path:
    if scenario not in SCENARIOS:
        raise RaylabError(f"unknown scenario {scenario!r}", f"use one of: {', '.join(SCENARIOS)}")
    return (base or default_base()).parent / "scenarios" / f"{scenario}.yaml"


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from a file, or RaylabError (missing, a directory, syntax, not a mapping)."""
    import yaml

    if not path.exists():
        raise RaylabError(f"{path}: no such file", "check the path")
    if path.is_dir():
        raise RaylabError(f"{path} is a directory, not a YAML file", "pass the cluster YAML file itself")
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise RaylabError(f"{path}: cannot read it: {e}", "check the file's permissions and encoding") from e
    except yaml.YAMLError as e:
        raise RaylabError(f"{path}: YAML syntax error: {yaml_error_text(e)}",
                          f"fix it, then run `raylab config check {path}`") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RaylabError(f"{path}: top level is a {type(data).__name__}, not a mapping",
                          "a cluster YAML is a mapping of keys such as cluster_name, provider, ...")
    return data


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` that also refuses duplicate keys (PyYAML silently keeps the last one)."""
    import yaml

    class _StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` is not a duplicate
                continue
            key = loader.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {seen[key]}): YAML keeps only "
                        "the last one", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
            except TypeError:  # unhashable key: let PyYAML report it
                break
        return loader.construct_mapping(node, deep=True)

    _StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_error_text(e: Exception) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return str(problem)


def dump_yaml(cfg: Mapping[str, Any]) -> str:
    """Plain block-style YAML, keys in the config's order."""
    import yaml

    return yaml.safe_dump(_plain(cfg), sort_keys=False, default_flow_style=False, width=4096,
                          allow_unicode=True)


def write_rendered(cfg: Mapping[str, Any], path: Path) -> Path:
    """Write a rendered config atomically (write + rename); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dump_yaml(cfg), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


# --- merging and placeholders (pure) --------------------------------------------------------------
def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, other values replace, ``None`` deletes the key."""
    out = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def placeholders(obj: Any) -> list[str]:
    """Placeholder names left anywhere in ``obj`` (sorted, unique)."""
    found: set[str] = set()

    def walk(o: Any) -> None:
        if isinstance(o, str):
            found.update(PLACEHOLDER.findall(o))
        elif isinstance(o, Mapping):
            for k, v in o.items():
                walk(k)
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(obj)
    return sorted(found)


def fill(obj: Any, values: Mapping[str, str]) -> Any:
    """Replace placeholders; a list item that is exactly one placeholder whose value has commas
    becomes one item per value. Unknown names are left in place (``render`` then refuses)."""

    def sub(s: str) -> str:
        return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), s)

    if isinstance(obj, str):
        return sub(obj)
    if isinstance(obj, Mapping):
        return {k: fill(v, values) for k, v in obj.items()}
    if isinstance(obj, list):
        out: list[Any] = []
        for item in obj:
            m = _WHOLE.match(item) if isinstance(item, str) else None
            if m and m.group(1) in values:
                out.extend(p.strip() for p in str(values[m.group(1)]).split(",") if p.strip())
            else:
                out.append(fill(item, values))
        return out
    return obj


def subnet_values(values: Mapping[str, str]) -> dict[str, str]:
    """``PrivateSubnetA``/``PrivateSubnetB``: the first and second of stage 1's ``PrivateSubnetIds``
    (one per AZ), so a scenario can put spot and on-demand workers in different AZs (one subnet: both)."""
    subnets = [p.strip() for p in str(values.get("PrivateSubnetIds", "")).split(",") if p.strip()]
    if not subnets:
        return {}
    return {"PrivateSubnetA": subnets[0], "PrivateSubnetB": subnets[1] if len(subnets) > 1 else subnets[0]}


def derived_values(lab: str) -> dict[str, str]:
    """Values raylab derives from the lab id; the stage outputs may override any of them."""
    n = names(lab)
    return {
        "lab": lab,
        "cluster_name": n["cluster"],
        "key_pair": n["key_pair"],
        "ssh_private_key": f".raylab/ssh/{n['key_pair']}.pem",
        "known_hosts": ".raylab/ssh/known_hosts",
        "bastion_user": "ec2-user",
        # where the spot guard and watcher live on this machine (file_mounts copies them to the nodes)
        "raylab_spot_dir": str(Path(__file__).resolve().parents[1] / "spot"),
    }


@dataclass(frozen=True)
class RenderInputs:
    """Everything a lab's cluster YAML is rendered from: stage 3 renders it, stage 5 re-renders it
    from the same inputs (only ``base``, the edited copy, differs), so neither can forget one."""

    target: str
    scenario: str
    lab: str
    outputs: Mapping[str, str]
    scale: int = 4
    endpoint_url: str | None = None
    base: Path | None = None  # None: configs/ray-cluster.yaml
    node_python: str | None = None  # None: the operator's Python minor

    def as_kwargs(self) -> dict[str, Any]:
        """``render``'s keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def render(*, target: str, scenario: str, lab: str, outputs: Mapping[str, str], scale: int = 4,
           endpoint_url: str | None = None, base: Path | None = None,
           node_python: str | None = None) -> dict[str, Any]:
    """The final cluster config for ``target`` (see contracts.md). Raises RaylabError when the
    scenario/target is unknown, a file is unreadable, a placeholder has no value, or Ray has no wheel
    for ``node_python`` (the nodes' Python minor; default the operator's)."""
    if target not in TARGETS:
        raise RaylabError(f"unknown target {target!r}", "use --target local (default) or --target aws")
    base_path = base or default_base()
    cfg = merge(load_yaml(base_path), load_yaml(scenario_path(scenario, base_path)))
    if not cfg:
        raise RaylabError(f"{base_path} is empty", "restore configs/ray-cluster.yaml from git")
    values = {**derived_values(lab), **{str(k): str(v) for k, v in outputs.items() if v is not None}}
    values = {**subnet_values(values), **values}
    filled = fill(cfg, values)
    left = placeholders(filled)
    if left:
        raise RaylabError(
            f"placeholder {{{{ {left[0]} }}}} has no value" + (f" (also: {', '.join(left[1:])})" if left[1:]
                                                                 else ""),
            f"run stages 1-2 first, or pass --outputs FILE with a JSON object holding {left[0]!r}",
        )
    from raylab.cluster.bootstrap import node_commands

    for key, cmds in node_commands(str(filled.get("cluster_name", "")), python=node_python).items():
        filled.setdefault(key, cmds)  # Ray's rule: a list the config gives replaces ours
    if target == "local":
        if not endpoint_url:
            raise RaylabError("the local target needs the twin's endpoint URL to render",
                              "start the local target first with `raylab up`, then render again")
        from raylab.cluster.local_form import to_local

        return to_local(filled, endpoint_url=endpoint_url, scale=scale)
    return filled
