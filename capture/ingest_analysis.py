"""The analysis half of ingest: one decoding pass per camera, input checks, sync, the frame plan
and the colour matrices. Everything it returns is plain JSON (checkpointed for resume)."""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from headcap.capture import sync as sync_mod
from headcap.capture.colour import detect_chart, fit_affine, fit_transport, linear_samples, srgb_to_lab, linear_to_srgb
from headcap.capture.frame_size import parse_resize, scale_camera
from headcap.capture.masks import BackgroundPlate, matte
from headcap.capture.video import iter_video, luma_small, probe_video, read_audio, read_image

SAMPLE_SIDE = 256
CHART_SIDE = 768
"""Charts are looked for at this long side at most: the detector's time grows with the pixel
count, and area-downscaling leaves patch means unchanged."""
SAMPLES_PER_CAMERA = 12


def progress_bar(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=False)


@dataclass
class CameraScan:
    camera: str
    width: int
    height: int
    times: list[float] = field(default_factory=list)
    brightness: list[float] = field(default_factory=list)
    change: list[float] = field(default_factory=list)
    samples: dict[int, np.ndarray] = field(default_factory=dict)  # ordinal -> small RGB frame
    chart: np.ndarray | None = None
    skipped: list[int] = field(default_factory=list)  # image files skipped as unreadable (--skip-bad)
    skipped_paths: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def _small(image: np.ndarray, side: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    s = side / max(h, w)
    if s >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _video_frames(cs, every: int, want_chart: bool):
    """(time, luma [h, w] float32 at 128 px, RGB, size, file) per decoded frame. RGB is None
    except for the first frame when a chart is wanted (CHART_SIDE px) and for sample frames,
    which swscale converts and area-downscales to SAMPLE_SIDE px in one pass: the rest are read
    from the Y plane only, so analysis costs little more than the codec's own decoding."""
    from headcap.capture.video import _upright

    for j, (t, frame, rotation) in enumerate(iter_video(cs.video, raw=True)):
        size = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
        rgb = None
        if j == 0 and want_chart:
            rgb = _small(_upright(frame.to_ndarray(format="rgb24"), rotation), CHART_SIDE)
        elif j % every == 0:
            s = min(1.0, SAMPLE_SIDE / max(frame.width, frame.height))
            small = frame.reformat(width=max(1, round(frame.width * s)), height=max(1, round(frame.height * s)),
                                   format="rgb24", interpolation="AREA")
            rgb = _upright(small.to_ndarray(format="rgb24"), rotation)
        yield t, luma_small(frame, rotation, 128), rgb, size, cs.video


def _image_frames(cs, fps: float, skipped: list, messages: list[str], skip_bad: bool):
    import cv2

    for k, (p, n) in enumerate(zip(cs.images, cs.frame_numbers)):
        try:
            image = read_image(p)
        except ValueError as exc:
            if not skip_bad:
                raise ValueError(f"{exc} (pass --skip-bad to skip this frame)") from None
            messages.append(f"{exc}; frame skipped (--skip-bad)")
            skipped.append((k, str(p)))
            continue
        grey = cv2.cvtColor(_small(image, 128), cv2.COLOR_RGB2GRAY).astype(np.float32)
        yield n / fps, grey, image, (image.shape[1], image.shape[0]), p


def _scan(cs, fps: float, expected: int, want_chart: bool, advance, skip_bad: bool = False) -> CameraScan:
    """Decode every frame once: time, mean brightness, change, sample frames. Unreadable image
    files are skipped with a warning under skip_bad (their indices in `scan.skipped`)."""
    every = max(1, math.ceil(expected / SAMPLES_PER_CAMERA)) if expected else 1
    scan, previous = None, None
    skipped: list[tuple[int, str]] = []
    messages: list[str] = []
    frames = _video_frames(cs, every, want_chart) if cs.video is not None else \
        _image_frames(cs, fps, skipped, messages, skip_bad)
    for j, (t, grey, image, size, where) in enumerate(frames):
        if scan is None:
            scan = CameraScan(cs.camera, *size)
            if want_chart:
                scan.chart = detect_chart(image)
        elif size != (scan.width, scan.height):
            raise ValueError(f"{where}: frame {j} is {size[0]}x{size[1]}, earlier frames of camera "
                             f"{cs.camera!r} are {scan.width}x{scan.height}")
        scan.times.append(float(t))
        scan.brightness.append(float(grey.mean()))
        scan.change.append(float("inf") if previous is None else float(np.abs(grey - previous).mean()))
        previous = grey
        if j % every == 0:
            scan.samples[j] = _small(image, SAMPLE_SIDE)
        advance()
    if scan is None:
        raise ValueError(f"{cs.label}: no frames" + (" (every image unreadable)" if skipped else ""))
    scan.skipped, scan.skipped_paths, scan.messages = [k for k, _ in skipped], [p for _, p in skipped], messages
    return scan


def drop_frames(cs, indices) -> None:
    """Remove image files `indices` (skipped as unreadable) from a camera source, so decoded-frame
    ordinals index the remaining files."""
    gone = set(int(k) for k in indices)
    if not gone or cs.dropped:  # done already (analysis and writing share one source)
        return
    cs.dropped = sorted(gone)
    keep = [k for k in range(len(cs.images)) if k not in gone]
    cs.images = [cs.images[k] for k in keep]
    cs.frame_numbers = [cs.frame_numbers[k] for k in keep]
    if cs.masks:
        cs.masks = [cs.masks[k] for k in keep]


def _rig_camera(rig, cam: str):
    for key in (cam, f"cam_{cam}", cam.removeprefix("cam_")):
        if key in rig.cameras:
            return rig.cameras[key]
    return None


def _plate_frames(cs) -> np.ndarray:
    paths = cs.background
    if len(paths) == 1 and paths[0].suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"):
        frames = [img for _, img in iter_video(paths[0])]
    else:
        frames = [read_image(p) for p in paths]
    step = max(1, len(frames) // 15)
    return np.stack(frames[::step][:15])


def load_plates(source, cameras: list[str], plan: dict, config, sample_side: int | None = None,
                cache: dict | None = None) -> dict:
    """camera -> BackgroundPlate at the output size (or the sample size), for cameras matted by plate.

    cache: camera -> plate at the source size, filled and reused across calls of one ingest
    (analysis and writing both need the plates; reading and reducing them is not free)."""
    by_id = {cs.camera: cs for cs in source.cameras}
    cache = {} if cache is None else cache
    wanted = [c for c in cameras if not (config.masks == "none" or by_id[c].masks or not by_id[c].background)]

    def full(cam):
        if cam in cache:
            return cache[cam]
        cs = by_id[cam]
        frames = _plate_frames(cs)
        src_w, src_h = plan["source_size"][cam]
        if frames.shape[1:3] != (src_h, src_w):
            raise ValueError(f"{cs.background[0]}: background plate is {frames.shape[2]}x{frames.shape[1]} but "
                             f"camera {cam!r} records {src_w}x{src_h}")
        return BackgroundPlate.from_frames(frames, config.matte.noise_floor)

    workers = config.workers or min(len(wanted), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for cam, plate in zip(wanted, list(pool.map(full, wanted))):
            cache[cam] = plate
    plates = {}
    for cam in wanted:
        plate = cache[cam]
        if sample_side is not None:
            h, w = plate.image.shape[:2]
            s = sample_side / max(h, w)
            size = (w, h) if s >= 1 else (max(1, round(w * s)), max(1, round(h * s)))  # as _small rounds
            plates[cam] = plate.resized(*size)
        else:
            plates[cam] = plate.resized(*plan["size"][cam])
    return plates


def _fail_or_warn(config, messages: list[str], text: str) -> None:
    if not config.skip_bad:
        raise ValueError(text + " (pass --skip-bad to drop it and continue)")
    messages.append(text)


def analyse(source, config, hooks, plate_cache: dict | None = None) -> dict:
    from headcap.calib.rig_io import rig_to_dict

    log = hooks.log
    messages: list[str] = []
    infos = {}
    for cs in source.cameras:
        if cs.video is not None:
            try:
                infos[cs.camera] = probe_video(cs.video)
            except ValueError as exc:
                _fail_or_warn(config, messages, str(exc))
    cams = [cs for cs in source.cameras if cs.video is None or cs.camera in infos]
    rates = {c: round(i.fps, 3) for c, i in infos.items()}
    if len(set(rates.values())) > 1 and config.fps is None:
        raise ValueError(f"cameras record at different frame rates {rates}; pass --fps to force one")
    fps = float(config.fps or (next(iter(rates.values())) if rates else 30.0))
    if source.format == "monocular":
        from headcap.capture.adapters import monocular_rig

        info = infos["cam00"]
        source.rig, how = monocular_rig("cam00", info.width, info.height, info.metadata, config.fov)
        source.notes["intrinsics"] = how
    want_chart = config.colour in ("auto", "chart")
    scans: dict[str, CameraScan] = {}
    total = sum(infos[cs.camera].declared_frames if cs.video else len(cs.images) for cs in cams)
    workers = config.workers or min(len(cams), os.cpu_count() or 1)
    with progress_bar(hooks.progress) as progress, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        task = progress.add_task("ingest: analysing", total=total or None)

        def scan_one(cs):
            expected = infos[cs.camera].declared_frames if cs.video else len(cs.images)
            try:
                return _scan(cs, fps, expected, want_chart, lambda: progress.advance(task), config.skip_bad)
            except ValueError as exc:
                return exc

        # Cameras decode in parallel (PyAV and cv2 release the GIL); results are taken in camera
        # order so warnings and the plan do not depend on thread timing.
        for cs, result in zip(cams, pool.map(scan_one, cams)):
            if isinstance(result, ValueError):
                _fail_or_warn(config, messages, str(result))
                continue
            scans[cs.camera] = result
            messages.extend(result.messages)
            drop_frames(cs, result.skipped)
    cams = [cs for cs in cams if cs.camera in scans]
    if not cams:
        raise ValueError("no usable camera left")

    sizes = {cs.camera: parse_resize(config.resize, scans[cs.camera].width, scans[cs.camera].height) for cs in cams}
    if len(set(sizes.values())) > 1:
        counts: dict = {}
        for s in sizes.values():
            counts[s] = counts.get(s, 0) + 1
        major = max(counts, key=counts.get)
        odd = {c: f"{s[0]}x{s[1]}" for c, s in sizes.items() if s != major}
        _fail_or_warn(config, messages, f"cameras have different resolutions: {odd} differ from the "
                      f"{major[0]}x{major[1]} of the others (or pass --resize WxH)")
        cams = [cs for cs in cams if sizes[cs.camera] == major]
    rig_out = None
    if source.rig is not None:
        missing = [cs.camera for cs in cams if _rig_camera(source.rig, cs.camera) is None]
        if missing:
            _fail_or_warn(config, messages, f"cameras {missing} are missing from the calibration "
                          f"(it has {list(source.rig.cameras)})")
            cams = [cs for cs in cams if cs.camera not in missing]
        scaled = []
        for cs in cams:
            cam = _rig_camera(source.rig, cs.camera)
            scan = scans[cs.camera]
            if abs(cam.width / cam.height - scan.width / scan.height) > 0.01:
                raise ValueError(f"camera {cs.camera!r}: calibration is for {cam.width}x{cam.height} images but the "
                                 f"frames are {scan.width}x{scan.height} (a different aspect ratio)")
            scaled.append(scale_camera(cam, *sizes[cs.camera]).replace(id=cs.camera))
        from headcap.calib.camera import Rig

        rig_out = rig_to_dict(Rig.from_list(scaled))
    if not cams:
        raise ValueError("no usable camera left")
    names = [cs.camera for cs in cams]

    sync_report, offsets, slots = _synchronise(cams, scans, infos, fps, config, messages)
    plan = sync_mod.plan_frames(slots, offsets, config.on_missing, config.start, config.end, config.stride)
    sync_report["incomplete_frames_skipped"] = plan.incomplete
    sync_report["filled"] = plan.filled
    skipped = {c: scans[c].skipped for c in (cs.camera for cs in cams) if scans[c].skipped}
    if skipped:
        sync_report["unreadable_frames_skipped"] = {c: scans[c].skipped_paths for c in skipped}
    for m in messages:
        log(f"warning: {m}")
    plan_dict = {"cameras": names, "fps": fps, "globals": plan.globals_, "source": plan.source,
                 "size": {c: list(sizes[c]) for c in names},
                 "source_size": {c: [scans[c].width, scans[c].height] for c in names}, "rig": rig_out,
                 "skipped_files": skipped}
    colour = _colour(source, names, scans, plan_dict, config, messages, plate_cache)
    return {"plan": plan_dict, "sync": sync_report, "colour": colour, "warnings": messages}


def _synchronise(cams, scans, infos, fps, config, messages):
    timelines = {cs.camera: sync_mod.Timeline(cs.camera, np.asarray(scans[cs.camera].times),
                                              np.asarray(scans[cs.camera].brightness),
                                              np.asarray(scans[cs.camera].change)) for cs in cams}
    names = list(timelines)
    ref = names[0]
    if config.sync == "none":
        for tl in timelines.values():
            tl.times = np.arange(tl.times.size) / fps
        counts = {c: int(tl.times.size) for c, tl in timelines.items()}
        if len(set(counts.values())) > 1:
            _fail_or_warn(config, messages, f"cameras have different frame counts {counts} and --sync none "
                          "cannot tell which frames match (keeping the common start)")
    slots = {c: sync_mod.frame_slots(tl, fps) for c, tl in timelines.items()}
    ts_offsets = {c: int(round((timelines[c].times[0] - timelines[ref].times[0]) * fps)) for c in names}
    report = {"fps": fps, "reference": ref, "frames_decoded": {c: int(tl.times.size) for c, tl in timelines.items()},
              "dropped": {c: s.dropped for c, s in slots.items() if s.dropped},
              "duplicated": {c: s.duplicated for c, s in slots.items() if s.duplicated},
              "timestamp_offsets": ts_offsets}
    method, offsets = "timestamps", dict(ts_offsets)
    if config.sync == "none":
        method, offsets = "none", {c: 0 for c in names}
    if config.sync in ("auto", "flash"):
        signals = {c: sync_mod.slot_signal(timelines[c].brightness, slots[c]) for c in names}
        max_lag = int(min(config.max_offset_s * fps, max(s.size for s in signals.values()) - 3))
        found, details = sync_mod.brightness_offsets(signals, ref, max(1, max_lag))
        report["flash"] = details
        if found is not None:
            method, offsets = "flash", dict(found)
        elif config.sync == "flash":
            raise ValueError(f"--sync flash: no clear flash seen by every camera (event strength {details['strength']}, "
                             "a clear flash scores >= 8)")
    if config.sync == "audio" or (config.sync == "auto" and method == "timestamps"):
        audio = _audio_offsets(cams, timelines, fps, config, ref)
        if audio is not None:
            method, offsets, report["audio"] = "audio", audio[0], audio[1]
        elif config.sync == "audio":
            raise ValueError("--sync audio: not every camera has an audio track with a clear shared sound")
    disagree = {c: (offsets[c], ts_offsets[c]) for c in names if offsets[c] != ts_offsets[c]}
    if method in ("flash", "audio") and disagree:
        messages.append(f"container timestamps disagree with the {method} for cameras "
                        f"{ {c: {'event': a, 'timestamps': b} for c, (a, b) in disagree.items()} }; using the {method}")
    report["method"], report["offsets"] = method, offsets
    return report, offsets, slots


def _audio_offsets(cams, timelines, fps, config, ref):
    tracks = {}
    for cs in cams:
        if cs.video is None:
            return None
        track = read_audio(cs.video)
        if track is None:
            return None
        tracks[cs.camera] = track
    offsets, scores = {}, {}
    ref_audio, ref_rate = tracks[ref]
    for cam, (samples, rate) in tracks.items():
        lag, score = sync_mod.audio_lag_seconds(samples, rate, ref_audio, ref_rate, config.max_offset_s)
        t0 = timelines[cam].times[0] - timelines[ref].times[0]
        offsets[cam] = int(round((t0 - lag) * fps))
        scores[cam] = round(score, 4)
    if min(scores.values()) < 0.3:
        return None
    return offsets, {"score": scores}


def _colour(source, names, scans, plan, config, messages, plate_cache=None) -> dict:
    out = {"method": "none", "reference": None, "matrices": {}, "space": "linear sRGB"}
    if config.colour == "none" or len(names) < 2:
        return out
    ref = config.reference or names[0]
    if ref not in names:
        raise ValueError(f"--reference: camera {ref!r} is not among the ingested cameras {names}")
    out["reference"] = ref
    charts = {c: scans[c].chart for c in names}
    if config.colour in ("auto", "chart") and all(v is not None for v in charts.values()):
        mats = {c: fit_affine(charts[c], charts[ref]) for c in names if c != ref}
        out.update(method="chart", matrices={c: m.tolist() for c, m in mats.items()})
        return out
    if config.colour == "chart":
        raise ValueError(f"--colour chart: no colour chart found in the first frame of cameras "
                         f"{[c for c, v in charts.items() if v is None]}")
    by_id = {cs.camera: cs for cs in source.cameras}
    plates = load_plates(source, names, plan, config, sample_side=SAMPLE_SIDE, cache=plate_cache)
    rng = np.random.default_rng(0)
    pixels = {}
    for c in names:
        cs, chunks = by_id[c], []
        level = np.asarray(scans[c].brightness)
        typical = np.median(level)
        spread = max(4.0, 6 * 1.4826 * float(np.median(np.abs(level - typical))))
        for ordinal, small in scans[c].samples.items():
            if abs(level[ordinal] - typical) > spread:
                continue  # a flash or exposure jump: neither the plate nor the cast model holds there
            if cs.masks and cs.masks[ordinal] is not None:
                import cv2

                m = read_image(cs.masks[ordinal], cv2.IMREAD_GRAYSCALE)
                m = cv2.resize(m, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
            elif c in plates:
                m = matte(small, plates[c], config.matte)
            else:
                m = None
            if m is not None:
                import cv2

                # Boundary pixels mix subject and backdrop (and codec ringing): sample the interior.
                m = cv2.erode((np.asarray(m) > 0).astype(np.uint8), np.ones((5, 5), np.uint8))
                chunks.append(linear_samples(small, m, 4000, rng))
        if chunks:
            pixels[c] = np.concatenate(chunks)
    lacking = [c for c in names if c not in pixels or pixels[c].shape[0] < 64]
    if lacking:
        text = f"colour: cameras {lacking} have no subject mask (no background plate or user masks) to match colours on"
        if config.colour == "subject":
            raise ValueError(text)
        messages.append(text + "; colour left uncorrected")
        return out
    mats = {c: fit_transport(pixels[c], pixels[ref]) for c in names if c != ref}
    ref_lab = srgb_to_lab(linear_to_srgb(pixels[ref].mean(0)))
    before = {c: round(float(np.linalg.norm(srgb_to_lab(linear_to_srgb(pixels[c].mean(0))) - ref_lab)), 3)
              for c in mats}
    after = {c: round(float(np.linalg.norm(srgb_to_lab(linear_to_srgb(
        pixels[c].mean(0) @ mats[c][:, :3].T + mats[c][:, 3])) - ref_lab)), 3) for c in mats}
    out.update(method="subject", matrices={c: m.tolist() for c, m in mats.items()},
               mean_colour_delta_e_before=before, mean_colour_delta_e_after=after)
    return out
