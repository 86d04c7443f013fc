"""Audio sync end to end: three cameras whose files all start their clocks at 0 and show no
flash, each with an AAC track that hears one clap -> ingest finds the true start offsets."""
from __future__ import annotations

from headcap.capture.ingest import IngestConfig, IngestHooks, ingest
from headcap.capture.video import probe_video
from headcap.studio.synthetic_recording import SyntheticRecording, write_recording


def test_clap_sync_exact(tmp_path):
    rec = SyntheticRecording(width=48, height=40, frames=20, starts=[0, 3, 7], flash_frame=10 ** 6)
    truth = write_recording(rec, tmp_path / "src", clap_s=12 / rec.fps, plates=False)
    assert probe_video(tmp_path / "src" / "cam01.mp4").has_audio
    logs = []
    session = ingest(tmp_path / "src", tmp_path / "out", IngestConfig(colour="none"),
                     IngestHooks(log=logs.append, progress=False))
    sync = session.extra["ingest"]["sync"]
    assert sync["method"] == "audio", sync
    assert sync["offsets"] == truth["offsets"] == {"cam00": 0, "cam01": 3, "cam02": 7}
    assert min(sync["audio"]["score"].values()) >= 0.3
    # timestamps alone (every file starts at 0) would have said 0 for everyone: warned about
    assert any("disagree with the audio" in m for m in logs)
    assert session.frame_count == rec.frames - 7
