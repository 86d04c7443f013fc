"""`headcap view`: the self-contained page loads in Debian's headless Chromium with no console
errors and plays the avatar's animation; the committed three.js bundle is what esbuild builds
from headcap/viewer/viewer.js."""
import base64
import io
import json
import os
import subprocess

import numpy as np
from PIL import Image

from export_clients import JS_DIR, chromium, node_modules, require_node_package, run_node
from export_fixtures import random_sequence
from headcap.avatar.export.gltf import export_head_glb
from headcap.cli import main
from headcap.reconstruct.head_loaders import load_head_model
from headcap.viewer import BUNDLE, ESBUILD_ARGS, SOURCE

# warnings that come from the machine (no GPU), not from the page: SwiftShader's performance notes
# and WebGPURenderer falling back to its WebGL2 backend
MACHINE_NOTES = ("GL Driver Message", "No available adapters.", "WebGPU is not available, running under WebGL2")


def test_committed_bundle_is_built_from_the_source(tmp_path):
    require_node_package("esbuild")
    require_node_package("three")
    out = tmp_path / "viewer.bundle.js"
    subprocess.run([str(node_modules() / "esbuild" / "bin" / "esbuild"), str(SOURCE), *ESBUILD_ARGS,
                    f"--outfile={out}"], check=True, timeout=120, env=dict(os.environ, NODE_PATH=str(node_modules())))
    assert out.read_bytes() == BUNDLE.read_bytes(), "rebuild headcap/viewer/viewer.bundle.js (headcap/viewer/__init__.py)"


def open_viewer(glb, out_dir):
    """`headcap view GLB`, then the page in headless Chromium: (viewer state, screenshot [H, W, 3])."""
    require_node_package("playwright-core")
    exe = chromium()
    assert main(["view", str(glb), "--out", str(out_dir)]) == 0
    page = out_dir / "index.html"
    assert "http" not in page.read_text()[:2000]  # the page's own markup names nothing to fetch
    proc = run_node(JS_DIR / "render_check.cjs", exe, page.as_uri(), "-", out_dir / "out.json", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((out_dir / "out.json").read_text())
    errors = [m for m in out["console"] if m["type"] in ("error", "pageerror", "requestfailed")]
    assert not errors, errors
    noise = [m for m in out["console"] if m["type"] != "log" and not any(n in m["text"] for n in MACHINE_NOTES)]
    assert not noise, noise
    shot = np.asarray(Image.open(io.BytesIO(base64.b64decode(out["results"][0]["png"].split(",", 1)[1]))).convert("RGB"))
    return out["results"][0]["state"], shot


def covered_middle(shot) -> float:
    background = np.array([0x20, 0x21, 0x24])
    centre = shot[shot.shape[0] // 4: 3 * shot.shape[0] // 4, shot.shape[1] // 4: 3 * shot.shape[1] // 4]
    return float((np.abs(centre.astype(int) - background).sum(-1) > 30).mean())


def test_viewer_page_plays_the_animation_without_console_errors(tmp_path):
    head = load_head_model("default")
    seq = random_sequence(head, 10)
    seq.world_from_head[:, :3, 3] *= 0.1  # a head that stays in view while the clip plays in real time
    export_head_glb(head, tmp_path / "head.glb", sequence=seq)
    state, shot = open_viewer(tmp_path / "head.glb", tmp_path / "viewer")
    assert state["clip"] == "sequence" and len(state["morphTargets"]) == 52 and state["frames"] >= 10
    assert covered_middle(shot) > 0.2  # the head fills the middle


def test_viewer_page_draws_splats(tmp_path):
    from headcap.avatar.export.splats import Splats, write_splat_glb

    means = load_head_model("default").template.double().numpy()
    n = len(means)
    rng = np.random.default_rng(0)
    write_splat_glb(tmp_path / "splats.glb", Splats.from_colors(
        means, rng.normal(size=(n, 4)), np.log(rng.uniform(0.002, 0.005, (n, 3))), np.full(n, 2.0),
        np.full((n, 3), 0.8)))
    state, shot = open_viewer(tmp_path / "splats.glb", tmp_path / "viewer")
    assert state["splatObjects"] == 1 and state["frames"] >= 10
    assert covered_middle(shot) > 0.2
