"""End to end: synthetic per-camera mp4 files with known offsets, drops and colour casts -> ingest
-> offsets exact, drops reported, masks IoU >= 0.97, colour delta-E cut by >= 80%."""
from __future__ import annotations

import numpy as np
import pytest

from headcap.capture.colour import delta_e
from headcap.capture.ingest import IngestConfig, IngestHooks, ingest
from headcap.capture.masks import mask_iou
from headcap.capture.session import read_session
from headcap.capture.video import read_image
from headcap.studio.synthetic_recording import SyntheticRecording, cast_image, render, write_recording

QUIET = IngestHooks(log=lambda m: None, progress=False)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest")
    rec = SyntheticRecording(frames=30, starts=[0, 2, 5, 3], drops={1: [14], 2: [20, 21], 3: [9]})
    truth = write_recording(rec, root / "src")
    session = ingest(root / "src", root / "session", IngestConfig(), QUIET)
    return rec, truth, root, session


def _true_frame(rec, session, i):
    return rec.starts[0] + session.extra["ingest"]["frame_map"]["global"][i]


def test_offsets_exact_and_drops_reported(recording):
    rec, truth, _, session = recording
    sync = session.extra["ingest"]["sync"]
    assert sync["method"] == "flash"
    assert sync["offsets"] == truth["offsets"]
    assert {c: d for c, d in truth["drops"].items() if d} == sync["dropped"]
    assert sync["duplicated"] == {}
    # every output frame shows the same true instant in every camera (checked on the clean render)
    reread = read_session(session.root, check_files=True)
    for i in range(0, reread.frame_count, 5):
        t = _true_frame(rec, reread, i)
        for c, cam in enumerate(reread.cameras):
            got = read_image(reread.mask_path(i, cam)) > 0
            assert mask_iou(got[..., 0], render(rec, c, t)[1]) > 0.9, (i, cam)


def test_masks_iou(recording):
    rec, _, _, session = recording
    ious = []
    for i in range(session.frame_count):
        t = _true_frame(rec, session, i)
        if rec.flash_frame <= t < rec.flash_frame + rec.flash_length:
            continue  # a flash changes the whole view: no plate can matte those two frames
        for c, cam in enumerate(session.cameras):
            got = read_image(session.mask_path(i, cam))[..., 0] > 0
            ious.append(mask_iou(got, render(rec, c, t)[1]))
    print(f"mask IoU mean {np.mean(ious):.4f} min {min(ious):.4f} over {len(ious)}")
    assert len(ious) >= 60
    assert float(np.mean(ious)) >= 0.97, np.mean(ious)
    assert min(ious) >= 0.93


def test_colour_error_cut(recording):
    rec, _, _, session = recording
    assert session.extra["ingest"]["colour"]["method"] == "subject"
    before, after = [], []
    for i in range(0, session.frame_count, 2):
        t = _true_frame(rec, session, i)
        if rec.flash_frame <= t < rec.flash_frame + rec.flash_length:
            continue  # the flash clips highlights: no 3x4 matrix can undo a clipped cast
        for c, cam in enumerate(session.cameras[1:], start=1):
            clean = render(rec, c, t)[0]  # what the reference camera's response would record
            before.append(delta_e(cast_image(rec, c, clean), clean))
            after.append(delta_e(read_image(session.image_path(i, cam)), clean))
    cut = 1 - np.mean(after) / np.mean(before)
    assert np.mean(before) > 5
    print(f"colour delta-E {np.mean(before):.2f} -> {np.mean(after):.2f} (cut {cut:.1%})")
    assert cut >= 0.8, (np.mean(before), np.mean(after))
