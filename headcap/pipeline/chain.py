"""`headcap run SESSION`: every stage of the chain on one session, through the stage runner.

Each step is a runner stage whose folder sits inside the session (SESSION/<step>/), cached on its
inputs, settings and code, resumable after a crash; a step that does not apply to the session
(no calibration frames, one camera, no face models, nothing upstream to read) is skipped with the
reason recorded. Steps run in order under one lock on the session, each built when its turn
comes, so it reads (and its cache key hashes) what the steps before it wrote in this run. After
calibration_report (when the session films a board), the calibrated rig becomes the session's
rig: session.json `rig` points at calibration_report/rig.json and the studio's earlier rig is
kept as `extra.rig_prior`, the seed and world frame of every later calibration.

SESSION/run.json records the resolved configuration of every step, software versions, the
executor, what ran, what was reused and what was skipped (and why), with timings;
SESSION/report.html is the session's report (headcap.run_report).
"""
from __future__ import annotations

import dataclasses
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from headcap.core.fileio import read_json, write_json
from headcap.pipeline.runner import Pipeline, Stage, StageResult

RUN_RECORD = "run.json"
#: the calibration step's folder: the name `headcap calibrate SESSION` gives its report folder
#: (SESSION/calibration/ holds a session's board images)
CALIBRATION = "calibration_report"


# --------------------------------------------------------------------------------------------
# the steps
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One step of the chain. make(session_path, config) -> Stage, or raises Skip(reason)."""

    name: str
    config_type: type
    make: Callable[[Path, object], Stage]
    description: str = ""


class Skip(Exception):
    """A step that does not apply to this session (the reason is recorded and reported)."""


def _session(path: Path):
    from headcap.capture.session import read_session

    return read_session(path)


def _make_check(path: Path, config) -> Stage:
    from headcap.pipeline.stages.check import check_stage

    return check_stage(config, path)


def _calibration_config(path: Path, config):
    """The run's calibration settings: the studio's earlier rig (if any) seeds the solver and fixes
    the world frame, so every later stage keeps the studio's coordinates."""
    session = _session(path)
    prior = session.extra.get("rig_prior") or session.rig
    if not session.calibration:
        raise Skip("the session films no calibration board (session.json has no 'calibration' images)")
    if config.seed_rig is None and prior:
        prior_path = session.path(prior, "extra.rig_prior")
        if prior_path.is_file():
            solver = config.solver if config.solver.world != "first-camera" else \
                dataclasses.replace(config.solver, world="seed")
            config = dataclasses.replace(config, seed_rig=str(prior_path), solver=solver)
    return config


def _make_calibration(path: Path, config) -> Stage:
    from headcap.pipeline.stages.calibrate import calibration_stage

    return calibration_stage(_calibration_config(path, config), source=path, name=CALIBRATION,
                             title=f"headcap calibration of {path}")


def _make_landmarks(path: Path, config) -> Stage:
    from headcap.pipeline.stages.landmarks import landmarks_stage

    try:
        return landmarks_stage(config, source=path)
    except FileNotFoundError as exc:
        raise Skip(f"face models not found ({exc}); get them with `headcap models fetch`") from None


def _needs_rig(path: Path, what: str, min_cameras: int = 1):
    session = _session(path)
    if session.rig_path() is None or not session.rig_path().is_file():
        raise Skip(f"the session has no rig (no calibration frames and no rig.json): {what} needs calibrated cameras")
    if len(session.cameras) < min_cameras:
        raise Skip(f"{what} needs at least {min_cameras} cameras; the session has {len(session.cameras)}")
    return session


def _make_geometry(path: Path, config) -> Stage:
    from headcap.pipeline.stages.reconstruct import reconstruct_stage

    _needs_rig(path, "multi-view stereo", min_cameras=2)
    return reconstruct_stage(config, source=path, name="geometry")


def _make_registration(path: Path, config) -> Stage:
    from headcap.pipeline.stages.register import check_inputs, register_stage

    _needs_rig(path, "registration", min_cameras=2)
    try:
        check_inputs(path)
    except ValueError as exc:
        raise Skip(str(exc)) from None
    return register_stage(config, path.parent, name="registration")


def _make_tracking(path: Path, config) -> Stage:
    from headcap.pipeline.stages.track import track_stage

    session = _needs_rig(path, "tracking")
    if len(session.cameras) == 1 and not config.monocular:
        config = dataclasses.replace(config, monocular=True)  # one camera: the monocular tracker
    return track_stage(config, path.parent, name="tracking")


def _make_stabilize(path: Path, config) -> Stage:
    from headcap.pipeline.stages.stabilize import find_source, stabilize_stage

    try:
        find_source(path.parent, config.source)
    except ValueError as exc:
        raise Skip(str(exc)) from None
    return stabilize_stage(config, path.parent, name="stabilize")


def _make_avatar(path: Path, config) -> Stage:
    from headcap.avatar.avatar_data import head_params_path
    from headcap.pipeline.stages.avatar import avatar_train_stage

    session = _needs_rig(path, "the avatar")
    try:
        head_params_path(session, config.head_params)
    except ValueError as exc:
        raise Skip(str(exc)) from None
    return avatar_train_stage(config, path.parent, name="avatar")


