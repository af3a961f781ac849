"""Walk the Korean trainee guide as a trainee would: every local `raylab ...` command of its ```bash
blocks, in chapter order, in one fresh working directory, and say which step failed as written.

What is run: lines that start with `raylab ` in ```bash blocks of docs/lab/ko/ (continuations joined,
comments cut), in the order of the guide's table of contents. What is not: the AWS track (`--target aws`,
`--rehearsal`), `make`, `git`, `ssh`, `aws`, `ray job submit` (a trainee's manual alternative to
`raylab stress --target aws`), a block for a machine with internet ("인터넷": `raylab data schema` reads
S3; nothing here may leave the machine), and a line whose comment says it replaces the one above
("(위 대신)").

Two terminals (chapter 6's manual drills): a block whose first comment says "터미널 1" runs its last
command in the background; the "터미널 2" block then waits until a spot instance is running
(`raylab status --json`) and runs its commands while that one runs. Exit codes the guide documents
as expected (`raylab stress` after `raylab up --scenario static`, see 06-scenarios.md) are reported
as such, not as failures.

Commands run in a scratch folder that looks like the repository (configs/, infra/, workloads/ linked)
whose .raylab/ is the working directory, so relative paths resolve as in the guide. Every command gets
--yes where it asks. At the end `raylab down --yes` runs. The machine needs the
local target's dependencies (make setup, make sysdeps). Takes about 45 minutes on 2 cores.

    .venv/bin/python scripts/walk_guide.py --dry-run       # the commands, in order, nothing run
    .venv/bin/python scripts/walk_guide.py [--from 05-scaling.md] [--to 07-data.md] [--log walk.log]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "lab" / "ko"
ORDER = ("00-prerequisites.md", "00-start.md", "01-network.md", "02-identity.md", "03-cluster.md",
         "04-stress.md", "05-scaling.md", "06-scenarios.md", "06-spot.md", "07-data.md", "08-teardown.md")
BASH = re.compile(r"```bash\n(.*?)```", re.S)
ASKS = ("stage", "up", "down", "lab")  # commands that ask before creating or deleting


@dataclass(frozen=True)
class Step:
    page: str
    cmd: str
    terminal: int = 0  # 0: in order; 1: in the background; 2: beside terminal 1's command


def steps(pages: tuple[str, ...] = ORDER) -> list[Step]:
    """The guide's local commands in order (pure: reads the pages only)."""
    out: list[Step] = []
    for page in pages:
        for block in BASH.findall((GUIDE / page).read_text()):
            block = "\n".join(ln.removeprefix("> ") for ln in block.splitlines())
            first = next((ln for ln in block.splitlines() if ln.strip()), "")
            if "인터넷" in first:  # run where the internet is: never from here
                continue
            terminal = 1 if "터미널 1" in first else 2 if "터미널 2" in first else 0
            lines = [ln for ln in block.replace("\\\n", " ").splitlines()]
            cmds = []
            for ln in lines:
                comment = ln.split("#", 1)[1] if "#" in ln else ""
                cmd = ln.split("  #")[0].split(" # ")[0].strip()
                if not cmd.startswith("raylab ") or "(위 대신)" in comment:
                    continue
                if "--target aws" in cmd or "--rehearsal" in cmd:
                    continue
                cmds.append(cmd)
            for n, cmd in enumerate(cmds):
                t = 1 if terminal == 1 and n == len(cmds) - 1 else 2 if terminal == 2 else 0
                out.append(Step(page, cmd, t))
    return out


def expected_failure(cmd: str, scenario: str) -> str | None:
    """Why a non-zero exit is what the guide says will happen, or None (pure)."""
    if cmd.startswith("raylab stress") and scenario == "static":
        return "06-scenarios.md: static adds no worker, so stage 4's 'the autoscaler added workers' fails"
    return None


def argv(cmd: str) -> list[str]:
    args = shlex.split(cmd)[1:]
    extra = ["--yes"] if args[:1] and args[0] in ASKS and "--yes" not in args else []
    return [sys.executable, "-m", "raylab", *args, *extra]


