"""`headcap export INPUT --format glb|ply|splat-glb --out FILE`: files that engines and viewers load.

- glb: the head mesh with ARKit-named morph targets, skeleton + skin and the tracked sequence as
  an animation clip; INPUT is a session (its tracking, or the synthetic studio's ground truth)
  or a sequence .npz. With a session, an albedo texture is baked from its calibrated frames.
- ply / splat-glb: Gaussians as the reference 3DGS .ply or a KHR_gaussian_splatting .glb; INPUT
  is a .ply or a folder holding gaussians.ply (the demo's splats stage, or the demo's folder).
See docs/export.md.
"""
from __future__ import annotations

from pathlib import Path

FORMATS = ("glb", "ply", "splat-glb")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="export a head (glTF with ARKit blendshapes, skeleton, animation) or splats (.ply, glTF)",
        description="Write standard files for game engines and the web: a .glb head mesh with ARKit-named morph "
                    "targets, a neck/jaw/eye skeleton with skinning, a baked albedo texture and the tracked "
                    "sequence as an animation clip; or Gaussian splats as a 3DGS .ply or a .glb with "
                    "KHR_gaussian_splatting. glTF files are +Y up, metres.")
    parser.add_argument("input", type=Path, metavar="INPUT",
                        help="session folder or sequence .npz (glb); .ply or folder with gaussians.ply (ply, splat-glb)")
    parser.add_argument("--format", choices=FORMATS, required=True, help="what to write")
    parser.add_argument("--out", type=Path, required=True, help="file to write")
    parser.add_argument("--head-model", default=None, metavar="SPEC",
                        help="head model spec (default | ict:PATH | flame:PATH | npz:PATH); default: the session's, "
                             "else 'default'")
    parser.add_argument("--texture-size", type=int, default=512, metavar="N",
                        help="baked texture size in texels (glb from a session; 0: no texture) (default: 512)")
    parser.add_argument("--bake-frames", default="0", metavar="LIST",
                        help="comma-separated frames whose images are baked into the texture (default: 0)")
    parser.add_argument("--sequence", type=Path, default=None, metavar="PATH",
                        help="ply / splat-glb: animate the Gaussians with this tracked sequence (session folder or "
                             "sequence .npz): splat-glb gets the head's skeleton, skin, morph targets and animation on "
                             "its splat primitive; ply writes the canonical set plus one posed .ply per frame")
    parser.add_argument("--splat-frame", type=int, default=0, metavar="N",
                        help="frame of the sequence the Gaussians were fitted at (default: 0)")
    parser.add_argument("--flame-targets", choices=("arkit", "pca"), default="arkit",
                        help="a model with PCA expressions (FLAME): write the 52 ARKit targets of a fitted linear "
                             "map (jaw and gaze baked in) and the clip as ARKit weights, or the raw PCA modes "
                             "exp000... (default: arkit; see docs/export.md)")
    parser.add_argument("--arkit-map", type=Path, default=None, metavar="NPZ",
                        help="cache of the fitted FLAME -> ARKit map: read when it exists and fits the model, else "
                             "fitted (seconds) and written there (default: fitted, not kept)")
    parser.set_defaults(handler=_run)


def _find_ply(path: Path) -> Path:
    if path.is_file():
        return path
    for rel in ("gaussians.ply", "avatar/gaussians.ply", "splats/gaussians.ply"):
        if (path / rel).is_file():
            return path / rel
    raise ValueError(f"{path}: no Gaussians found (looked for {path}/gaussians.ply and {path}/splats/gaussians.ply)")


def _run(args) -> int:
    if args.out.suffix.lower() != {"glb": ".glb", "ply": ".ply", "splat-glb": ".glb"}[args.format]:
        raise ValueError(f"--out {args.out}: a --format {args.format} file should end in "
                         f"{'.ply' if args.format == 'ply' else '.glb'}")
    if not args.input.exists():
        raise ValueError(f"{args.input}: no such file or folder")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.format == "glb":
        return _export_mesh(args)
    from headcap.avatar.export.splats import read_ply, write_ply, write_splat_glb

    source = _find_ply(args.input)
    splats = read_ply(source)
    if args.sequence is not None:
        return _export_animated_splats(args, splats, source)
    if args.format == "ply":
        write_ply(args.out, splats)
        size = args.out.stat().st_size
    else:
        size = write_splat_glb(args.out, splats)
    print(f"wrote {args.out}: {splats.count} Gaussians (SH degree {splats.sh_degree}) from {source}, {size / 1e6:.2f} MB")
    return 0