def _make_avatar_eval(path: Path, config) -> Stage:
    from headcap.pipeline.stages.avatar import avatar_eval_stage

    folder = path.parent / "avatar"
    if not (folder / "gaussians.ply").is_file():
        raise Skip("no trained avatar (avatar/gaussians.ply)")
    return avatar_eval_stage(config, folder, path.parent, name="avatar_eval")


def _make_export(path: Path, config) -> Stage:
    from headcap.pipeline.stages.export import export_stage

    try:
        return export_stage(config, path.parent, name="export")
    except ValueError as exc:
        if "no head sequence" in str(exc):
            raise Skip(str(exc)) from None
        raise


def _type(module: str, name: str):
    def get():
        import importlib

        return getattr(importlib.import_module(module), name)

    return get


#: (name, config type factory, make, description), in running order.
_STEP_TABLE: list[tuple[str, Callable[[], type], Callable[[Path, object], Stage], str]] = [
    ("check", _type("headcap.pipeline.stages.check", "CheckConfig"), _make_check,
     "the session's files, images against the rig, masks"),
    (CALIBRATION, _type("headcap.pipeline.stages.calibrate", "CalibrateStageConfig"), _make_calibration,
     "the rig from the board frames"),
    ("landmarks", _type("headcap.pipeline.stages.landmarks", "LandmarksStageConfig"), _make_landmarks,
     "face landmarks in every view, triangulated"),
    ("geometry", _type("headcap.pipeline.stages.reconstruct", "ReconstructStageConfig"), _make_geometry,
     "multi-view stereo, fused points and a surface per frame"),
    ("registration", _type("headcap.pipeline.stages.register", "RegisterStageConfig"), _make_registration,
     "the template fitted to each frame's geometry: model fit, then free-form offsets"),
    ("tracking", _type("headcap.pipeline.stages.track", "TrackStageConfig"), _make_tracking,
     "head-model tracking: identity, expression, joints, head pose per frame"),
    ("stabilize", _type("headcap.pipeline.stages.stabilize", "StabilizeStageConfig"), _make_stabilize,
     "the skull's pose per frame, stabilized meshes"),
    ("avatar", _type("headcap.avatar.train", "TrainConfig"), _make_avatar,
     "a Gaussian avatar bound to the head model, trained on the CPU kernel"),
    ("avatar_eval", _type("headcap.pipeline.stages.avatar", "AvatarEvalConfig"), _make_avatar_eval,
     "novel views, self-reenactment and a turntable of the avatar"),
    ("export", _type("headcap.pipeline.stages.export", "ExportStageConfig"), _make_export,
     "glTF head with ARKit morphs and animation; avatar splats (.ply, KHR_gaussian_splatting)"),
]


def steps() -> list[Step]:
    return [Step(name, config_type(), make, description) for name, config_type, make, description in _STEP_TABLE]


def step_names() -> list[str]:
    return [row[0] for row in _STEP_TABLE]


# --------------------------------------------------------------------------------------------
# configuration files
# --------------------------------------------------------------------------------------------
def _field_types(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


def config_from_mapping(cls: type, data, where: str):
    """A config dataclass from a mapping (a section of a config file): unknown keys and wrong
    types are errors naming the file and the field; nested dataclasses are nested tables."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a table of settings, got {type(data).__name__}")
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; known: {sorted(names)}")
    values = {}
    for key, value in data.items():
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            values[key] = config_from_mapping(tp, value, f"{where}.{key}")
            continue
        values[key] = _coerce(value, tp, f"{where}.{key}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _coerce(value, tp, where: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where) if len(inner) == 1 else value
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return tuple(value) if origin is tuple else list(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def read_config_file(path: Path | None) -> dict:
    """The run configuration: {step name: config object} for every step (defaults where the
    file is silent) plus "executor". TOML (.toml) or JSON."""
    from headcap.pipeline.executor import ExecutorConfig

    data: dict = {}
    if path is not None:
        path = Path(path)
        if path.suffix.lower() == ".toml":
            import tomllib

            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{path}: not valid TOML ({exc})") from None
            except UnicodeDecodeError:
                raise ValueError(f"{path}: not UTF-8 text") from None
        else:
            data = read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a table of steps at the top level")
    known = {s.name: s for s in steps()}
    unknown = sorted(set(data) - set(known) - {"executor", "skip"})
    if unknown:
        raise ValueError(f"{path}: unknown step(s) {unknown}; steps: {sorted(known)} (and 'executor', 'skip')")
    config = {name: config_from_mapping(step.config_type, data.get(name, {}), f"{path}: [{name}]")
              for name, step in known.items()}
    config["executor"] = config_from_mapping(ExecutorConfig, data.get("executor", {}), f"{path}: [executor]")
    config["skip"] = check_skip(data.get("skip", []), f"{path}: skip")
    return config


def check_skip(names, where: str) -> tuple[str, ...]:
    """Steps the configuration leaves out (`skip = ["geometry", ...]`)."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{where}: expected a list of step names, got {names!r}")
    unknown = sorted(set(names) - set(step_names()))
    if unknown:
        raise ValueError(f"{where}: unknown step(s) {unknown}; steps: {step_names()}")
    return tuple(names)