def env_for(workdir: Path) -> dict[str, str]:
    return {**os.environ, "RAYLAB_WORKDIR": str(workdir), "COLUMNS": "100", "NO_COLOR": "1"}


def spot_running(workdir: Path) -> bool:
    p = subprocess.run(argv("raylab status --json"), cwd=workdir.parent, env=env_for(workdir),
                       capture_output=True, text=True, timeout=120)
    try:
        inst = json.loads(p.stdout).get("instances", [])
    except ValueError:
        return False
    return any(i.get("market") == "spot" and i.get("state") == "running" for i in inst)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="list the commands, run nothing")
    ap.add_argument("--from", dest="start", default=ORDER[0], choices=ORDER, help="begin at this page")
    ap.add_argument("--to", dest="end", default=ORDER[-1], choices=ORDER, help="end with this page")
    ap.add_argument("--log", type=Path, help="append every command's output here")
    a = ap.parse_args()
    todo = steps(ORDER[ORDER.index(a.start):ORDER.index(a.end) + 1])
    if a.dry_run:
        for s in todo:
            print(f"{s.page:20} {'T' + str(s.terminal) if s.terminal else '  '} {s.cmd}")
        return 0
    failed: list[str] = []
    scenario = "autoscale"
    last_beside = next((x for x in reversed(todo) if x.terminal == 2), None)
    with tempfile.TemporaryDirectory(prefix="rl-walk-") as tmp:
        workdir = Path(tmp) / ".raylab"
        for d in ("configs", "infra", "workloads"):  # the trainee's cwd is the repository: its paths hold
            (Path(tmp) / d).symlink_to(ROOT / d)
        background: subprocess.Popen[str] | None = None
        try:
            for s in todo:
                m = re.search(r"--scenario (\w+)", s.cmd)
                if s.cmd.startswith("raylab up") and m:
                    scenario = m.group(1)
                elif s.cmd.startswith("raylab up"):
                    scenario = "autoscale"
                if s.terminal == 2 and background is not None and not s.cmd.startswith("raylab status"):
                    deadline = time.time() + 300
                    while not spot_running(workdir) and time.time() < deadline:
                        time.sleep(5)
                log = open(a.log, "a") if a.log else subprocess.DEVNULL  # noqa: SIM115 - closed below
                started = time.time()
                if s.terminal == 1:
                    print(f"[{s.page}] {s.cmd}  (terminal 1, in the background)", flush=True)
                    background = subprocess.Popen(argv(s.cmd), cwd=tmp, env=env_for(workdir), text=True,
                                                  stdout=log, stderr=subprocess.STDOUT)
                    continue
                p = subprocess.run(argv(s.cmd), cwd=tmp, env=env_for(workdir), text=True,
                                   capture_output=True, timeout=3600)
                if a.log:
                    log.write(f"$ {s.cmd}\n{p.stderr}{p.stdout}\n")  # type: ignore[union-attr]
                    log.close()  # type: ignore[union-attr]
                last = (p.stderr.strip().splitlines() or [""])[-1][:160]
                why = expected_failure(s.cmd, scenario) if p.returncode else None
                verdict = "ok" if p.returncode == 0 else f"exit {p.returncode} (expected: {why})" if why \
                    else f"FAILED exit {p.returncode}"
                print(f"[{s.page}] {s.cmd}: {verdict} in {time.time() - started:.0f} s | {last}", flush=True)
                if p.returncode and not why:
                    failed.append(f"{s.page}: {s.cmd}")
                if s.terminal == 2 and background is not None and s == last_beside:
                    rc = background.wait(timeout=1800)
                    print(f"[terminal 1] finished: exit {rc}", flush=True)
                    if rc:
                        failed.append("terminal 1's command")
                    background = None
        finally:
            if background is not None:
                background.wait(timeout=1800)
            subprocess.run(argv("raylab down"), cwd=tmp, env=env_for(workdir), capture_output=True, text=True,
                           timeout=1800)
    print("every step passed as written" if not failed else "failed as written:\n  " + "\n  ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
