"""A NeRSemble-layout dataset end to end: synth -> NeRSemble v1 layout -> ingest -> track (ICT
head, no ground truth) -> Gaussian avatar trained on that tracking with held-out cameras.

    python benchmarks/bm_nersemble.py [--cameras 8] [--resolution 128] [--frames 5] [--first N]
        [--per-frame N] [--global N] [--holdout 3] [--holdout-frames 1] [--avatar-iterations 1500]
        [--distortion] [--work /tmp/bm_nersemble] [--json out.json] [--skip-avatar] [--baseline-gt]
        [--chain] [--fps 25]

Every step runs through the user-facing commands (`headcap ingest` functions, `headcap track`,
`headcap avatar train`); only the scoring of the tracking reads the studio's ground truth
(headcap.studio.nersemble.score_tracking). Prints one JSON line per step and a summary; no
assertions on time. --baseline-gt also trains the same avatar (same cameras, frames, iterations,
seed) on the studio session's ground-truth parameters: what the tracking error costs. --chain
runs the multi-view chain before tracking, as `headcap run` orders it: `headcap reconstruct`
(multi-view stereo) and `headcap register --head ict:...` on the ingested dataset, so the
tracker gets the registration's meshes (no ground truth anywhere before the scoring; the
registration is scored too). With --distortion the studio cameras are distorted and the writer
undistorts the images (as NeRSemble ships them); without it the dataset holds the studio's
pixels unchanged.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

ICT = "/work/shared/data/ict_facekit/ict_facekit_light_model.npz"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", type=int, default=8)
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--first", type=int, default=None, help="default: the track stage's")
    p.add_argument("--per-frame", type=int, default=None, help="default: the track stage's")
    p.add_argument("--global", dest="global_", type=int, default=None, help="default: the track stage's")
    p.add_argument("--holdout", type=int, default=3, help="cameras held out of avatar training")
    p.add_argument("--holdout-frames", type=int, default=1)
    p.add_argument("--avatar-iterations", type=int, default=1500)
    p.add_argument("--distortion", action="store_true")
    p.add_argument("--ict", default=ICT)
    p.add_argument("--work", type=Path, default=Path("/tmp/bm_nersemble"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--skip-avatar", action="store_true")
    p.add_argument("--baseline-gt", action="store_true", help="also train on the studio's ground-truth parameters")
    p.add_argument("--chain", action="store_true", help="reconstruct and register before tracking")
    p.add_argument("--fps", type=float, default=None, help="the studio's frame rate (default: the studio's)")
    args = p.parse_args()

    from headcap.capture.ingest import IngestConfig, IngestHooks, ingest
    from headcap.cli import main as cli
    from headcap.core.fileio import read_json
    from headcap.studio.nersemble import score_tracking, write_nersemble
    from headcap.studio.synthesize import StudioConfig, synthesize_session

    head = f"ict:{args.ict}"
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    report: dict = {"cameras": args.cameras, "resolution": args.resolution, "frames": args.frames,
                    "distortion": args.distortion, "head": head}

    def step(name: str, **values) -> None:
        report[name] = values
        print(json.dumps({name: values}), flush=True)

    tic = time.perf_counter()
    studio_kw = {} if args.fps is None else {"fps": args.fps}
    synthesize_session(StudioConfig(cameras=args.cameras, frames=args.frames, resolution=args.resolution,
                                    calib_frames=0, head=head, seed=args.seed, lens_distortion=args.distortion,
                                    **studio_kw),
                       work / "studio")
    step("synth", seconds=round(time.perf_counter() - tic, 1))

    tic = time.perf_counter()
    dataset = write_nersemble(work / "studio", work / "nersemble")
    step("write_nersemble", seconds=round(time.perf_counter() - tic, 1), sequence=str(dataset.sequence))

    tic = time.perf_counter()
    session = ingest(dataset.participant, work / "session", IngestConfig(sequence=dataset.sequence.name, colour="none"),
                     IngestHooks(log=lambda m: None, progress=False))
    step("ingest", seconds=round(time.perf_counter() - tic, 1), cameras=session.cameras, frames=session.frame_count)

    if args.chain:
        import os

        import numpy as np

        from headcap.core.fileio import read_npz

        cpu0 = os.times()
        tic = time.perf_counter()
        if cli(["reconstruct", str(work / "session")]) != 0:
            raise SystemExit("headcap reconstruct failed")
        cpu1 = os.times()
        step("reconstruct", seconds=round(time.perf_counter() - tic, 1),
             cpu_seconds=round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 1))
        tic = time.perf_counter()
        if cli(["register", str(work / "session"), "--head", head]) != 0:
            raise SystemExit("headcap register failed")
        cpu2 = os.times()
        truth = np.asarray(read_npz(work / "studio" / "ground_truth" / "vertices.npz")["vertices"], np.float64)
        reg = np.asarray(read_npz(work / "session" / "registration" / "meshes.npz")["vertices"], np.float64)
        err = np.linalg.norm(reg - truth[: len(reg)], axis=2)
        step("register", seconds=round(time.perf_counter() - tic, 1),
             cpu_seconds=round(cpu2.user + cpu2.system - cpu1.user - cpu1.system, 1),
             vertex_error_mm_median=round(float(1000 * np.median(err)), 3),
             vertex_error_mm_p90=round(float(1000 * np.percentile(err, 90)), 3))

    steps = [flag for flag, value in (("--first-frame-iterations", args.first), ("--frame-iterations", args.per_frame),
                                      ("--global-iterations", args.global_)) if value is not None
             for flag in (flag, str(value))]
    tic = time.perf_counter()
    rc = cli(["track", str(work / "session"), "--head", head, *steps, "--no-overlay"])
    seconds = time.perf_counter() - tic
    if rc != 0:
        raise SystemExit(f"headcap track failed ({rc})")
    scores = score_tracking(work / "session" / "tracking", work / "studio",
                            {s: c for c, s in dataset.serials.items()})
    step("track", seconds=round(seconds, 1), frames_per_second=round(args.frames / seconds, 4),
         iterations=steps or "stage defaults", **{k: round(v, 3) for k, v in scores.items()})

    if not args.skip_avatar:
        # held-out cameras spread over the rig (the middle of each third), by serial
        serials = session.cameras
        held = [serials[(2 * i + 1) * len(serials) // (2 * args.holdout)] for i in range(args.holdout)]
        tic = time.perf_counter()
        rc = cli(["avatar", "train", str(work / "session"), "--out", str(work / "avatar"), "--holdout", ",".join(held),
                  "--holdout-frames", str(args.holdout_frames), "--iterations", str(args.avatar_iterations),
                  "--checkpoint-every", "250"])
        if rc != 0:
            raise SystemExit(f"headcap avatar train failed ({rc})")
        metrics = read_json(work / "avatar" / "train" / "metrics.json")
        novel, reenact = metrics["novel_view"], metrics["self_reenactment"]
        step("avatar", seconds=round(time.perf_counter() - tic, 1), held_out_cameras=held,
             head_params=metrics["head_params"], iterations=metrics["iterations"], gaussians=metrics["gaussians"],
             novel_view_psnr_db=novel.get("psnr_db"), novel_view_ssim=novel.get("ssim"),
             self_reenactment_psnr_db=reenact.get("psnr_db"), self_reenactment_ssim=reenact.get("ssim"),
             novel_view=novel, self_reenactment=reenact)
        if args.baseline_gt:
            camera_of = {s: c for c, s in dataset.serials.items()}
            tic = time.perf_counter()
            rc = cli(["avatar", "train", str(work / "studio"), "--out", str(work / "avatar_gt"), "--holdout",
                      ",".join(camera_of[s] for s in held), "--head-params", "ground_truth", "--holdout-frames",
                      str(args.holdout_frames), "--iterations", str(args.avatar_iterations), "--checkpoint-every", "250"])
            if rc != 0:
                raise SystemExit(f"headcap avatar train (ground truth) failed ({rc})")
            metrics = read_json(work / "avatar_gt" / "train" / "metrics.json")
            novel, reenact = metrics["novel_view"], metrics["self_reenactment"]
            step("avatar_ground_truth", seconds=round(time.perf_counter() - tic, 1), head_params=metrics["head_params"],
                 gaussians=metrics["gaussians"], novel_view_psnr_db=novel.get("psnr_db"),
                 novel_view_ssim=novel.get("ssim"), self_reenactment_psnr_db=reenact.get("psnr_db"),
                 self_reenactment_ssim=reenact.get("ssim"))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
