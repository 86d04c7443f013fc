"""`headcap models fetch [--from WHEEL_OR_DIR] [--dest DIR]`: MediaPipe's face detector and
face-landmark models (Apache-2.0) into the folder `headcap landmarks` reads by default
(reconstruct.face_detect.default_models_dir: $HEADCAP_MODELS or ~/.cache/headcap/models/mediapipe_face).

Without --from, pip downloads the mediapipe 0.10.21 wheel for this platform (`pip download
mediapipe==0.10.21 --no-deps`, nothing installed) into a temporary folder; the two .tflite files
are read out of the wheel (a zip) and checked: size bounds, the TFLite flatbuffer identifier
"TFL3", and their sha256 recorded in manifest.json beside them. Each file is written atomically.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MEDIAPIPE_VERSION = "0.10.21"
#: file name -> path inside the mediapipe wheel
MEMBERS = {
    "face_detection_short_range.tflite": "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "face_landmark.tflite": "mediapipe/modules/face_landmark/face_landmark.tflite",
}
#: plausible sizes (bytes) of each model: a truncated or substituted file falls outside
SIZE_BOUNDS = {"face_detection_short_range.tflite": (100_000, 2_000_000),
               "face_landmark.tflite": (500_000, 10_000_000)}
MANIFEST = "manifest.json"


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="get the model files headcap uses (MediaPipe face models)",
                              description="Manage the model files headcap reads (never downloaded at run time).")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    f = sub.add_parser("fetch", help="MediaPipe face detector + face landmark models (Apache-2.0) into the cache",
                       description=__doc__.split("\n\n")[1])
    f.add_argument("--from", dest="source", type=Path, default=None,
                   help="a mediapipe wheel (.whl) or a folder holding the two .tflite files, instead of pip")
    f.add_argument("--dest", type=Path, default=None,
                   help="folder to write (default: $HEADCAP_MODELS or ~/.cache/headcap/models/mediapipe_face)")
    f.set_defaults(handler=run_fetch)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def check_model(name: str, data: bytes, origin: str) -> None:
    """ValueError naming the file when `data` is not a plausible TFLite model `name`."""
    low, high = SIZE_BOUNDS[name]
    if not low <= len(data) <= high:
        raise ValueError(f"{origin}: {name} is {len(data)} bytes, outside the expected {low}..{high}")
    if data[4:8] != b"TFL3":
        raise ValueError(f"{origin}: {name} is not a TFLite model (no 'TFL3' identifier at byte 4)")


def read_models(source: Path) -> dict[str, bytes]:
    """The two model files from a mediapipe wheel or a folder holding them."""
    source = Path(source)
    out = {}
    if source.is_dir():
        for name in MEMBERS:
            path = source / name
            if not path.is_file():
                raise ValueError(f"{source}: {name} is missing")
            out[name] = path.read_bytes()
    elif source.is_file():
        try:
            with zipfile.ZipFile(source) as wheel:
                names = set(wheel.namelist())
                for name, member in MEMBERS.items():
                    if member not in names:
                        raise ValueError(f"{source}: {member} is not in the wheel (mediapipe 0.10.x bundles it)")
                    info = wheel.getinfo(member)
                    high = SIZE_BOUNDS[name][1]
                    if info.file_size > high:
                        raise ValueError(f"{source}: {member} claims {info.file_size} bytes, more than {high}")
                    out[name] = wheel.read(member)
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{source}: not a wheel (zip) file ({exc})") from None
    else:
        raise ValueError(f"--from {source}: no such file or folder")
    for name, data in out.items():
        check_model(name, data, str(source))
    return out


def download_wheel(folder: Path) -> Path:
    """pip download mediapipe==MEDIAPIPE_VERSION --no-deps into `folder`; the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", f"mediapipe=={MEDIAPIPE_VERSION}", "--no-deps",
           "--only-binary", ":all:", "-d", str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-2:])
        raise RuntimeError(f"pip download mediapipe=={MEDIAPIPE_VERSION} failed (exit {proc.returncode}): {tail}; "
                           "download the wheel elsewhere and pass --from WHEEL")
    wheels = sorted(folder.glob("mediapipe-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download mediapipe=={MEDIAPIPE_VERSION} wrote no wheel into {folder}")
    return wheels[0]


def install_models(models: dict[str, bytes], dest: Path, origin: str) -> dict:
    """Write the files and manifest.json atomically into `dest`; returns the manifest."""
    from headcap.core.fileio import atomic_write_bytes, write_json

    dest.mkdir(parents=True, exist_ok=True)
    manifest = {"source": origin, "mediapipe_version": MEDIAPIPE_VERSION, "licence": "Apache-2.0", "files": {}}
    for name, data in models.items():
        atomic_write_bytes(dest / name, data)
        manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    write_json(dest / MANIFEST, manifest)
    return manifest


def verify_installed(dest: Path) -> list[str]:
    """Problems with the files in `dest` against its manifest (empty: all good)."""
    from headcap.core.fileio import read_json

    problems = []
    manifest = read_json(dest / MANIFEST)
    for name, entry in manifest.get("files", {}).items():
        path = dest / name
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry.get("sha256"):
            problems.append(f"{path}: sha256 {digest} differs from the manifest's {entry.get('sha256')}")
    return problems


def run_fetch(args) -> int:
    from rich.console import Console

    from headcap.reconstruct.face_detect import default_models_dir

    console = Console(stderr=True)
    dest = Path(args.dest) if args.dest is not None else default_models_dir()
    if args.source is not None:
        models = read_models(args.source)
        origin = str(Path(args.source).resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="headcap-models-") as tmp:
            console.print(f"downloading the mediapipe {MEDIAPIPE_VERSION} wheel with pip (no install) ...")
            wheel = download_wheel(Path(tmp))
            models = read_models(wheel)
            origin = f"pypi:{wheel.name}"
    manifest = install_models(models, dest, origin)
    problems = verify_installed(dest)
    if problems:
        raise ValueError("; ".join(problems))
    for name, entry in manifest["files"].items():
        console.print(f"{name}: {entry['bytes']} bytes, sha256 {entry['sha256'][:16]}...")
    console.print(f"wrote {dest} (Apache-2.0, from {origin})")
    return 0
