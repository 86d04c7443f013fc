"""The export step of `headcap run`: the session's head and avatar as files engines load
(avatar/export; docs/export.md).

Output SESSION/export/:
    head.glb       the head model with ARKit-named morph targets, skeleton + skin, the tracked
                   sequence as an animation clip and a texture baked from the calibrated frames
    avatar.ply     the trained Gaussian avatar's canonical Gaussians (reference 3DGS layout)
    avatar.glb     the same Gaussians in KHR_gaussian_splatting, skinned and morphed with the
                   head's skeleton, morph targets and animation (when an avatar was trained)
    summary.json   files and sizes, what each was made from
Inputs: SESSION/tracking/params.npz (else the synthetic studio's ground truth) and
SESSION/avatar/gaussians.ply when present.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from headcap.core.fileio import write_json
from headcap.pipeline.runner import Stage, StageContext

CODE = ("headcap.avatar.export", "headcap.commands.export", "headcap.pipeline.stages.export")


@dataclass(frozen=True)
class ExportStageConfig:
    texture_size: int = 512
    """Baked texture size of head.glb in texels (0: no texture)."""
    bake_frames: str = "0"
    """Comma-separated frames whose images are baked into the texture."""
    splat_frame: int = 0
    """Frame of the sequence the avatar's canonical Gaussians are bound at."""

    def __post_init__(self):
        if isinstance(self.texture_size, bool) or not isinstance(self.texture_size, int) or \
                not (self.texture_size == 0 or 16 <= self.texture_size <= 8192):
            raise ValueError(f"export: field 'texture_size' must be 0 or 16..8192, got {self.texture_size!r}")


def export_stage(config: ExportStageConfig, session_root: Path, name: str = "export") -> Stage:
    from headcap.avatar.export.sequence import find_sequence
    from headcap.capture.session import read_session

    session = read_session(session_root)
    root = Path(session.root)
    sequence = find_sequence(root)  # ValueError when there is nothing to export
    files = [sequence, session.manifest_path]
    if session.rig_path() is not None:
        files.append(session.rig_path())
    files += [session.image_path(int(f), c) for f in config.bake_frames.split(",") if f.strip().isdigit()
              and int(f) < session.frame_count for c in session.cameras]
    avatar = root / "avatar" / "gaussians.ply"
    if avatar.is_file():
        files.append(avatar)

    def run(ctx: StageContext) -> dict:
        return export_into(ctx, root, avatar if avatar.is_file() else None)

    return Stage(name=name, run=run, config=config, files=tuple(files), outputs=("head.glb", "summary.json"),
                 code=CODE, description="glTF head (ARKit morphs, skeleton, animation, texture), avatar splats")


def export_into(ctx: StageContext, root: Path, avatar: Path | None) -> dict:
    from headcap.avatar.export.splats import read_ply, write_ply
    from headcap.commands.export import export_animated_splats, export_mesh

    config: ExportStageConfig = ctx.config
    lines = {}
    arkit_map = ctx.work_dir / "arkit_map.npz"  # a FLAME head's ARKit map, fitted once for both files
    lines["head.glb"], info = export_mesh(root, ctx.work_dir / "head.glb", None, config.texture_size, config.bake_frames,
                                          arkit_map=arkit_map)
    ctx.console.print(f"  {lines['head.glb']}")
    if avatar is not None:
        from headcap.avatar.export.sequence import find_sequence, read_sequence

        splats = read_ply(avatar)  # canonical: neutral, rest pose, head frame
        write_ply(ctx.work_dir / "avatar.ply", splats)
        lines["avatar.ply"] = f"{splats.count} Gaussians (canonical, head frame) from {avatar}"
        sequence = read_sequence(find_sequence(root))
        frame = min(config.splat_frame, sequence.num_frames - 1)
        # into the world at the binding frame (the head's rigid pose; the expression moves a
        # Gaussian by millimetres, far within the binding's reach)
        world = splats.transformed(sequence.world_from_head[frame])
        lines["avatar.glb"] = export_animated_splats(world, root, ctx.work_dir / "avatar.glb", "splat-glb",
                                                     None, frame, arkit_map=arkit_map)
        ctx.console.print(f"  {lines['avatar.glb']}")
    # the notes name the file by its name in this folder, not by the work folder's path
    files = {name: {"bytes": (ctx.work_dir / name).stat().st_size,
                    "note": note.replace(f"wrote {ctx.work_dir / name}", f"wrote {name}", 1)}
             for name, note in lines.items()}
    summary = {"files": files, "morph_targets": len(info.morph_targets), "joints": list(info.joints),
               "frames": info.frames}
    write_json(ctx.work_dir / "summary.json", summary)
    return {"files": sorted(files), "bytes": sum(f["bytes"] for f in files.values())}
