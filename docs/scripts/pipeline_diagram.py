"""Draw docs/img/architecture_pipeline.png: the design's stages (built ones filled, planned ones
outlined) and the steps `headcap run` (and so `headcap demo`) chains, read from
headcap.pipeline.chain.steps().

    python docs/scripts/pipeline_diagram.py docs/img/architecture_pipeline.png
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from headcap.pipeline.chain import steps  # noqa: E402

DESIGN = [  # (folder, stage, built?)
    ("calib", "calibration", True), ("capture", "ingest", True), ("reconstruct", "landmarks", True),
    ("reconstruct", "registration", True), ("reconstruct", "stabilization", True),
    ("reconstruct", "tracking", True), ("avatar", "gaussian avatar", True), ("avatar", "export", True),
]
COLOURS = {"calib": "#4e79a7", "capture": "#59a14f", "reconstruct": "#f28e2b", "avatar": "#e15759",
           "headcap": "#76b7b2"}


def _box(ax, x, y, text, colour, filled=True, w=1.5, h=0.55):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04",
                                fc=colour if filled else "white", ec=colour, lw=1.6,
                                ls="-" if filled else "--"))
    ax.text(x, y, text, ha="center", va="center", fontsize=8.5, color="white" if filled else colour)


def _arrow(ax, a, b):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=10, color="#555", lw=1.0))


def main(path: str) -> None:
    fig, ax = plt.subplots(figsize=(11, 4.2), dpi=110)
    ax.set_xlim(-0.3, 16.0)
    ax.set_ylim(-0.6, 3.3)
    ax.axis("off")
    ax.text(-0.2, 3.05, "design stages (filled: built; dashed: planned)", fontsize=9, weight="bold")
    xs = [0.8 + 1.8 * i for i in range(len(DESIGN))]
    for x, (folder, stage, built) in zip(xs, DESIGN):
        _box(ax, x, 2.45, f"{stage}\n{folder}/", COLOURS[folder], built)
    for a, b in zip(xs, xs[1:]):
        _arrow(ax, (a + 0.78, 2.45), (b - 0.78, 2.45))
    chain = steps()
    ax.text(-0.2, 1.25, "headcap run SESSION / headcap demo: the steps in order (folders under SESSION/)",
            fontsize=9, weight="bold")
    xs = [0.75 + 1.45 * i for i in range(len(chain) + 1)]
    for x, step in zip(xs, chain):
        _box(ax, x, 0.45, step.name.replace("_", "\n", 1) if len(step.name) > 10 else step.name,
             COLOURS["headcap"], w=1.3, h=0.7)
    _box(ax, xs[-1], 0.45, "report.html\nrun.json", COLOURS["headcap"], filled=False, w=1.3, h=0.7)
    for a, b in zip(xs, xs[1:]):
        _arrow(ax, (a + 0.66, 0.45), (b - 0.66, 0.45))
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out.with_suffix(".tmp.png"))
    out.with_suffix(".tmp.png").replace(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img/architecture_pipeline.png")
