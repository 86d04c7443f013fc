"""What `headcap ingest` can read, each turned into the same list of per-camera frame sources.

| format | SRC | cameras | calibration |
|---|---|---|---|
| videos | folder of per-camera videos `<cam>.mp4` | file stems | `--calibration` |
| images | folder of per-camera image folders `<cam>/*.png` | folder names | `--calibration` |
| nersemble | v2 sequence `<p>/sequences/<seq>/images/cam_<serial>.mp4`, or v1 sequence `<seq>/[timesteps/]frame_<t>/images*/cam_<serial>.png` (+ `alpha_map*/`) | serials | `<p>/calibration/camera_params.json` or `<p>/camera_params.json` |
| nerfstudio | folder with `transforms.json` | frame `camera_id` or image stem | the transforms themselves |
| monocular | one video file | `cam00` | metadata focal length or a field-of-view guess |

Background plates: `--background DIR` (per-camera files named like the cameras), else a
`background/` folder inside SRC, else NeRSemble's `BACKGROUND` sequence of the same participant.
User masks (`masks/<cam>/` beside image folders, NeRSemble `alpha_map`, nerfstudio `mask_path`)
are kept as given.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headcap.capture.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES, frame_number, list_images, natural_key

FORMATS = ("auto", "videos", "images", "nersemble", "nerfstudio", "monocular")


@dataclass
class CameraSource:
    """One camera's frames: a video file, or image files with their frame numbers."""

    camera: str
    video: Path | None = None
    images: list[Path] = field(default_factory=list)
    frame_numbers: list[int] = field(default_factory=list)
    masks: list[Path | None] = field(default_factory=list)  # user masks, parallel to decoded frames
    background: list[Path] = field(default_factory=list)  # plate video or plate images
    dropped: list[int] = field(default_factory=list)  # original image indices removed as unreadable

    @property
    def label(self) -> str:
        return str(self.video) if self.video is not None else str(self.images[0].parent if self.images else "?")


@dataclass
class Source:
    format: str
    root: Path
    cameras: list[CameraSource]
    rig: object | None = None  # calib.camera.Rig
    fps: float | None = None
    notes: dict = field(default_factory=dict)


def detect_format(src: Path) -> str:
    src = Path(src)
    if src.is_file():
        if src.suffix.lower() in VIDEO_SUFFIXES:
            return "monocular"
        if src.name == "transforms.json":
            return "nerfstudio"
        raise ValueError(f"{src}: cannot tell the format of this file (expected a video or transforms.json)")
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such file or folder")
    if (src / "transforms.json").is_file():
        return "nerfstudio"
    if _nersemble_calibration(src) is not None:
        return "nersemble"
    if any(p.suffix.lower() in VIDEO_SUFFIXES for p in src.iterdir() if p.is_file()):
        return "videos"
    if any(p.is_dir() and p.name not in ("background", "masks") and list_images(p) for p in src.iterdir()):
        return "images"
    raise ValueError(f"{src}: empty or unrecognised folder: no videos, image folders, transforms.json or "
                     "NeRSemble layout found")


def _cam_files(folder: Path, suffixes) -> dict[str, Path]:
    out = {}
    for p in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."):
            out[p.stem] = p
    return out


def _backgrounds(cameras: list[CameraSource], folder: Path | None) -> None:
    """Attach plates found in `folder`: `<cam>.<video>` or `<cam>.<image>` or `<cam>/*.<image>`."""
    if folder is None or not folder.is_dir():
        return
    for cs in cameras:
        for suffix in VIDEO_SUFFIXES + IMAGE_SUFFIXES:
            if (folder / f"{cs.camera}{suffix}").is_file():
                cs.background = [folder / f"{cs.camera}{suffix}"]
                break
        else:
            if (folder / cs.camera).is_dir():
                cs.background = list_images(folder / cs.camera)


def _user_masks(cs: CameraSource, folder: Path) -> None:
    if not folder.is_dir():
        return
    by_number = {}
    for p in list_images(folder):
        n = frame_number(p.name)
        if n is not None:
            by_number[n] = p
    cs.masks = [by_number.get(n) for n in cs.frame_numbers]


def _image_camera(camera: str, folder: Path) -> CameraSource:
    files = list_images(folder)
    numbers = [frame_number(p.name) for p in files]
    if any(n is None for n in numbers) or len(set(numbers)) != len(numbers):
        numbers = list(range(len(files)))
    return CameraSource(camera, images=files, frame_numbers=numbers)


def discover_videos(src: Path) -> Source:
    files = _cam_files(src, VIDEO_SUFFIXES)
    if not files:
        raise ValueError(f"{src}: no video files ({', '.join(VIDEO_SUFFIXES)}) found")
    cameras = [CameraSource(cam, video=path) for cam, path in files.items()]
    _backgrounds(cameras, src / "background")
    return Source("videos", src, cameras)