def load_sequence_and_model(path: Path, spec: str | None):
    """(session or None, sequence file, HeadSequence, HeadModel) of a session folder (its tracking,
    else its ground truth) or a sequence .npz; the model is `spec`, else the one the tracking
    fitted, else the session's, else the default head."""
    from headcap.avatar.export.sequence import find_sequence, read_sequence, sequence_head_spec
    from headcap.reconstruct.head_loaders import load_head_model

    session = None
    if path.is_dir():
        from headcap.capture.session import read_session

        sequence_path = find_sequence(path)
        if (path / "session.json").is_file():
            session = read_session(path)
    elif path.is_file():
        sequence_path = path
    else:
        raise ValueError(f"{path}: no such file or folder")
    sequence = read_sequence(sequence_path)
    if spec is None:
        spec = sequence_head_spec(sequence_path)
    if spec is None:
        spec = session.extra.get("head_model_spec", "default") if session is not None else "default"
        if spec == "scan":
            raise ValueError(f"{path}: this session films a rigid scan, not a head model; nothing to rig")
    return session, sequence_path, sequence, load_head_model(spec)


def arkit_map_for(model, flame_targets: str = "arkit", cache: Path | None = None):
    """The ARKit map to export `model` with: None unless its expressions are PCA modes (FLAME) and
    flame_targets is "arkit"; read from `cache` when that file fits the model, else fitted (and
    written to `cache` when given)."""
    from headcap.avatar.export.arkit_map import ArkitMap, fit_arkit_map, model_fingerprint, needs_arkit_map

    if flame_targets not in ("arkit", "pca"):
        raise ValueError(f"--flame-targets {flame_targets!r}: expected arkit or pca")
    if flame_targets == "pca" or not needs_arkit_map(model):
        return None
    fingerprint = model_fingerprint(model)
    if cache is not None and Path(cache).is_file():
        amap = ArkitMap.load(cache)
        if amap.fingerprint == fingerprint:
            return amap
    amap = fit_arkit_map(model)
    if cache is not None:
        amap.save(cache)
    return amap


def _export_animated_splats(args, splats, source) -> int:
    print(export_animated_splats(splats, args.sequence, args.out, args.format, args.head_model, args.splat_frame,
                                 args.flame_targets, args.arkit_map))
    return 0


def export_animated_splats(splats, sequence_source: Path, out: Path, fmt: str, head_model: str | None = None,
                           splat_frame: int = 0, flame_targets: str = "arkit", arkit_map: Path | None = None) -> str:
    """Gaussians bound to the head of a tracked sequence: a splat .glb with the head's skeleton,
    skin, morph targets and animation on its splat primitive, or the canonical .ply plus one posed
    .ply per frame. Returns the line to print."""
    from headcap.avatar.export.gltf import export_head_glb
    from headcap.avatar.export.splat_rig import bind_splats, pose_splats
    from headcap.avatar.export.splats import write_ply

    _, sequence_path, sequence, model = load_sequence_and_model(sequence_source, head_model)
    bound = bind_splats(model, splats, sequence, splat_frame)
    if fmt == "splat-glb":
        info = export_head_glb(model, out, sequence=sequence, splats=bound, name="headcap_splats",
                               arkit_map=arkit_map_for(model, flame_targets, arkit_map))
        return (f"wrote {out}: {splats.count} Gaussians bound to head model {model.name!r}, skinned to "
                f"{info.joints}, {len(info.morph_targets)} morph targets, {info.frames} frames of animation, "
                f"{info.bytes / 1e6:.2f} MB (sequence {sequence_path})")
    write_ply(out, bound.canonical)
    folder = out.with_suffix("")
    folder.mkdir(exist_ok=True)
    for frame in range(sequence.num_frames):
        write_ply(folder / f"{frame:06d}.ply", pose_splats(model, bound, sequence, frame))
    return (f"wrote {out} (canonical, head frame) and {sequence.num_frames} posed frames in {folder}/: "
            f"{splats.count} Gaussians (sequence {sequence_path})")


