"""`headcap demo`: the whole chain on a synthetic studio session, to an exported avatar.

1. session - film a head (the default head model) in a virtual rig (headcap.studio), with
             ground truth: ChArUco frames for calibration, then the head moving and talking;
2. `headcap run` on it (headcap.pipeline.chain): check -> calibration_report -> landmarks (when
   the face models are installed) -> geometry (multi-view stereo) -> registration -> tracking ->
   stabilize -> avatar (Gaussians trained on the CPU kernel) -> avatar_eval (held-out cameras and
   frames) -> export (glTF head with ARKit morphs and animation, splats as .ply and glTF).
Every step is a runner stage: cached on its config, inputs and code, so a rerun with nothing
changed takes seconds, a changed option reruns only what depends on it, and an interrupted demo
resumes where it stopped. The session's report (SESSION/report.html) is copied to
OUT/report.html; OUT/summary.json holds the numbers against the ground truth.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from headcap.core.fileio import read_json, write_json


@dataclass(frozen=True)
class DemoConfig:
    cameras: int = 8
    """Rig cameras."""
    frames: int = 3
    """Frames filmed."""
    resolution: int = 256
    """Image width and height in pixels."""
    calib_frames: int = 24
    """ChArUco board poses filmed for calibration."""
    iterations: int = 500
    """Avatar training iterations."""
    held_out: int = 2
    """Cameras held out to score the avatar's novel views."""
    seed: int = 0
    """Random seed (scene, motion, training)."""
    head: str = "default"
    """Head model: default | ict:PATH | flame:PATH."""
    geometry: bool = True
    """Run multi-view stereo and registration (the slowest steps); without them tracking uses
    the images alone."""

    def __post_init__(self):
        from headcap.core.limits import check_count

        for name, low, high in (("cameras", 2, 256), ("frames", 1, 10_000), ("resolution", 32, 4096),
                                ("calib_frames", 1, 10_000), ("iterations", 1, 1_000_000), ("held_out", 1, 255),
                                ("seed", 0, 2**63 - 1)):
            check_count(getattr(self, name), f"demo: --{name.replace('_', '-')}", low, high)
        if self.held_out >= self.cameras:
            raise ValueError(f"demo: --held-out {self.held_out} leaves no camera to fit with "
                             f"(--cameras {self.cameras}); expected fewer held-out cameras than cameras")

    def studio(self):
        from headcap.studio.synthesize import StudioConfig

        return StudioConfig(cameras=self.cameras, frames=self.frames, resolution=self.resolution,
                            calib_frames=self.calib_frames, seed=self.seed, head=self.head)

    def chain(self) -> dict:
        """The run configuration of every step (headcap.pipeline.chain), sized for the demo."""
        from headcap.pipeline.chain import read_config_file

        config = read_config_file(None)
        replace = dataclasses.replace
        config["registration"] = replace(config["registration"], head=self.head, keyframes=min(self.frames, 3),
                                         overlays=1)
        config["tracking"] = replace(config["tracking"], head=self.head, first_frame_iterations=8, frame_iterations=4,
                                     global_iterations=2)
        config["avatar"] = replace(config["avatar"], iterations=self.iterations, holdout_count=self.held_out,
                                   holdout_frames=1 if self.frames > 2 else 0, seed=self.seed,
                                   checkpoint_every=max(50, self.iterations // 4))
        config["avatar_eval"] = replace(config["avatar_eval"], turntable=12, cross_frames=min(self.frames, 4))
        config["export"] = replace(config["export"], texture_size=256)
        config["skip"] = () if self.geometry else ("geometry", "registration")
        return config


def run_demo(out: Path, config: DemoConfig = DemoConfig(), console=None, force: tuple[str, ...] = ()) -> Path:
    """Run the demo into `out`; returns the report path. Steps already up to date are reused;
    `force` names steps to rerun ("session" or any step of `headcap run`)."""
    from rich.console import Console

    from headcap.pipeline import Pipeline
    from headcap.pipeline.chain import run_session, step_names
    from headcap.pipeline.stages.synth import synth_stage

    names = ["session", *step_names()]
    for name in force:
        if name not in names:
            raise ValueError(f"demo: --force {name!r} is not a step; steps: {names}")
    console = console or Console(stderr=True)
    out = Path(out)
    tic = time.perf_counter()
    pipeline = Pipeline(out, [synth_stage(config.studio())], console=console, title="headcap demo", own_root=True)
    with pipeline.hold():
        session = pipeline.run(force=tuple(n for n in force if n == "session"))["session"].folder
        chain = [n for n in force if n != "session"]
        result = run_session(session, config.chain(), from_step=chain[0] if len(chain) == 1 else None,
                             only=tuple(chain) if len(chain) > 1 else (), console=console)
        return _write_summary(out, session, result, time.perf_counter() - tic)


def _write_summary(out: Path, session_dir: Path, result, seconds: float) -> Path:
    """OUT/summary.json (the numbers against the ground truth) and OUT/report.html."""
    from headcap.calib.rig_compare import compare_rigs
    from headcap.calib.rig_io import read_rig
    from headcap.capture.session import read_session
    from headcap.core.fileio import atomic_write_bytes

    session = read_session(session_dir)
    summary: dict = {"steps": {n: {"status": r.status, "seconds": round(r.seconds, 2)} for n, r in result.results.items()},
                     "skipped": result.skipped, "seconds": round(seconds, 1)}
    prior = session.extra.get("rig_prior")
    if prior and session.rig != prior:  # the calibrated rig against the studio's true one
        summary["calibration"] = compare_rigs(read_rig(session_dir / session.rig), read_rig(session_dir / prior)).rows()
    for step, name in (("registration", "summary.json"), ("tracking", "summary.json"), ("avatar", "metrics.json"),
                       ("avatar_eval", "metrics.json"), ("export", "summary.json")):
        path = session_dir / step / name
        if path.is_file():
            summary[step] = read_json(path)
    write_json(out / "summary.json", summary)
    report = out / "report.html"
    if result.report is not None and result.report.is_file():
        atomic_write_bytes(report, result.report.read_bytes())
    return report

