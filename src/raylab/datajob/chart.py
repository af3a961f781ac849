"""The job's picture: duration and SNR distributions, kept vs dropped (matplotlib, Agg, PNG)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any


def png(rows: Sequence[Mapping[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, col, unit in ((axes[0], "duration_s", "seconds"), (axes[1], "snr_db", "dB")):
        values = [r[col] for r in rows if r["status"] != "error" and r.get(col) is not None]
        bins = np.linspace(min(values), max(values) + 1e-9, 31) if values else 30
        for status, color in (("kept", "tab:green"), ("dropped", "tab:red")):
            xs = [r[col] for r in rows if r["status"] == status and r.get(col) is not None]
            if xs:
                ax.hist(xs, bins=bins, alpha=0.6, color=color, label=f"{status} ({len(xs)})")
        ax.set_title(f"{col} ({unit})")
        ax.set_xlabel(unit)
        ax.set_ylabel("clips")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    errors = sum(r["status"] == "error" for r in rows)
    fig.suptitle(f"Common Voice clips: {len(rows)} processed, {errors} unreadable")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