def _export_mesh(args) -> int:
    print(export_mesh(args.input, args.out, args.head_model, args.texture_size, args.bake_frames,
                      getattr(args, "flame_targets", "arkit"), getattr(args, "arkit_map", None))[0])
    return 0


def export_mesh(source: Path, out: Path, head_model: str | None = None, texture_size: int = 512,
                bake_frames: str = "0", flame_targets: str = "arkit",
                arkit_map: Path | None = None) -> tuple[str, object]:
    """The head as a .glb (ARKit morph targets, skeleton, the sequence as animation, a texture
    baked from the session's calibrated frames; a FLAME model's targets through the fitted ARKit
    map unless flame_targets is "pca"). Returns (line to print, export info)."""
    from headcap.avatar.export.gltf import export_head_glb

    session, sequence_path, sequence, model = load_sequence_and_model(source, head_model)
    texture, coverage = None, None
    if session is not None and texture_size > 0 and model.uvs is not None:
        texture, coverage = _bake(session, model, sequence, texture_size, bake_frames)
    amap = arkit_map_for(model, flame_targets, arkit_map)
    info = export_head_glb(model, out, sequence=sequence, texture=texture, arkit_map=amap)
    line = (f"wrote {out}: {info.vertices} vertices, {info.triangles} triangles, {len(info.morph_targets)} morph "
            f"targets, joints {info.joints}, {info.frames} frames of animation, {info.bytes / 1e6:.2f} MB "
            f"(head model {model.name!r}, sequence {sequence_path})")
    if amap is not None:
        line += (f"; {amap.summary()}; clip as ARKit weights: largest vertex residual "
                 f"{info.arkit_residual_mm:.2f} mm")
    if coverage is not None:
        line += f"; texture {texture.shape[0]} px baked from {len(session.cameras)} cameras, {100 * coverage:.0f} % of texels seen"
    return line, info


def _bake(session, model, sequence, texture_size: int, bake_frames: str):
    import cv2
    import torch

    from headcap.avatar.export.sequence import sequence_for_model
    from headcap.avatar.export.texture import bake_texture

    rig = session.load_rig()
    cameras = [rig[c] for c in session.cameras]
    try:
        frames = sorted({int(f) for f in bake_frames.split(",") if f.strip()})
    except ValueError:
        raise ValueError(f"--bake-frames {bake_frames!r}: expected comma-separated frame numbers") from None
    bad = [f for f in frames if not 0 <= f < min(sequence.num_frames, session.frame_count)]
    if bad or not frames:
        raise ValueError(f"--bake-frames: frames {bad or frames} outside 0..{min(sequence.num_frames, session.frame_count) - 1}")
    if session.extra.get("monocular") and frames != [0]:
        raise ValueError("--bake-frames: a monocular session's rig.json holds the frame-0 camera pose only; bake from 0")
    if not 16 <= texture_size <= 8192:
        raise ValueError(f"--texture-size {texture_size}: expected 16..8192 texels (0 for no texture)")
    expression, rotations = sequence_for_model(sequence, model)
    ident = torch.as_tensor(sequence.identity[None, : model.num_identity], dtype=torch.float64)
    m64 = model.to(dtype=torch.float64)
    inputs = []
    for f in frames:
        verts = m64(identity=ident, expression=torch.from_numpy(expression[f:f + 1]),
                    joint_rotations=torch.from_numpy(rotations[f:f + 1]),
                    world_from_head=torch.from_numpy(sequence.world_from_head[f])).vertices[0].numpy()
        images = []
        for cam in session.cameras:
            bgr = cv2.imread(str(session.image_path(f, cam)))
            if bgr is None:
                raise ValueError(f"{session.image_path(f, cam)}: cannot read the image")
            images.append(bgr[..., ::-1])
        inputs.append((verts, cameras, images))
    return bake_texture(model, inputs, size=texture_size)
