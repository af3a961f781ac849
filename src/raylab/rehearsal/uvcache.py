"""uv's cache on the rehearsal's machines: each machine's own ``~/.cache/uv``, born warm.

On an EC2 node uv keeps its cache at ``~/.cache/uv``, on the root volume beside ``~/ray-env``, and
installs every file of a venv by hardlink from it (uv's default link mode on Linux). A rehearsal
machine's home is a bind mount, and link(2) refuses to link across mounts (EXDEV), even on one file
system: a cache reached through another mount made uv copy every file ("Failed to hardlink files"),
about 380 MB per node. That copy, eight nodes at once on 2 cores, was most of a worker's setup time.

So each machine gets its own cache inside its home, as on EC2, hardlinked at boot from one warm
cache the world keeps (``seed_lines``: ``cp -al`` with host paths, before the home's mount exists,
so it links on one mount; about 0.6 s for 20,000 files). The warm cache is filled once per set of
node Pythons and packages by the same uv, from the same mirror, as the nodes (``warm``; stamped).
Its files are immutable to uv; Python writes its bytecode as new files in the venv's own dirs.

Why not a symlinked home into the cache's mount: Ray's runtime_env ``pip`` (stage 7's job) clones
the venv by its real path, while uv wrote ``~/ray-env``'s activate script with the symlink's path;
the clone's activate then put the original venv first on PATH, and the job ran without its packages
("No module named 'numpy'", found by the whole-lab rehearsal).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from raylab.cluster.bootstrap import HEAD_PACKAGES, RAY_VERSION, UV_VERSION

STAMP = ".raylab-warm.json"


def node_packages(ray: str = RAY_VERSION) -> tuple[str, ...]:
    """What the setup commands install with uv on every node (and the head's extras)."""
    return (f"ray[default]=={ray}", "pip", *HEAD_PACKAGES)


def seed_lines(warm_cache: Path, home: Path) -> list[str]:
    """Shell lines (host paths, run before the home is mounted) giving ``home`` a ``.cache/uv`` of
    hardlinks to ``warm_cache``. Idempotent; when linking fails (another file system) the partial
    copy is removed, so uv starts cold instead of trusting half a cache."""
    src, dst = shlex.quote(str(warm_cache)), shlex.quote(str(home / ".cache" / "uv"))
    return [f"if [ -f {src}/{STAMP} ] && [ ! -e {dst} ]; then mkdir -p {shlex.quote(str(home / '.cache'))};"
            f" cp -al {src} {dst} 2>/dev/null || rm -rf {dst}; fi"]


def _key(pythons: Mapping[str, str], packages: Sequence[str]) -> str:
    blob = json.dumps({"uv": UV_VERSION, "pythons": sorted(pythons), "packages": list(packages)})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_warm(cache: Path, pythons: Mapping[str, str], packages: Sequence[str]) -> bool:
    try:
        return bool(json.loads((cache / STAMP).read_text())["key"] == _key(pythons, packages))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def warm_argv(uv: Path, python: str, venv: Path, packages: Sequence[str]) -> list[list[str]]:
    """The node's own two uv steps (``raylab.cluster.bootstrap.setup_commands``) for one Python."""
    return [[str(uv), "venv", "--quiet", "--python", python, str(venv)],
            [str(uv), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), *packages]]


MNT = "/mnt/rehearsal"  # where every machine sees the shared dir: uv keys its cache by the index URL


def warm_script(pythons: Mapping[str, str], packages: Sequence[str]) -> str:
    """What ``warm`` runs in a mount namespace of its own, where the shared dir is ``/mnt/rehearsal``
    as on the machines (uv's cache entries are keyed by the index's URL, ``file:///mnt/rehearsal/…``),
    and the throwaway venvs sit on the cache's mount (so uv links rather than copies)."""
    uv = f"{MNT}/uv-dist/{UV_VERSION}/uv"
    lines = ["set -eu", "mount -t tmpfs rl-warm /mnt", f"mkdir -p {MNT}",
             'mount --bind "$1" ' + MNT, f"rm -rf {MNT}/.uv-warm"]
    for minor, exe in sorted(pythons.items()):
        venv = f"{MNT}/.uv-warm/{minor}"
        for argv in warm_argv(Path(uv), exe, Path(venv), packages):
            lines.append(shlex.join(argv))
    lines.append(f"rm -rf {MNT}/.uv-warm")
    return "\n".join(lines) + "\n"


def warm(shared: Path, pythons: Mapping[str, str], packages: Sequence[str] | None = None) -> bool:
    """Fill ``shared/uv-cache`` as the nodes' setup would, once per Python (``pythons``: minor ->
    executable), with the nodes' uv from the nodes' mirror. False when it was already warm. One
    world at a time (a lock file beside it)."""
    import fcntl

    pkgs = list(packages or node_packages())
    cache = shared / "uv-cache"
    cache.mkdir(parents=True, exist_ok=True)
    with open(shared / ".uv-warm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_warm(cache, pythons, pkgs):
            return False
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
        env.update(UV_CACHE_DIR=f"{MNT}/uv-cache", UV_DEFAULT_INDEX=f"file://{MNT}/wheels/simple",
                   UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never", UV_PYTHON_PREFERENCE="only-system")
        subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        warm_script(pythons, pkgs), "sh", str(shared.resolve())],
                       env=env, check=True, stdin=subprocess.DEVNULL)
        (cache / STAMP).write_text(json.dumps({"key": _key(pythons, pkgs), "uv": UV_VERSION,
                                               "pythons": sorted(pythons), "packages": pkgs}) + "\n")
        return True
