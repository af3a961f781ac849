"""The nodes' internet in the AWS rehearsal: a local mirror of exactly what the setup commands fetch.

A rehearsal machine has no route out of this host, yet Ray's updater runs the cluster YAML's real
``setup_commands`` on it (``raylab.cluster.bootstrap``): ``curl`` uv's versioned installer, ``uv venv``,
``uv pip install 'ray[default]==…'`` (the head adds boto3 and ruamel.yaml). This module gives such a
machine the two things those commands reach, and nothing else:

- a **wheelhouse** (``build_wheelhouse``, at ``make setup`` time, with the operator's pip: the only
  step here that talks to a package index, as ``pip install`` does): every wheel the nodes install,
  for CPython 3.10 and 3.11 manylinux x86_64 (``NODE_PYTHONS``), plus uv's own wheel, and a PEP 503
  ``simple/`` index over them;
- a **PATH directory** (``node_bin``) whose ``curl`` models the internet as that mirror, and the
  **login-shell environment** (``node_environment``) that makes uv use the mirror as its package index.

What the mirror serves and refuses (``mirror_facts()`` returns this table for the runbook):

=============================================  =============================================
request on a machine                           answer
=============================================  =============================================
``curl https://astral.sh/uv/<pin>/install.sh``  uv's installer: puts the pinned uv and uvx in
                                               ``$UV_INSTALL_DIR`` (default ``~/.local/bin``)
other URL on astral.sh (another uv version)    HTTP 404: exit 22 with ``-f``, else a 404 body
any other host                                 ``curl: (6) Could not resolve host: H``, exit 6
``uv pip install`` of a wheelhouse package      served from ``file://…/simple`` (the "index")
``uv pip install`` of anything else             "not found in the package registry"
``uv venv --python 3.X``                        the image's own Python 3.X; never a download
                                               (another minor: "No interpreter found")
=============================================  =============================================

curl's ``-s`` hides those error lines unless ``-S`` is given, as with the real curl. Nothing in here
opens a socket: the ``curl`` never calls the real one.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from raylab.cluster.bootstrap import HEAD_PACKAGES, RAY_VERSION, UV_VERSION
from raylab.errors import RaylabError

REPO = Path(__file__).resolve().parents[3]
REHEARSAL_DIR = REPO / ".rehearsal"  # gitignored
WHEELHOUSE = REHEARSAL_DIR / "wheels"
INDEX = "simple"  # the PEP 503 index inside the wheelhouse
STAMP = ".wheelhouse.json"
GLIBC_MAX = 35  # manylinux_2_35: Ubuntu 22.04 and newer AMIs, and this host (Debian 12, glibc 2.36)
INSTALLER_URL = "https://astral.sh/uv/{version}/install.sh"
# the node Pythons the mirror serves wheels for: Debian 12's 3.11 (the lab's image) and Ubuntu 22.04's
# 3.10 (an operator on 3.10 rehearses with that image; the oldest Python Ray 2.60 supports)
NODE_PYTHONS = ("3.10", "3.11")

Runner = Callable[[list[str]], None]


def requirements(ray: str = RAY_VERSION, uv: str = UV_VERSION) -> tuple[str, ...]:
    """What the nodes install (``ray[default]``, the head's packages), what stage 7's job installs
    through Ray's runtime_env (pip), and uv's own wheel."""
    from raylab.datajob.submit import DATA_PIP

    return (f"ray[default]=={ray}", "pip", *HEAD_PACKAGES, *DATA_PIP, f"uv=={uv}")


def platform_tags(glibc_max: int = GLIBC_MAX) -> list[str]:
    """manylinux x86_64 tags up to ``glibc_max`` (pip expands only the legacy aliases by itself)."""
    return ([f"manylinux_2_{m}_x86_64" for m in range(5, glibc_max + 1)]
            + ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"])


def pip_download_argv(dest: Path, python: str, reqs: Sequence[str], pip: Sequence[str] | None = None
                      ) -> list[str]:
    """``pip download`` of ``reqs`` and all their dependencies as wheels for CPython ``python``."""
    abi = "cp" + python.replace(".", "")
    argv = [*(pip or [sys.executable, "-m", "pip"]), "download", "--quiet", "--dest", str(dest),
            "--only-binary=:all:", "--implementation", "cp", "--python-version", python,
            "--abi", abi, "--abi", "abi3", "--abi", "none"]
    for tag in platform_tags():
        argv += ["--platform", tag]
    return [*argv, *reqs]


def _pip_of(python: str) -> list[str]:
    """pip run by an interpreter of ``python`` itself: pip evaluates ``python_full_version`` markers
    against the interpreter it runs on, not ``--python-version`` (aiohttp's ``async-timeout`` for
    Python < 3.11 went missing when 3.11's pip downloaded for 3.10)."""
    if python == f"{sys.version_info.major}.{sys.version_info.minor}":
        return [sys.executable, "-m", "pip"]
    from raylab.rehearsal.machine import python_for

    exe = python_for(python)
    if exe is None:
        raise RaylabError(f"no Python {python} on this machine to download the nodes' wheels with",
                          "the rehearsal's images need it (pyenv versions under /root/.pyenv)")
    return [exe, "-m", "pip"]


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True)


def _pythons(python: str | Sequence[str]) -> tuple[str, ...]:
    return (python,) if isinstance(python, str) else tuple(python)


def _stamp_key(python: str | Sequence[str], reqs: Sequence[str]) -> str:
    blob = json.dumps({"python": list(_pythons(python)), "requirements": list(reqs), "pip": "per-python",
                       "platforms": platform_tags()})
    return hashlib.sha256(blob.encode()).hexdigest()


def wheelhouse_ready(dest: Path, python: str | Sequence[str] = NODE_PYTHONS,
                     reqs: Sequence[str] | None = None) -> bool:
    """True when ``dest`` holds a complete wheelhouse for exactly these Pythons and requirement list."""
    try:
        stamp = json.loads((dest / STAMP).read_text())
    except (OSError, ValueError):
        return False
    if stamp.get("key") != _stamp_key(python, reqs or requirements()):
        return False
    return all((dest / name).is_file() for name in stamp.get("wheels", []))


def build_wheelhouse(dest: Path = WHEELHOUSE, python: str | Sequence[str] = NODE_PYTHONS, *,
                     reqs: Sequence[str] | None = None, runner: Runner | None = None,
                     pip: Sequence[str] | None = None) -> Path:
    """Download every wheel the nodes install into ``dest`` (flat), write its ``simple/`` index, stamp it.

    One download per node Python (``NODE_PYTHONS``: the images' Pythons the rehearsal plays), into one
    flat directory: uv and pip pick the wheel of their own interpreter from the index.
    Idempotent: a stamp keyed by the Pythons, the requirement list and the platform tags makes a
    second call a no-op (no pip, no network). A changed list downloads into a fresh directory and
    replaces ``dest`` only when the download succeeded. ``runner`` runs the pip argv (tests pass a fake).
    """
    reqs = list(reqs or requirements())
    if wheelhouse_ready(dest, python, reqs):
        return dest
    fresh = dest.with_name(dest.name + ".partial")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    try:
        for py in _pythons(python):
            (runner or _run)(pip_download_argv(fresh, py, reqs, pip or ([] if runner else _pip_of(py))))
    except subprocess.CalledProcessError as e:
        shutil.rmtree(fresh, ignore_errors=True)
        raise RaylabError(f"pip download of the nodes' wheels failed (exit {e.returncode})",
                          "the package index must be reachable at setup time; "
                          "re-run `make wheelhouse`") from e
    wheels = sorted(p.name for p in fresh.glob("*.whl"))
    missing = [r for r in reqs if not _find_wheel(fresh, _req_name(r))]
    if missing:
        shutil.rmtree(fresh, ignore_errors=True)
        raise RaylabError(f"pip download left no wheel for {', '.join(missing)} in {fresh}",
                          "check the requirement pins against the package index")
    write_index(fresh)
    (fresh / STAMP).write_text(json.dumps({"key": _stamp_key(python, reqs), "python": list(_pythons(python)),
                                           "requirements": reqs, "wheels": wheels}, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    fresh.rename(dest)
    return dest


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _req_name(req: str) -> str:
    return _norm(re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0])


def _find_wheel(wheelhouse: Path, name: str, version: str | None = None) -> Path | None:
    for whl in sorted(wheelhouse.glob("*.whl")):
        dist, ver = whl.name.split("-")[:2]
        if _norm(dist) == name and (version is None or ver == version):
            return whl
    return None


def write_index(wheelhouse: Path) -> Path:
    """A PEP 503 simple index over the flat wheelhouse (relative links: the tree can move)."""
    index = wheelhouse / INDEX
    shutil.rmtree(index, ignore_errors=True)
    groups: dict[str, list[str]] = {}
    for whl in sorted(wheelhouse.glob("*.whl")):
        groups.setdefault(_norm(whl.name.split("-")[0]), []).append(whl.name)
    for name, files in groups.items():
        (index / name).mkdir(parents=True)
        links = "".join(f'<a href="../../{f}">{f}</a><br/>\n' for f in files)
        (index / name / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n")
    links = "".join(f'<a href="{n}/">{n}</a><br/>\n' for n in groups)
    (index / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n")
    return index


def node_environment(wheelhouse: Path = WHEELHOUSE, cache_dir: Path | None = None) -> dict[str, str]:
    """The variables a machine's login shell exports so that uv reaches the mirror and nothing else.

    - ``UV_DEFAULT_INDEX``: the wheelhouse's ``simple/`` index as ``file://``; uv 0.13.8 reads it as
      it reads PyPI, and a package that is not there fails as "not found in the package registry".
      (uv 0.13.8 has no ``UV_NO_INDEX`` variable: it is silently ignored, and uv goes to PyPI.)
    - ``UV_PYTHON_DOWNLOADS=never`` and ``UV_PYTHON_PREFERENCE=only-system``: ``uv venv --python 3.X``
      takes the image's own interpreter, as on the AMI, and never tries to download one.
    - no ``UV_CACHE_DIR``: uv's own default, ``~/.cache/uv``, as on EC2; the world seeds each machine's
      with hardlinks to one warm cache (``raylab.rehearsal.uvcache``). ``cache_dir`` sets one (tests).
    - ``UV_NO_CONFIG=1``: no ``uv.toml`` of the host (``/etc/uv``, ``~/.config/uv``) adds an index.
    - ``PIP_INDEX_URL`` (the same index) and no pip self-check: Ray's runtime_env ``pip`` (stage 7's
      job) installs with pip into the job's env.
    """
    index = (wheelhouse.resolve() / INDEX).as_uri()
    return {
        "UV_DEFAULT_INDEX": index,
        # pip, as Ray's runtime_env installs a job's packages with it (stage 7): the same mirror only
        "PIP_INDEX_URL": index,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_PYTHON_PREFERENCE": "only-system",
        "UV_NO_CONFIG": "1",
        **({"UV_CACHE_DIR": str(cache_dir.resolve())} if cache_dir else {}),
    }


def profile_lines(bindir: Path, env: dict[str, str]) -> list[str]:
    """Shell lines for a machine's ``~/.bashrc``: ``bindir`` first on PATH, then ``env`` exported.

    Ray's updater runs ``bash --login -c -i``: on Debian/Ubuntu ``/etc/profile`` resets PATH first, then
    ``~/.profile`` sources ``~/.bashrc``; so these lines belong in ``~/.bashrc`` (or a file it sources),
    not in the environment sshd hands the session.
    """
    return [f'export PATH={shlex.quote(str(bindir))}:"$PATH"',
            *(f"export {k}={shlex.quote(v)}" for k, v in env.items())]


def extract_uv(wheelhouse: Path, uv_version: str = UV_VERSION, cache: Path | None = None) -> Path:
    """``uv`` and ``uvx`` from the wheelhouse's uv wheel, extracted once into ``cache``; returns it."""
    out = cache or wheelhouse.resolve().parent / "uv-dist" / uv_version
    if (out / "uv").is_file() and (out / "uvx").is_file():
        return out
    whl = _find_wheel(wheelhouse, "uv", uv_version)
    if whl is None:
        raise RaylabError(f"no uv {uv_version} wheel in the wheelhouse {wheelhouse}",
                          "run `make wheelhouse` (it downloads the nodes' wheels)")
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(whl) as z:
        for b in ("uv", "uvx"):
            tmp = out / f".{b}.tmp"
            tmp.write_bytes(z.read(f"uv-{uv_version}.data/scripts/{b}"))
            tmp.chmod(0o755)
            tmp.replace(out / b)
    return out


def node_bin(dest: Path, wheelhouse: Path = WHEELHOUSE, uv_version: str = UV_VERSION, *,
             cache: Path | None = None) -> Path:
    """Write ``dest/curl`` (put ``dest`` first on a machine's PATH): the internet as the mirror.

    The uv binaries are extracted once (``extract_uv``); the installer that ``curl`` serves copies them.
    """
    dist = extract_uv(wheelhouse, uv_version, cache)
    installer = dist / "install.sh"
    installer.write_text(_INSTALLER.replace("@VERSION@", uv_version).replace("@SRC@", shlex.quote(str(dist))))
    installer.chmod(0o644)
    dest.mkdir(parents=True, exist_ok=True)
    curl = dest / "curl"
    curl.write_text(_CURL.replace("@URL@", shlex.quote(INSTALLER_URL.format(version=uv_version)))
                    .replace("@FILE@", shlex.quote(str(installer))))
    curl.chmod(0o755)
    return dest


@dataclass(frozen=True)
class MirrorFact:
    request: str
    answer: str


def mirror_facts(uv_version: str = UV_VERSION) -> list[MirrorFact]:
    """What the nodes' internet serves and refuses (the module docstring's table, for the runbook)."""
    url = INSTALLER_URL.format(version=uv_version)
    return [
        MirrorFact(f"curl {url}", f"uv's installer: uv {uv_version} (+ uvx) into $UV_INSTALL_DIR, "
                   "else $XDG_BIN_HOME, else ~/.local/bin; profiles edited unless UV_NO_MODIFY_PATH"),
        MirrorFact("curl https://astral.sh/<other path>", "HTTP 404: exit 22 with -f, else a 404 body"),
        MirrorFact("curl <any other host>", "curl: (6) Could not resolve host: <host>; exit 6"),
        MirrorFact("uv pip install <wheelhouse package>", "installed from the file:// simple index"),
        MirrorFact("uv pip install <anything else>", "not found in the package registry"),
        MirrorFact("uv venv --python 3.X", "the image's own Python 3.X; no interpreter download "
                   "(another minor than the image ships: No interpreter found)"),
    ]


_CURL = r"""#!/bin/sh
# curl on a rehearsal machine (raylab.rehearsal.internet): the internet is the rehearsal's mirror.
# It serves one URL; other astral.sh paths are 404s; every other host has no route. No socket is opened.
served_url=@URL@
served_file=@FILE@
mirror_host=astral.sh
silent=0 show_error=0 fail=0 output='' urls=''
needs_value() {
  echo "curl: option $1: requires parameter" >&2
  echo "curl: try 'curl --help' or 'curl --manual' for more information" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  arg=$1; shift
  case $arg in
    --) urls="$urls $*"; break ;;
    -V|--version) echo "curl 7.88.1 (rehearsal mirror: serves only $served_url)"; exit 0 ;;
    --silent) silent=1 ;;
    --show-error) show_error=1 ;;
    --fail|--fail-with-body) fail=1 ;;
    --output|--url|--header|--user-agent|--max-time|--connect-timeout|--retry|--retry-delay|\
    --retry-max-time|--write-out|--request|--data|--data-raw|--data-binary|--user|--referer|--proxy|\
    --cacert|--capath|--cert|--key|--proto|--proto-redir|--max-redirs|--range|--cookie|--cookie-jar|\
    --config|--output-dir|--limit-rate|--resolve|--interface|--dns-servers|--form|--upload-file)
      [ $# -gt 0 ] || needs_value "$arg"
      case $arg in --output) output=$1 ;; --url) urls="$urls $1" ;; esac
      shift ;;
    --*) ;;
    -?*)
      cluster=${arg#-}
      while [ -n "$cluster" ]; do
        c=${cluster%"${cluster#?}"}; cluster=${cluster#?}
        case $c in
          s) silent=1 ;;
          S) show_error=1 ;;
          f) fail=1 ;;
          o|H|A|m|w|X|d|u|e|x|T|F|b|c|r|K|E|C|z|Y|y|Q|t|U|P)
            if [ -n "$cluster" ]; then value=$cluster; cluster=''
            else [ $# -gt 0 ] || needs_value "-$c"; value=$1; shift; fi
            [ "$c" = o ] && output=$value ;;
          *) ;;
        esac
      done ;;
    *) urls="$urls $arg" ;;
  esac
done
if [ -z "$urls" ]; then
  echo "curl: no URL specified!" >&2
  echo "curl: try 'curl --help' or 'curl --manual' for more information" >&2
  exit 2
fi
say() { if [ $silent = 0 ] || [ $show_error = 1 ]; then echo "$1" >&2; fi; }
emit() { if [ -n "$output" ]; then cat > "$output" || exit 23; else cat; fi; }
rc=0
set -f
for url in $urls; do
  rest=${url#*://}
  authority=${rest%%[/?#]*}
  authority=${authority##*@}
  host=${authority%%:*}
  if [ "$url" = "$served_url" ]; then
    emit < "$served_file"
  elif [ "$host" = "$mirror_host" ]; then
    if [ $fail = 1 ]; then say "curl: (22) The requested URL returned error: 404"; rc=22
    else echo "404: Not Found" | emit; fi
  else
    say "curl: (6) Could not resolve host: $host"; rc=6
  fi
done
exit $rc
"""

_INSTALLER = r"""#!/bin/sh
# uv @VERSION@'s installer as the rehearsal's mirror serves it (raylab.rehearsal.internet): it copies the
# uv binaries extracted from the wheelhouse's uv @VERSION@ wheel instead of downloading an archive.
set -eu
src=@SRC@
no_modify=${UV_NO_MODIFY_PATH:-${INSTALLER_NO_MODIFY_PATH:-}}
if [ -n "${UV_UNMANAGED_INSTALL:-}" ]; then dir=$UV_UNMANAGED_INSTALL; no_modify=1
elif [ -n "${UV_INSTALL_DIR:-}" ]; then dir=$UV_INSTALL_DIR
elif [ -n "${XDG_BIN_HOME:-}" ]; then dir=$XDG_BIN_HOME
elif [ -n "${XDG_DATA_HOME:-}" ]; then dir=$XDG_DATA_HOME/../bin
else dir=$HOME/.local/bin
fi
echo "downloading uv @VERSION@ x86_64-unknown-linux-gnu"
echo "installing to $dir"
mkdir -p "$dir"
for b in uv uvx; do
  cp "$src/$b" "$dir/.$b.tmp.$$"
  chmod 755 "$dir/.$b.tmp.$$"
  mv -f "$dir/.$b.tmp.$$" "$dir/$b"
  echo "  $b"
done
echo "everything's installed!"
if [ -z "$no_modify" ]; then
  cat > "$dir/env" <<EOF
#!/bin/sh
case ":\${PATH}:" in *:"$dir":*) ;; *) export PATH="$dir:\$PATH" ;; esac
EOF
  line=". \"$dir/env\""
  for rc in "$HOME/.profile" "$HOME/.bashrc"; do
    grep -qxF "$line" "$rc" 2>/dev/null || echo "$line" >> "$rc"
  done
  echo ""
  echo "To add $dir to your PATH, either restart your shell or run:"
  echo ""
  echo "    source $dir/env (sh, bash, zsh)"
fi
"""
