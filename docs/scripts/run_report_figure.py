"""Make a small synthetic session, run `headcap run` on it and screenshot its report.html in
Debian's headless Chromium: docs/img/pipeline_report.png.

    python docs/scripts/run_report_figure.py docs/img/pipeline_report.png
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("HEADCAP_TEST_DATA", ROOT.parent / "shared" / "data"))


def main(out: Path) -> None:
    from headcap.cli import main as cli

    tmp = Path(tempfile.mkdtemp(prefix="run_report_"))
    session = tmp / "session"
    assert cli(["synth", "--out", str(session), "--cameras", "6", "--frames", "2", "--resolution", "256",
                "--calib-frames", "16", "--seed", "2"]) == 0
    config = tmp / "run.toml"
    config.write_text(f'[landmarks]\nmodels = "{DATA / "mediapipe_face" / "models"}"\n')
    assert cli(["run", str(session), "--config", str(config)]) == 0
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise SystemExit("Debian's chromium is needed for the screenshot")
    shot = tmp / "shot.png"
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1100,1500", f"--screenshot={shot}", (session / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    image = image.resize((image.width * 2 // 3, image.height * 2 // 3), Image.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)
    print(f"wrote {out} ({image.width}x{image.height})")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "img" / "pipeline_report.png")