def resolved(config: dict) -> dict:
    """The configuration as plain JSON (run.json)."""
    from headcap.pipeline.fingerprint import canonical

    return {name: canonical(value) for name, value in config.items()}


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    session: Path
    results: dict[str, StageResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    stale: list[str] = field(default_factory=list)
    seconds: float = 0.0
    report: Path | None = None


def _select(names: list[str], from_step: str | None, only: tuple[str, ...]) -> tuple[set[str] | None, set[str]]:
    """(stages allowed to run or None for all, stages forced to rerun)."""
    for given in ([from_step] if from_step else []) + list(only):
        if given not in names:
            raise ValueError(f"run: unknown step {given!r}; steps: {names}")
    if from_step:
        chosen = set(names[names.index(from_step):]) | set(only)
        return chosen, chosen
    if only:
        return set(only), set(only)
    return None, set()


def apply_calibration(session_path: Path, folder: Path, console) -> bool:
    """Make the calibrated rig the session's rig (keeping the studio's earlier rig as
    extra.rig_prior). Returns True when session.json changed."""
    from headcap.capture.session import read_session

    session = read_session(session_path)
    rel = (folder / "rig.json").resolve().relative_to(Path(session.root).resolve()).as_posix()
    if session.rig == rel:
        return False
    if session.rig and "rig_prior" not in session.extra:
        session.extra["rig_prior"] = session.rig
    session.rig = rel
    session.save()
    console.print(f"  the session's rig is now {rel} (the studio's earlier rig: {session.extra.get('rig_prior')})")
    return True


def run_session(session_path: Path, config: dict, from_step: str | None = None, only: tuple[str, ...] = (),
                executor=None, console=None, report: bool = True) -> RunResult:
    """Run the chain on one session (see the module docstring)."""
    from rich.console import Console

    from headcap.capture.session import read_session
    from headcap.pipeline.fingerprint import headcap_version, software_versions

    console = console or Console(stderr=True)
    tic = time.perf_counter()
    session = read_session(Path(session_path).resolve())  # stages get absolute paths, whatever the cwd
    root = Path(session.root)
    manifest = session.manifest_path
    all_steps = steps()
    names = [s.name for s in all_steps]
    allowed, force = _select(names, from_step, only)
    out = RunResult(root)
    skip = set(config.get("skip", ()))
    pipeline = Pipeline(root, [], console=console, title=f"headcap run {session.name}", executor=executor)
    with pipeline.hold():
        n = len(all_steps)
        for i, step in enumerate(all_steps, 1):
            if step.name in skip:
                out.skipped[step.name] = "skipped by the configuration ('skip')"
                continue
            # built when its turn comes: a step may read what the steps before it wrote
            try:
                stage = step.make(manifest, config[step.name])
            except Skip as why:
                out.skipped[step.name] = str(why)
                continue
            pipeline.set_stages([stage])
            if allowed is not None and step.name not in allowed:
                record = pipeline.record(step.name)
                if record is not None:
                    if not pipeline.is_current(stage, pipeline.keys()[step.name]):
                        console.print(f"[yellow]{step.name} is out of date (not selected): its outputs are "
                                      "used as they are[/]")
                        out.stale.append(step.name)
                    out.results[step.name] = StageResult(step.name, record.get("key", ""), "cached", 0.0,
                                                         root / step.name, record)
                continue
            console.print(f"[bold]step {i}/{n}[/]")
            out.results.update(pipeline.run(force=(step.name,) if step.name in force else ()))
            if step.name == CALIBRATION:
                apply_calibration(manifest, out.results[CALIBRATION].folder, console)
        for name, why in out.skipped.items():
            console.print(f"[yellow]skipped {name}[/]: {why}")
        out.seconds = time.perf_counter() - tic
        record = {
            "session": str(root),
            "headcap": headcap_version(),
            "software": software_versions(),
            "executor": executor.describe() if executor is not None else {"kind": "serial"},
            "config": resolved(config),
            "from": from_step, "only": list(only),
            "steps": [{"name": n, **({"status": out.results[n].status, "seconds": round(out.results[n].seconds, 3),
                                      "key": out.results[n].key} if n in out.results else
                                     {"status": "skipped", "reason": out.skipped.get(n, "not selected")}),
                       **({"stale": True} if n in out.stale else {})}
                      for n in names],
            "seconds": round(out.seconds, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(root / RUN_RECORD, record)
        if report:
            from headcap.run_report import write_session_report

            out.report = write_session_report(root, record)
    return out


def describe_steps() -> str:
    return "\n".join(f"  {row[0]:<20} {row[3]}" for row in _STEP_TABLE)


__all__ = ["RUN_RECORD", "RunResult", "Skip", "Step", "apply_calibration", "config_from_mapping",
           "check_skip", "describe_steps", "read_config_file", "resolved", "run_session", "step_names", "steps"]
