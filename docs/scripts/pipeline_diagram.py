"""Draw docs/img/architecture_pipeline.png: the design's stages (built ones filled, planned ones
outlined) and the demo's stage graph as the runner sees it (read from DemoConfig().stages()).

    python docs/scripts/pipeline_diagram.py docs/img/architecture_pipeline.png
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from headcap.demo import DemoConfig  # noqa: E402

DESIGN = [  # (folder, stage, built?)
    ("calib", "calibration", True), ("capture", "ingest", True), ("reconstruct", "landmarks", True),
    ("reconstruct", "registration", False), ("reconstruct", "stabilization", False),
    ("reconstruct", "tracking", False), ("avatar", "gaussian avatar", False), ("avatar", "export", True),
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
    ax.set_xlim(-0.3, 14.6)
    ax.set_ylim(-0.6, 3.3)
    ax.axis("off")
    ax.text(-0.2, 3.05, "design stages (filled: built; dashed: planned)", fontsize=9, weight="bold")
    xs = [0.8 + 1.8 * i for i in range(len(DESIGN))]
    for x, (folder, stage, built) in zip(xs, DESIGN):
        _box(ax, x, 2.45, f"{stage}\n{folder}/", COLOURS[folder], built)
    for a, b in zip(xs, xs[1:]):
        _arrow(ax, (a + 0.78, 2.45), (b - 0.78, 2.45))
    stages = DemoConfig().stages()
    ax.text(-0.2, 1.25, "headcap demo as the runner sees it (folders under --out; arrows = declared inputs)",
            fontsize=9, weight="bold")
    pos = {s.name: (1.5 + 3.6 * i, 0.45) for i, s in enumerate(stages)}
    pos["report.html"] = (1.5 + 3.6 * len(stages), 0.45)
    for s in stages:
        _box(ax, *pos[s.name], f"{s.name}/\n{', '.join(s.outputs[:2])}", COLOURS["headcap"], w=2.6, h=0.7)
        for name in s.inputs:
            (x0, y0), (x1, y1) = pos[name], pos[s.name]
            bend = 0.0 if abs(x1 - x0) < 4 else -0.35
            ax.add_patch(FancyArrowPatch((x0 + 1.3, y0), (x1 - 1.3, y1), connectionstyle=f"arc3,rad={bend}",
                                         arrowstyle="-|>", mutation_scale=10, color="#555", lw=1.0))
    _box(ax, *pos["report.html"], "report.html\n(every run)", COLOURS["headcap"], filled=False, w=2.6, h=0.7)
    _arrow(ax, (pos[stages[-1].name][0] + 1.3, 0.45), (pos["report.html"][0] - 1.3, 0.45))
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out.with_suffix(".tmp.png"))
    out.with_suffix(".tmp.png").replace(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img/architecture_pipeline.png")
