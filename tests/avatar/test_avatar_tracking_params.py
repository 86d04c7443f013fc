"""The avatar stage on an ingested NeRSemble-layout session, which has no ground truth: it trains
from SESSION/tracking/params.npz as the tracking stage writes it (the head model named by its
`head_spec`, here ICT while the session names none), and `--head-params` picks the source
(ground truth only when asked). Tiny: 4 cameras, 64 px, 2 frames, 60 iterations.

The parameter file holds the studio's true parameters written in the tracking stage's format
(running the tracker here would take minutes); benchmarks/bm_nersemble.py trains on a real
tracking run."""
from __future__ import annotations

import numpy as np
import pytest

from headcap.core.fileio import read_json, read_npz

ITERS = ["--iterations", "60", "--holdout-frames", "0", "--checkpoint-every", "1000", "--seed", "1"]


def _write_tracking(session_root, studio_root, head: str, shift_m: float = 0.0) -> None:
    """tracking/params.npz with the keys `headcap track` writes, from the studio's truth."""
    from headcap.studio.writer import write_npz

    gt = read_npz(studio_root / "ground_truth" / "params.npz")
    wfh = np.asarray(gt["world_from_head"], np.float64).copy()
    wfh[:, 0, 3] += shift_m
    write_npz(session_root / "tracking" / "params.npz", identity=gt["identity"], expression=gt["expression"],
              expression_names=gt["expression_names"], joint_rotations=gt["joint_rotations"],
              joint_names=gt["joint_names"], world_from_head=wfh, head_spec=np.array(head, dtype=np.str_))


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, test_data):
    from headcap.capture.ingest import IngestConfig, IngestHooks, ingest
    from headcap.studio.nersemble import write_nersemble
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    root = tmp_path_factory.mktemp("avatar_ns")
    head = f"ict:{test_data / 'ict_facekit' / 'ict_facekit_light_model.npz'}"
    synthesize_session(StudioConfig(cameras=4, frames=2, resolution=64, calib_frames=0, head=head, seed=4,
                                    lens_distortion=False), root / "studio")
    ds = write_nersemble(root / "studio", root / "nersemble")
    ingest(ds.sequence, root / "session", IngestConfig(colour="none"), IngestHooks(log=lambda m: None, progress=False))
    return {"root": root, "head": head, "held": ds.serials["cam02"]}


def test_avatar_trains_from_tracking_params_without_ground_truth(ingested):
    from headcap.cli import main

    root, head, held = ingested["root"], ingested["head"], ingested["held"]
    session = root / "session"
    assert not (session / "ground_truth").exists()
    # nothing to train on yet: the error names what is missing
    assert main(["avatar", "train", str(session), "--out", str(root / "none"), *ITERS]) == 2
    _write_tracking(session, root / "studio", head)
    assert main(["avatar", "train", str(session), "--out", str(root / "a"), "--holdout", held,
                 "--head-params", "ground_truth", *ITERS]) == 2  # asked for a truth the session lacks
    assert main(["avatar", "train", str(session), "--out", str(root / "a"), "--holdout", held, *ITERS]) == 0
    metrics = read_json(root / "a" / "train" / "metrics.json")
    meta = read_json(root / "a" / "train" / "avatar.json")
    assert metrics["head_params"] == str(session / "tracking" / "params.npz")
    assert meta["head_params_source"] == "auto" and "ict" in str(meta).lower()
    good = metrics["novel_view"]["psnr_db"]
    assert metrics["holdout"]["cameras"] == [held]
    assert good >= 24.0, metrics["novel_view"]  # measured 26.6 dB (60 iterations, 64 px)
