"""`xmkd synth`: render a synthetic dataset and write it in a real format.

A dataset is a list of scenes (each a fresh procedural street from (seed, scene index)); scenes are
rendered independently, in worker processes when `workers > 1`, and written as they finish; the dataset
indexes are written last, atomically. Output is byte-identical for the same options. A folder that holds
anything other than a dataset written with the same options is refused, never overwritten.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from xmkd import __version__
from xmkd.data.synthetic.generate import generate_keyframes
from xmkd.data.synthetic.world import Domain, parse_domain
from xmkd.errors import XmkdError
from xmkd.io import atomic_write_text

FORMATS = ("nuscenes", "semantickitti", "kitti")
MARKER = "xmkd_synth.json"
# Keyframe spacing and default scene length per format: nuScenes keyframes at 2 Hz with 20 Hz sweeps between
# them, SemanticKITTI scans at 10 Hz, KITTI object frames far enough apart to differ.
KEYFRAME_INTERVAL = {"nuscenes": 0.5, "semantickitti": 0.1, "kitti": 0.5}
FRAMES_PER_SCENE = {"nuscenes": 5, "semantickitti": 20, "kitti": 4}


@dataclass
class SynthOptions:
    out: str
    preset: str = "day"
    format: str = "nuscenes"
    frames: int = 10
    seed: int = 0
    frames_per_scene: int = 0  # 0 = the format's default
    image_size: tuple[int, int] | None = None  # (W, H); None = the rig's default
    cameras: tuple[str, ...] | None = None  # None = every camera of the rig
    sweeps: bool = True  # nuScenes: LiDAR sweeps between keyframes
    unlabelled: int = 0  # kitti: extra frames without labels, in KITTI raw layout
    val_fraction: float = 0.2
    workers: int = 1

    def validate(self) -> Domain:
        if self.format not in FORMATS:
            raise XmkdError(f"unknown format {self.format!r}; choose from {', '.join(FORMATS)}")
        if self.frames < 1:
            raise XmkdError(f"--frames must be at least 1, got {self.frames}")
        if self.unlabelled and self.format != "kitti":
            raise XmkdError("--unlabelled frames are written in the kitti format only")
        return parse_domain(self.preset)


@dataclass
class _Job:
    root: str
    fmt: str
    seed: int
    domain: Domain
    scene_index: int
    num_frames: int
    name: str  # nuScenes scene name, SemanticKITTI sequence, or the first KITTI frame number
    labelled: bool
    options: SynthOptions


def _keyframes(job: _Job):
    o = job.options
    return generate_keyframes(job.seed, job.scene_index, job.domain, job.num_frames, KEYFRAME_INTERVAL[job.fmt],
                              with_sweeps=job.fmt == "nuscenes" and o.sweeps, image_size=o.image_size,
                              cameras=o.cameras if job.fmt == "nuscenes" else ("CAM_FRONT",))


def _run(job: _Job) -> Any:
    root = Path(job.root)
    if job.fmt == "nuscenes":
        from xmkd.data.synthetic.writers import nuscenes

        return nuscenes.write_scene(root, job.seed, job.name, _keyframes(job))
    if job.fmt == "semantickitti":
        from xmkd.data.synthetic.writers import semantickitti

        return semantickitti.write_sequence(root, job.name, _keyframes(job))
    from xmkd.data.synthetic.writers import kitti

    first = int(job.name)
    if job.labelled:
        ids = []
        for i, kf in enumerate(_keyframes(job)):
            ids.append(f"{first + i:06d}")
            kitti.write_object_frame(root, ids[-1], kf)
        return ids
    lines, times, last = [], [], None
    for i, kf in enumerate(_keyframes(job)):
        lines.append(kitti.write_raw_frame(root, first, i, kf))
        times.append(kf.timestamp)
        last = kf
    if last is not None:
        kitti.finish_raw(root, last, {first: times})
    return lines


def _marker(opts: SynthOptions) -> dict[str, Any]:
    options = asdict(opts)
    options.pop("out")
    options.pop("workers")  # does not change the output
    # through JSON once, so that it compares equal to a marker read back from disk (tuples become lists)
    return json.loads(json.dumps({"generator": "xmkd synth", "xmkd_version": __version__, "options": options}))


def synthesize_indexed(opts: SynthOptions, reader: str, progress: bool = True) -> Path:
    """`synthesize` then `xmkd prepare` into `<out>/xmkd_index`, unless both finished before with these options (the
    index is written last): a resumed demo or benchmark does not render its data again, and never rewrites files
    that another run may be reading. For `kitti_object`, also the box database of the train split that lidar_det's
    gt-sampling reads (`<out>/xmkd_gt_database`, as `xmkd prepare-instances --boxes` writes it)."""
    from xmkd.data.index import prepare

    out = Path(opts.out)
    if not ((out / "xmkd_index" / "index.json").is_file() and _written_marker(out) == _marker(opts)):
        synthesize(opts, progress)
        prepare(reader, out, out / "xmkd_index", progress=progress)
    if reader == "kitti_object" and not (out / "xmkd_gt_database" / "database.json").is_file():
        from xmkd.data.gt_database import DEFAULT_FOLDER, build_box_database
        from xmkd.data.index import IndexedFrames

        build_box_database(IndexedFrames(out / "xmkd_index", "train", cameras=()), out / DEFAULT_FOLDER,
                           progress=progress)
    return out


def _written_marker(out: Path) -> dict[str, Any] | None:
    """The marker of the dataset in `out`; None when there is none or it is unreadable."""
    try:
        return json.loads((out / MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _check_out_dir(out: Path, marker: dict) -> None:
    if not out.exists() or not any(out.iterdir()):
        return
    existing = out / MARKER
    if existing.is_file():
        if _written_marker(out) == marker:
            return  # the same dataset: rewriting it gives identical files
        raise XmkdError(f"refusing to write into {out}: it holds a synthetic dataset made with other options "
                        f"({existing}); choose another --out or delete it")
    raise XmkdError(f"refusing to write into {out}: the folder is not empty and holds another dataset")


def synthesize(opts: SynthOptions, progress: bool = True) -> dict[str, Any]:
    """Render and write the dataset; returns a summary (frames per split, where things are)."""
    domain = opts.validate()
    out = Path(opts.out)
    per_scene = opts.frames_per_scene or FRAMES_PER_SCENE[opts.format]
    n_scenes = math.ceil(opts.frames / per_scene)
    n_val = 0 if n_scenes < 2 else max(1, round(opts.val_fraction * n_scenes))
    marker = _marker(opts)
    _check_out_dir(out, marker)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MARKER, json.dumps(marker, indent=1, sort_keys=True))

    counts = [min(per_scene, opts.frames - i * per_scene) for i in range(n_scenes)]
    is_val = [i >= n_scenes - n_val for i in range(n_scenes)]
    jobs: list[_Job] = []
    if opts.format == "nuscenes":
        from xmkd.data.synthetic.writers.nuscenes import scene_names

        train_names, val_names = scene_names(n_scenes - n_val, n_val)
        names = train_names + val_names
    elif opts.format == "semantickitti":
        from xmkd.data.synthetic.writers.semantickitti import sequence_name

        names = [sequence_name(i, False) for i in range(n_scenes - n_val)] + \
                [sequence_name(i, True) for i in range(n_val)]
    else:
        starts = [sum(counts[:i]) for i in range(n_scenes)]
        names = [str(s) for s in starts]
    for i in range(n_scenes):
        jobs.append(_Job(str(out), opts.format, opts.seed, domain, i, counts[i], names[i], True, opts))
    if opts.unlabelled:
        n_raw = math.ceil(opts.unlabelled / per_scene)
        for j in range(n_raw):
            count = min(per_scene, opts.unlabelled - j * per_scene)
            jobs.append(_Job(str(out), opts.format, opts.seed, domain, n_scenes + j, count, str(j + 1), False, opts))

    results: list[Any] = [None] * len(jobs)
    bar = tqdm(total=sum(j.num_frames for j in jobs), unit="frame", desc=f"synth {opts.format}",
               disable=not progress)
    if opts.workers > 1:
        with ProcessPoolExecutor(max_workers=opts.workers) as pool:
            futures = {pool.submit(_run, job): i for i, job in enumerate(jobs)}
            for fut in futures:
                results[futures[fut]] = fut.result()
                bar.update(jobs[futures[fut]].num_frames)
    else:
        for i, job in enumerate(jobs):
            results[i] = _run(job)
            bar.update(job.num_frames)
    bar.close()

    labelled = [(job, res) for job, res in zip(jobs, results) if job.labelled]
    splits: dict[str, list[str]] = {"train": [], "val": []}
    for (job, res), val in zip(labelled, is_val):
        key = "val" if val else "train"
        splits[key].extend(res if opts.format == "kitti" else [job.name])
    summary: dict[str, Any] = {"root": str(out), "format": opts.format, "domain": domain.name,
                               "frames": opts.frames, "scenes": n_scenes}
    if opts.format == "nuscenes":
        from xmkd.data.synthetic.writers import nuscenes

        nuscenes.finish(out, opts.seed, results, _camera_channels(jobs[0]), splits)
        summary.update(version=nuscenes.VERSION, splits={k: len(v) for k, v in splits.items()}, scene_names=splits)
    elif opts.format == "semantickitti":
        atomic_write_text(out / "xmkd_splits.json", json.dumps(splits, indent=1, sort_keys=True))
        summary.update(splits=splits)
    else:
        sets = out / "ImageSets"
        atomic_write_text(sets / "train.txt", "".join(f"{i}\n" for i in splits["train"]))
        atomic_write_text(sets / "val.txt", "".join(f"{i}\n" for i in splits["val"]))
        atomic_write_text(sets / "trainval.txt", "".join(f"{i}\n" for i in splits["train"] + splits["val"]))
        raw_lines = [line for job, res in zip(jobs, results) if not job.labelled for line in res]
        if raw_lines:
            atomic_write_text(sets / "raw_unlabelled.txt", "".join(f"{x}\n" for x in raw_lines))
        summary.update(splits={k: len(v) for k, v in splits.items()}, unlabelled=len(raw_lines))
    return summary


def _camera_channels(job: _Job) -> list[str]:
    from xmkd.data.synthetic.sensors import make_rig

    rig = make_rig(job.domain.rig, job.options.image_size)
    return [c.name for c in rig.cameras if job.options.cameras is None or c.name in job.options.cameras]
