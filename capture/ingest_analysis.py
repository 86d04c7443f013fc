"""The analysis half of ingest: one decoding pass per camera, input checks, sync, the frame plan
and the colour matrices. Everything it returns is plain JSON (checkpointed for resume)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from capture import sync as sync_mod
from capture.colour import detect_chart, fit_affine, fit_transport, linear_samples, srgb_to_lab, linear_to_srgb
from capture.masks import BackgroundPlate, matte
from capture.video import iter_video, probe_video, read_audio, read_image

SAMPLE_SIDE = 256
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


def _small(image: np.ndarray, side: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    s = side / max(h, w)
    if s >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _scan(cs, fps: float, expected: int, want_chart: bool, advance) -> CameraScan:
    """Decode every frame once: time, mean brightness, change, sample frames."""
    import cv2

    frames = iter_video(cs.video) if cs.video is not None else \
        ((n / fps, read_image(p)) for p, n in zip(cs.images, cs.frame_numbers))
    every = max(1, math.ceil(expected / SAMPLES_PER_CAMERA)) if expected else 1
    scan, previous = None, None
    for j, (t, image) in enumerate(frames):
        if scan is None:
            scan = CameraScan(cs.camera, image.shape[1], image.shape[0])
            if want_chart:
                found = detect_chart(image)
                scan.chart = None if found is None else found
        elif image.shape[:2] != (scan.height, scan.width):
            where = cs.images[j] if cs.video is None else cs.video
            raise ValueError(f"{where}: frame {j} is {image.shape[1]}x{image.shape[0]}, earlier frames of camera "
                             f"{cs.camera!r} are {scan.width}x{scan.height}")
        grey = cv2.cvtColor(_small(image, 128), cv2.COLOR_RGB2GRAY).astype(np.float32)
        scan.times.append(float(t))
        scan.brightness.append(float(grey.mean()))
        scan.change.append(float("inf") if previous is None else float(np.abs(grey - previous).mean()))
        previous = grey
        if j % every == 0:
            scan.samples[j] = _small(image, SAMPLE_SIDE)
        advance()
    if scan is None:
        raise ValueError(f"{cs.label}: no frames")
    return scan


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


def load_plates(source, cameras: list[str], plan: dict, config, sample_side: int | None = None) -> dict:
    """camera -> BackgroundPlate at the output size (or the sample size), for cameras matted by plate."""
    plates = {}
    by_id = {cs.camera: cs for cs in source.cameras}
    for cam in cameras:
        cs = by_id[cam]
        if config.masks == "none" or cs.masks or not cs.background:
            continue
        frames = _plate_frames(cs)
        src_w, src_h = plan["source_size"][cam]
        if frames.shape[1:3] != (src_h, src_w):
            raise ValueError(f"{cs.background[0]}: background plate is {frames.shape[2]}x{frames.shape[1]} but camera "
                             f"{cam!r} records {src_w}x{src_h}")
        plate = BackgroundPlate.from_frames(frames, config.matte.noise_floor)
        if sample_side is not None:
            small = _small(frames[0], sample_side)
            plates[cam] = plate.resized(small.shape[1], small.shape[0])
        else:
            plates[cam] = plate.resized(*plan["size"][cam])
    return plates


def _fail_or_warn(config, messages: list[str], text: str) -> None:
    if not config.skip_bad:
        raise ValueError(text + " (pass --skip-bad to drop it and continue)")
    messages.append(text)


def analyse(source, config, hooks) -> dict:
    from calib.rig_io import rig_to_dict
    from capture.ingest import parse_resize, scale_camera

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
        from capture.adapters import monocular_rig

        info = infos["cam00"]
        source.rig, how = monocular_rig("cam00", info.width, info.height, info.metadata, config.fov)
        source.notes["intrinsics"] = how
    want_chart = config.colour in ("auto", "chart")
    scans: dict[str, CameraScan] = {}
    total = sum(infos[cs.camera].declared_frames if cs.video else len(cs.images) for cs in cams)
    with progress_bar(hooks.progress) as progress:
        task = progress.add_task("ingest: analysing", total=total or None)
        for cs in cams:
            expected = infos[cs.camera].declared_frames if cs.video else len(cs.images)
            try:
                scans[cs.camera] = _scan(cs, fps, expected, want_chart, lambda: progress.advance(task))
            except ValueError as exc:
                _fail_or_warn(config, messages, str(exc))
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
        from calib.camera import Rig

        rig_out = rig_to_dict(Rig.from_list(scaled))
    if not cams:
        raise ValueError("no usable camera left")
    names = [cs.camera for cs in cams]

    sync_report, offsets, slots = _synchronise(cams, scans, infos, fps, config, messages)
    plan = sync_mod.plan_frames(slots, offsets, config.on_missing, config.start, config.end, config.stride)
    sync_report["incomplete_frames_skipped"] = plan.incomplete
    sync_report["filled"] = plan.filled
    for m in messages:
        log(f"warning: {m}")
    plan_dict = {"cameras": names, "fps": fps, "globals": plan.globals_, "source": plan.source,
                 "size": {c: list(sizes[c]) for c in names},
                 "source_size": {c: [scans[c].width, scans[c].height] for c in names}, "rig": rig_out}
    colour = _colour(source, names, scans, plan_dict, config, messages)
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


def _colour(source, names, scans, plan, config, messages) -> dict:
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
    plates = load_plates(source, names, plan, config, sample_side=SAMPLE_SIDE)
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
