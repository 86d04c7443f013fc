"""The synthetic-studio stage: a rig session with ground truth, rendered into the stage folder."""
from __future__ import annotations

from headcap.pipeline.runner import Stage, StageContext

CODE = ("headcap.studio", "headcap.reconstruct", "headcap.calib", "headcap.capture.session")


def synth_stage(config, name: str = "session") -> Stage:
    """config: headcap.studio.synthesize.StudioConfig. Outputs a session folder (session.json)."""
    return Stage(name=name, run=_run, config=config, outputs=("session.json", "contact_sheet.png"),
                 code=CODE, description="filming a synthetic head in a virtual rig")


def _run(ctx: StageContext) -> dict:
    from headcap.studio.synthesize import render_session_into

    bars: dict[str, object] = {}
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=ctx.console) as bar:
        def report(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = bar.add_task(stage, total=total)
            bar.update(bars[stage], completed=done)

        timings = render_session_into(ctx.config, ctx.work_dir, progress=report)
    return {"timings_s": timings}
