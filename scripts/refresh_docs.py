"""Regenerate the output snippets in the trainee guide from a real local run.

Each block in docs/lab/ko/*.md of the form

    <!-- raylab:output cmd="raylab stage 1" lines=20 -->
    ...anything...
    <!-- /raylab:output -->

is replaced by the real output of that command (stderr + stdout, ANSI-free, first N lines,
"..." where cut), run in chapter order in one fresh working directory on the local target, so
later chapters see the state earlier ones created. The charts in docs/images/ are copied from the
same run. At the end `raylab down --yes` runs. Nothing is typed by hand.

Run: .venv/bin/python scripts/refresh_docs.py [--dry-run]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
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


# The guide's pictures, from the same run: (glob under the work dir, file in docs/images/)
CHARTS = (("stress/*/chart.png", "stress-local.png"), ("spot/capacity-guard.png", "spot-capacity-local.png"),
          ("spot/reclaim-no-notice.png", "spot-reclaim-local.png"))


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
        try:
            for f in files:
                text = f.read_text()

                def fill(m: re.Match[str], f: Path = f) -> str:
                    cmd, n = m["cmd"], int(m["lines"])
                    print(f"{f.name}: {cmd}", file=sys.stderr)
                    out = "(dry run)" if args.dry_run else shorten(run(cmd, workdir), n)
                    head = f'<!-- raylab:output cmd="{cmd}" lines={n} -->'
                    return f"{head}\n```text\n{out}\n```\n<!-- /raylab:output -->"

                new = BLOCK.sub(fill, text)
                if not args.dry_run and new != text:
                    f.write_text(new)
            if not args.dry_run:
                copy_charts(workdir)
        finally:
            if not args.dry_run:
                run("raylab down", workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
