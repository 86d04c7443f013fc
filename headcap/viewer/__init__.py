"""The self-contained web viewer that `headcap view` writes: one HTML page that embeds three.js
(viewer.bundle.js, bundled from viewer.js by esbuild at build time, MIT licence kept in the
bundle) and the avatar .glb as base64, plays the file's animation and orbits with the mouse.
Nothing is fetched at run time, so it opens from file:// or any static host.

Rebuild the bundle after changing viewer.js (tests/headcap/test_viewer.py checks it is current):
    npm ci --prefix tests/js
    NODE_PATH=tests/js/node_modules tests/js/node_modules/esbuild/bin/esbuild headcap/viewer/viewer.js \\
        --bundle --minify --format=iife --legal-comments=eof --outfile=headcap/viewer/viewer.bundle.js
"""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path

__all__ = ["BUNDLE", "SOURCE", "write_viewer", "ESBUILD_ARGS"]

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "viewer.js"
BUNDLE = HERE / "viewer.bundle.js"
ESBUILD_ARGS = ["--bundle", "--minify", "--format=iife", "--legal-comments=eof", "--log-level=warning"]

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>
  html, body {{ margin: 0; height: 100%; overflow: hidden; background: #202124; }}
  #status {{ position: absolute; left: 12px; bottom: 10px; color: #ddd; font: 13px system-ui, sans-serif; }}
</style>
</head>
<body>
<div id="status">loading {title}...</div>
<script id="avatar" type="application/octet-stream">
{glb}
</script>
<script>
{bundle}
</script>
</body>
</html>
"""


def write_viewer(glb: str | os.PathLike, out_dir: str | os.PathLike, title: str | None = None) -> Path:
    """Write out_dir/index.html (page + three.js + the .glb inline) and a copy of the .glb
    beside it; returns the page's path."""
    from headcap.core.fileio import atomic_write_bytes, atomic_write_text

    glb = Path(glb)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = glb.read_bytes()
    if data[:4] != b"glTF":
        raise ValueError(f"{glb}: not a binary glTF (.glb) file")
    if not BUNDLE.is_file():
        raise RuntimeError(f"{BUNDLE} is missing from this install (see headcap/viewer/__init__.py to rebuild it)")
    bundle = BUNDLE.read_text(encoding="utf-8").replace("</script", "<\\/script")
    encoded = base64.b64encode(data).decode("ascii")
    lines = "\n".join(encoded[i:i + 120] for i in range(0, len(encoded), 120))
    page = _PAGE.format(title=html.escape(title or glb.stem), glb=lines, bundle=bundle)
    if out_dir.resolve() != glb.parent.resolve() or glb.name != "avatar.glb":
        atomic_write_bytes(out_dir / "avatar.glb", data)
    atomic_write_text(out_dir / "index.html", page)
    return out_dir / "index.html"
