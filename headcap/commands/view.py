"""`headcap view INPUT --out DIR`: a self-contained web page that plays the avatar's animation."""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "view", help="write a self-contained web viewer (HTML + three.js) that plays the avatar",
        description="Write DIR/index.html: one page with three.js and the avatar .glb embedded (nothing fetched "
                    "at run time; opens from file://), playing the file's animation clip, orbit with the mouse. "
                    "INPUT is a .glb, or anything `headcap export --format glb` takes (a session or a sequence "
                    ".npz), which is exported first.")
    parser.add_argument("input", type=Path, metavar="INPUT", help=".glb file, session folder or sequence .npz")
    parser.add_argument("--out", type=Path, required=True, help="folder to write index.html (and avatar.glb) into")
    parser.add_argument("--head-model", default=None, metavar="SPEC", help="head model spec when exporting first")
    parser.set_defaults(handler=_run)


def _run(args) -> int:
    import argparse

    from headcap.viewer import write_viewer

    if not args.input.exists():
        raise ValueError(f"{args.input}: no such file or folder")
    glb = args.input
    if args.input.suffix.lower() == ".glb":
        from headcap.avatar.export.glb import read_glb

        read_glb(glb)  # a broken .glb is refused here, not embedded into a page that shows nothing
    else:
        from headcap.commands.export import _export_mesh

        args.out.mkdir(parents=True, exist_ok=True)
        glb = args.out / "avatar.glb"
        _export_mesh(argparse.Namespace(input=args.input, out=glb, head_model=args.head_model, texture_size=512,
                                        bake_frames="0"))
    page = write_viewer(glb, args.out)
    print(f"wrote {page} ({page.stat().st_size / 1e6:.1f} MB, self-contained: open it in a browser)")
    return 0
