"""Keep Ray on 127.0.0.1 in the processes raylab starts for the local target (loopback only).

Ray 2.60 replaces 127.0.0.1 by the host's first interface address (``resolve_ip_for_localhost``,
used for ``--node-ip-address``, ``ray start --address`` and ``ray.init(address=...)``), and it has
no supported option to keep loopback on Linux: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` would keep
127.0.0.1 but also refuses every worker node. So raylab puts this folder on ``PYTHONPATH`` of the
head, the nodes and its drivers only, with ``RAYLAB_LOOPBACK_ONLY=1``; Python imports it at start-up
and, when Ray's ``ray._private.services`` is first imported, wraps two functions so a loopback
host stays loopback. Nothing is imported eagerly; without the variable this file does nothing.
Loopback binding is also a security property: Ray's GCS and dashboard have no authentication.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

_TARGET = "ray._private.services"


def _patch(mod) -> None:  # noqa: ANN001 - a module
    orig_resolve = mod.resolve_ip_for_localhost
    orig_node_ip = mod.get_node_ip_address

    def resolve_ip_for_localhost(host: str) -> str:
        if host and (host == "localhost" or host.startswith("127.")):
            return "127.0.0.1"
        return orig_resolve(host)

    def get_node_ip_address(address=None):  # noqa: ANN001, ANN202 - Ray's signature
        import ray

        if ray._private.worker._global_node is not None:
            return orig_node_ip(address)
        return "127.0.0.1"

    mod.resolve_ip_for_localhost = resolve_ip_for_localhost
    mod.get_node_ip_address = get_node_ip_address


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module) -> None:  # noqa: ANN001
            exec_module(module)
            _patch(module)
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Finder)]

        loader.exec_module = exec_and_patch  # type: ignore[method-assign]  # patch the module once it has run
        return spec


if os.environ.get("RAYLAB_LOOPBACK_ONLY") == "1" and not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
