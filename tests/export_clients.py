"""Locate the JavaScript clients the export tests drive (tests/js: Khronos glTF-Validator, three.js,
playwright-core) and Debian's Chromium. `.ci/run` installs them; locally run
`npm ci --prefix tests/js` and `apt-get install chromium`. HEADCAP_NODE_MODULES overrides the
node_modules folder, HEADCAP_CHROMIUM the browser."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

JS_DIR = Path(__file__).resolve().parent / "js"


def node_modules() -> Path:
    return Path(os.environ.get("HEADCAP_NODE_MODULES", str(JS_DIR / "node_modules")))


def require_node_package(name: str) -> Path:
    """Path of node_modules/NAME; skips (a failure under CI) when node or the package is missing."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed (Debian package nodejs)")
    path = node_modules() / name
    if not (path / "package.json").is_file():
        pytest.skip(f"npm package {name} not installed in {node_modules()} (run: npm ci --prefix tests/js)")
    return path


def chromium() -> str:
    exe = os.environ.get("HEADCAP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return exe


def run_node(script: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, NODE_PATH=str(node_modules()))
    return subprocess.run(["node", str(script), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=str(JS_DIR))


def validate(*files: Path) -> list[dict]:
    """Khronos glTF-Validator reports, one per file: {"file", "validatorVersion", "issues"}."""
    require_node_package("gltf-validator")
    proc = run_node(JS_DIR / "validate.cjs", *files)
    if proc.returncode != 0:
        raise RuntimeError(f"gltf-validator failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)