def discover_images(src: Path) -> Source:
    cameras = []
    for folder in sorted((p for p in src.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
        if folder.name in ("background", "masks") or folder.name.startswith("."):
            continue
        cs = _image_camera(folder.name, folder)
        if not cs.images:
            raise ValueError(f"{folder}: camera folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        _user_masks(cs, src / "masks" / folder.name)
        cameras.append(cs)
    if not cameras:
        raise ValueError(f"{src}: no per-camera image folders found")
    _backgrounds(cameras, src / "background")
    return Source("images", src, cameras)


def _nersemble_calibration(src: Path) -> Path | None:
    """camera_params.json for a NeRSemble participant or sequence folder, or None."""
    src = Path(src).resolve()
    for base in (src, src.parent, src.parent.parent, src.parent.parent.parent):
        for candidate in (base / "calibration" / "camera_params.json", base / "camera_params.json"):
            if candidate.is_file():
                return candidate
    return None


def discover_nersemble(src: Path, sequence: str | None = None) -> Source:
    """NeRSemble v2 (`images/cam_<serial>.mp4`) or v1 (`frame_<t>/images*/cam_<serial>.png`).

    Convention (see calib/formats/nersemble.py): `world_2_cam` is cam_from_world with OpenCV axes
    in metres; `intrinsics` refers to the full 2200x3208 images and is rescaled to the ingested size.
    """
    src = Path(src)
    calibration = _nersemble_calibration(src)
    if calibration is None:
        raise ValueError(f"{src}: no NeRSemble camera_params.json found in calibration/ above this folder")
    if (src / "sequences").is_dir():
        if sequence is None:
            names = sorted(p.name for p in (src / "sequences").iterdir() if p.is_dir() and p.name != "BACKGROUND")
            raise ValueError(f"{src}: a NeRSemble participant folder; choose a sequence with --sequence (one of {names})")
        if (not isinstance(sequence, str) or not sequence or sequence in (".", "..")
                or any(ch in sequence for ch in "/\\\0") or Path(sequence).is_absolute()):
            raise ValueError(f"--sequence: expected the name of a folder in {src / 'sequences'}, got {sequence!r}")
        src = src / "sequences" / sequence
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such NeRSemble sequence folder")
    cameras: list[CameraSource] = []
    if (src / "images").is_dir():
        for stem, path in _cam_files(src / "images", VIDEO_SUFFIXES).items():
            cameras.append(CameraSource(stem.removeprefix("cam_"), video=path))
        background = src.parent / "BACKGROUND" / "images"
        for cs in cameras:
            plate = background / f"cam_{cs.camera}.mp4"
            if plate.is_file():
                cs.background = [plate]
    else:
        # the v1 release nests the frames in `timesteps/` (`<seq>/timesteps/frame_00000/images-2x/`)
        holder = src / "timesteps" if (src / "timesteps").is_dir() else src
        frames = sorted((p for p in holder.iterdir() if p.is_dir() and re.fullmatch(r"frame_\d+", p.name)),
                        key=lambda p: int(p.name[6:]))
        if not frames:
            raise ValueError(f"{src}: neither images/cam_*.mp4 (v2) nor [timesteps/]frame_*/ folders (v1) found")
        image_dir = next((d.name for d in sorted(frames[0].iterdir()) if d.is_dir() and d.name.startswith("images")), None)
        alpha_dir = next((d.name for d in sorted(frames[0].iterdir()) if d.is_dir() and d.name.startswith("alpha_map")), None)
        if image_dir is None:
            raise ValueError(f"{frames[0]}: no images*/ folder")
        serials = sorted(p.stem.removeprefix("cam_") for p in list_images(frames[0] / image_dir))
        for serial in serials:
            cs = CameraSource(serial)
            for f in frames:
                hits = [p for p in (f / image_dir).glob(f"cam_{serial}.*") if p.suffix.lower() in IMAGE_SUFFIXES]
                if not hits:
                    raise ValueError(f"{f / image_dir}: camera cam_{serial} is missing in this frame")
                cs.images.append(hits[0])
                cs.frame_numbers.append(int(f.name[6:]))
                mask = [p for p in (f / alpha_dir).glob(f"cam_{serial}.*")] if alpha_dir else []
                cs.masks.append(mask[0] if mask else None)
            if not any(cs.masks):
                cs.masks = []
            cameras.append(cs)
    if not cameras:
        raise ValueError(f"{src}: no NeRSemble cameras found")
    rig = _read_nersemble_quiet(calibration)
    return Source("nersemble", src, cameras, rig=rig, notes={"calibration": str(calibration),
                                                             "convention": "world_2_cam = cam_from_world, OpenCV axes, metres"})


def _read_nersemble_quiet(path: Path):
    import warnings

    from headcap.calib.formats.nersemble import read_nersemble

    # Ingest rescales K to the decoded image size itself, so the full-size assumption is intended.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_nersemble(path)


def discover_nerfstudio(src: Path) -> Source:
    """transforms.json frames grouped by camera (`camera_id` or image stem) and timestep
    (`timestep_index` as VHAP writes it, else the frame's order within its camera)."""
    from headcap.core.fileio import FileFormatError, read_json, safe_relative_path
    from headcap.calib.formats.nerfstudio import rig_from_transforms
    from headcap.capture.session import check_camera_id

    path = src if src.is_file() else src / "transforms.json"
    data = read_json(path)
    rig = rig_from_transforms(data, path)
    root = path.parent
    by_cam: dict[str, CameraSource] = {}
    for i, frame in enumerate(data["frames"]):
        file_path = frame.get("file_path")
        if not isinstance(file_path, str) or not file_path:
            raise FileFormatError(path, f"frames[{i}].file_path", f"expected an image path, got {file_path!r}")
        if "camera_id" in frame:
            cam = check_camera_id(str(frame["camera_id"]), path, f"frames[{i}].camera_id")
        else:
            cam = check_camera_id(Path(file_path).stem, path, f"frames[{i}].file_path")
        cs = by_cam.setdefault(cam, CameraSource(cam))
        image = safe_relative_path(root, file_path, path, f"frames[{i}].file_path")
        if not image.suffix:
            image = next((image.with_suffix(s) for s in IMAGE_SUFFIXES if image.with_suffix(s).is_file()), image)
        t = frame.get("timestep_index", len(cs.images))
        if isinstance(t, bool) or not isinstance(t, int):
            raise FileFormatError(path, f"frames[{i}].timestep_index", f"expected an integer, got {t!r}")
        cs.images.append(image)
        cs.frame_numbers.append(t)
        mask_key = "mask_path" if frame.get("mask_path") else "fg_mask_path"
        mask = frame.get(mask_key)
        if mask is not None and not isinstance(mask, str):
            raise FileFormatError(path, f"frames[{i}].{mask_key}", f"expected a relative path, got {mask!r}")
        cs.masks.append(safe_relative_path(root, mask, path, f"frames[{i}].{mask_key}") if mask else None)
    for cs in by_cam.values():
        order = np.argsort(cs.frame_numbers, kind="stable")
        cs.images = [cs.images[k] for k in order]
        cs.frame_numbers = [cs.frame_numbers[k] for k in order]
        cs.masks = [cs.masks[k] for k in order] if any(cs.masks) else []
    cameras = list(by_cam.values())
    _backgrounds(cameras, root / "background")
    return Source("nerfstudio", root, cameras, rig=rig, notes={"transforms": str(path)})


def monocular_rig(camera: str, width: int, height: int, metadata: dict, fov_degrees: float):
    """A one-camera rig: focal length from a 35 mm-equivalent tag when the video carries one,
    else from a horizontal field-of-view guess (tracking refines it later)."""
    from headcap.calib.camera import Camera, Rig

    focal = None
    source = f"fov_guess({fov_degrees:g} deg horizontal)"
    for key, value in metadata.items():
        if "35mm" in key.lower() or "focal_length_35" in key.lower():
            try:
                f35 = float(str(value).split()[0])
            except ValueError:
                continue
            if f35 > 0:
                # 35 mm equivalent: the same diagonal field of view as on a 36 x 24 mm frame.
                focal = f35 * math.hypot(width, height) / math.hypot(36.0, 24.0)
                source = f"metadata({key}={value})"
                break
    if focal is None:
        if not 1.0 < fov_degrees < 179.0:
            raise ValueError(f"--fov: expected a field of view in degrees between 1 and 179, got {fov_degrees}")
        focal = 0.5 * max(width, height) / math.tan(math.radians(fov_degrees) / 2)
    K = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1.0]])
    return Rig({camera: Camera(camera, width, height, K)}), source


def discover(src, fmt: str = "auto", background: Path | None = None, sequence: str | None = None) -> Source:
    src = Path(src)
    if fmt not in FORMATS:
        raise ValueError(f"--format: expected one of {FORMATS}, got {fmt!r}")
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    if src.is_dir() and not any(src.iterdir()):
        raise ValueError(f"{src}: the folder is empty")
    if fmt == "auto":
        fmt = detect_format(src)
    if fmt == "monocular":
        if not src.is_file():
            raise ValueError(f"{src}: --format monocular expects one video file")
        source = Source("monocular", src.parent, [CameraSource("cam00", video=src)])
    elif fmt == "videos":
        source = discover_videos(src)
    elif fmt == "images":
        source = discover_images(src)
    elif fmt == "nersemble":
        source = discover_nersemble(src, sequence)
    else:
        source = discover_nerfstudio(src)
    from headcap.capture.session import check_camera_id

    for cs in source.cameras:
        check_camera_id(cs.camera, cs.label, "camera id")
    if background is not None:
        if not Path(background).is_dir():
            raise FileNotFoundError(f"--background {background}: no such folder")
        _backgrounds(source.cameras, Path(background))
    return source
