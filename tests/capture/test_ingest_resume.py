"""An ingest interrupted after k frames resumes from its checkpoint and ends byte-identical to an
uninterrupted run; nothing is left at --out until the end."""
from __future__ import annotations

import json

import pytest

from headcap.capture.ingest import IngestConfig, IngestHooks, ingest
from headcap.studio.synthetic_recording import SyntheticRecording, write_recording


class Interrupt(KeyboardInterrupt):
    pass


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_resume_equals_uninterrupted(tmp_path):
    rec = SyntheticRecording(width=64, height=48, frames=24, starts=[0, 1, 3], drops={2: [15]})
    write_recording(rec, tmp_path / "src")
    config = IngestConfig(checkpoint_every=4, image_format="png")
    quiet = IngestHooks(log=lambda m: None, progress=False)
    reference = ingest(tmp_path / "src", tmp_path / "full", config, quiet)

    def stop(i):
        if i == 9:
            raise Interrupt()

    logs = []
    with pytest.raises(Interrupt):
        ingest(tmp_path / "src", tmp_path / "resumed", config, IngestHooks(after_frame=stop, log=logs.append,
                                                                            progress=False))
    assert not (tmp_path / "resumed").exists()
    state = json.loads((tmp_path / "resumed.partial" / ".ingest" / "state.json").read_text())
    assert state["done"] == 8
    written = sorted((tmp_path / "resumed.partial" / "images" / "cam00").iterdir())
    assert len(written) == 10

    resumed_frames = []
    session = ingest(tmp_path / "src", tmp_path / "resumed", config,
                     IngestHooks(after_frame=resumed_frames.append, log=logs.append, progress=False))
    assert resumed_frames[0] == 8 and resumed_frames[-1] == reference.frame_count - 1
    assert any("resuming" in m for m in logs)
    assert not (tmp_path / "resumed.partial").exists()
    a, b = _files(tmp_path / "full"), _files(tmp_path / "resumed")
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
    assert session.frame_count == reference.frame_count


def test_changed_options_start_over(tmp_path):
    rec = SyntheticRecording(width=48, height=40, frames=12, starts=[0, 1])
    write_recording(rec, tmp_path / "src")
    quiet = IngestHooks(log=lambda m: None, progress=False)

    def stop(i):
        if i == 2:
            raise Interrupt()

    with pytest.raises(Interrupt):
        ingest(tmp_path / "src", tmp_path / "out", IngestConfig(checkpoint_every=1),
               IngestHooks(after_frame=stop, log=lambda m: None, progress=False))
    logs = []
    session = ingest(tmp_path / "src", tmp_path / "out", IngestConfig(checkpoint_every=1, image_format="jpg"),
                     IngestHooks(log=logs.append, progress=False))
    assert any("starting over" in m for m in logs)
    assert all(p.suffix == ".jpg" for p in (tmp_path / "out" / "images" / "cam00").iterdir())
    assert session.frame_count == len(list((tmp_path / "out" / "images" / "cam00").iterdir()))
