"""Regenerate the output snippets in the trainee guide from a real local run.

Each block in docs/lab/ko/*.md of the form

    <!-- raylab:output cmd="raylab stage 1" lines=20 -->
    ...anything...
    <!-- /raylab:output -->

is replaced by the real output of that command (stderr + stdout, ANSI-free, first N lines,
"..." where cut), run in chapter order in one fresh working directory on the local target, so
later chapters see the state earlier ones created. The charts in docs/images/ are copied from the
same run, and so are the records the guide's figures are tested against (docs/lab/runs/: the stress
run, the scale run, the data job's summary; not times-local.json, which times one lab's commands and
is re-measured apart). tests/unit/test_docs_figures.py then names every sentence whose number the new
run changed. At the end `raylab down --yes` runs.
Nothing is typed by hand.

Run: .venv/bin/python scripts/refresh_docs.py [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "lab" / "ko"
BLOCK = re.compile(
    r'<!-- raylab:output cmd="(?P<cmd>[^"]+)" lines=(?P<lines>\d+) -->\n.*?<!-- /raylab:output -->',
    re.S,
)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def shorten(text: str, n: int) -> str:
    lines = ANSI.sub("", text).rstrip().splitlines()
    return "\n".join(lines if len(lines) <= n else [*lines[:n], "..."])


def run(cmd: str, workdir: Path) -> str:
    args = shlex.split(cmd)
    assert args[0] == "raylab", cmd
    env = {**os.environ, "RAYLAB_WORKDIR": str(workdir), "COLUMNS": "100", "NO_COLOR": "1"}
    extra = ["--yes"] if args[1:2] and args[1] in ("stage", "up", "down", "lab") else []
    p = subprocess.run([sys.executable, "-m", "raylab", *args[1:], *extra], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1800)
    return f"$ {cmd}\n{p.stderr}{p.stdout}"


RUNS = ROOT / "docs" / "lab" / "runs"
PATHS = {"chart", "job_summary", "timeline", "job_id", "scale_mapping"}  # this machine's, not the run's


def write_record(name: str, record: dict[str, object]) -> None:
    (RUNS / name).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"docs/lab/runs/{name} <- this run", file=sys.stderr)


def record_runs(workdir: Path) -> None:
    """The records the guide's figures are tested against, from this run (as the outputs are)."""
    day = time.strftime("%Y-%m-%d")
    state = json.loads((workdir / "state.json").read_text()) if (workdir / "state.json").exists() else {}
    stress = {k: v for k, v in state.get("stress", {}).items() if k not in PATHS}
    if stress:
        keys = json.loads((RUNS / "stress-local.json").read_text()).keys()
        write_record("stress-local.json", {**{k: stress[k] for k in keys if k in stress}, "_source": (
            f"state.json 'stress' of the local run whose full output is in docs/lab/ko/04-stress.md "
            f"(scripts/refresh_docs.py, {day})")})
    sc = state.get("scaling")
    if sc and stress:
        write_record("scale-local.json", {
            "_source": "state.json 'scaling' and 'stress' of the local run whose `raylab scale` output is "
                       f"in docs/lab/ko/05-scaling.md (scripts/refresh_docs.py, {day}); 'stress' is that "
                       "lab's stage 4 run, the left side of the comparison",
            "changes": sc["changes"], "settings": sc["settings"], "comparison": sc["comparison"],
            "run": {k: v for k, v in sc["run"].items() if k not in PATHS}, "stress": stress})
    spot = state.get("spot")
    if spot:
        def strip(o: object) -> object:  # this machine's paths, not the run's
            return {k: strip(v) for k, v in o.items() if k not in ("out", "chart", "chart_from")} \
                if isinstance(o, dict) else o
        write_record("spot-local.json", {**strip(spot), "_source": (  # type: ignore[dict-item]
            f"state.json 'spot' after `raylab stage 6` on the local run whose output is in "
            f"docs/lab/ko/06-spot.md (scripts/refresh_docs.py, {day})")})
    summary = workdir / "data" / "out" / "summary.json"
    if summary.exists():
        d = {k: v for k, v in json.loads(summary.read_text()).items() if k not in ("by", "out", "source")}
        write_record("data-local.json", {**d, "_source": (
            f"summary.json the data job wrote for `raylab stage 7` on the local lab cluster "
            f"(scripts/refresh_docs.py, {day}); per-accent/age breakdown left out")})
# The guide's pictures, from the same run: (glob under the work dir, file in docs/images/)
CHARTS = (("stress/*/chart.png", "stress-local.png"), ("spot/capacity-guard.png", "spot-capacity-local.png"),
          ("spot/reclaim-no-notice.png", "spot-reclaim-local.png"),
          ("scaling/*/chart.png", "scaling-local.png"), ("data/out/chart.png", "data-quality-local.png"))


def copy_charts(workdir: Path) -> None:
    for pattern, name in CHARTS:
        found = sorted(workdir.glob(pattern), key=lambda p: p.stat().st_mtime)
        if found:
            shutil.copyfile(found[-1], ROOT / "docs" / "images" / name)
            print(f"docs/images/{name} <- {found[-1]}", file=sys.stderr)
        else:
            print(f"no {pattern} in this run: docs/images/{name} left as it was", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="list the commands, run nothing")
    args = ap.parse_args()
    files = sorted(GUIDE.glob("[0-9][0-9]-*.md"))
    with tempfile.TemporaryDirectory(prefix="rl-docs-") as tmp:
        workdir = Path(tmp) / ".raylab"
        saved: list[bool] = []

        def save() -> None:  # before chapter 8's `raylab down`, which removes .raylab/data with its summary
            if not args.dry_run and not saved:
                copy_charts(workdir)
                record_runs(workdir)
                saved.append(True)

        try:
            for f in files:
                text = f.read_text()

                def fill(m: re.Match[str], f: Path = f) -> str:
                    cmd, n = m["cmd"], int(m["lines"])
                    print(f"{f.name}: {cmd}", file=sys.stderr)
                    if cmd.split()[:2] == ["raylab", "down"]:
                        save()
                    out = "(dry run)" if args.dry_run else shorten(run(cmd, workdir), n)
                    head = f'<!-- raylab:output cmd="{cmd}" lines={n} -->'
                    return f"{head}\n```text\n{out}\n```\n<!-- /raylab:output -->"

                new = BLOCK.sub(fill, text)
                if not args.dry_run and new != text:
                    f.write_text(new)
            save()
        finally:
            if not args.dry_run:
                run("raylab down", workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
