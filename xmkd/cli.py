"""The `xmkd` command line: one entry point, one subcommand per job.

Each subcommand's handler imports what it needs when it runs, so `xmkd --help` stays fast and an optional
backend that is not installed only matters to the command that uses it.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from xmkd import __version__
from xmkd.errors import XmkdDataError, XmkdError


def _cmd_config(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xmkd.config import load_config, peek_recipe, save_config, to_yaml
    from xmkd.recipes import get_recipe

    if args.list:
        print(_config_list())
        return 0
    path, overrides = args.config, list(args.overrides)
    if path is not None and "=" in path and not Path(path).exists():  # `xmkd config key=value ...`
        path, overrides = None, [path, *overrides]
    name = peek_recipe(path, overrides)
    cfg = load_config(path, overrides, **({"schema": get_recipe(name).schema} if name else {}))
    if args.out:
        print(f"wrote {save_config(cfg, args.out)}")
    else:
        print(to_yaml(cfg), end="")
    return 0


def _config_list() -> str:
    """The shipped configs: name, recipe and the first sentence of the file's opening comment, wrapped to the
    terminal under the description column."""
    import shutil
    import textwrap

    from xmkd.config import CONFIG_DIR, list_configs, peek_recipe

    names = list_configs()
    width = max(len(n) for n in names)
    indent = width + 2 + 12 + 2
    columns = max(indent + 40, shutil.get_terminal_size((120, 24)).columns)
    lines = [f"{'config':<{width}}  {'recipe':<12}  description"]
    for name in names:
        path = CONFIG_DIR / f"{name}.yaml"
        recipe = peek_recipe(path) or "(section)"
        about = textwrap.wrap(_first_sentence(path), columns - indent) or [""]
        lines.append(f"{name:<{width}}  {recipe:<12}  {about[0]}")
        lines += [" " * indent + more for more in about[1:]]
    lines.append(f"({len(names)} configs in {CONFIG_DIR}; name one as CONFIG anywhere a command takes a config file, "
                 "e.g. `xmkd train u2mkd/synthetic`)")
    return "\n".join(lines)


def _first_sentence(path) -> str:
    """The first sentence of a config file's opening comment (its leading `#` lines), whole."""
    import re

    comment = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("# ").strip())
    text = " ".join(c for c in comment if c)
    end = re.search(r"[.!?](\s|$)", text)
    return text[: end.start() + 1] if end else text


def _image_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 640x360, got {text!r}") from None
    return w, h


def _whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= `minimum`, else a message saying so."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return value

    return parse


_non_negative, _positive_int = _whole_number(0), _whole_number(1)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of metres > 0, got {text!r}")
    return value


def _camera_list(text: str) -> list[str]:
    """`--cameras`: comma-separated camera names, or `none` for LiDAR only ([])."""
    if text.strip().lower() == "none":
        return []
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated camera names or 'none', got {text!r}")
    return names


def _cmd_summary(args: argparse.Namespace) -> int:
    import json

    from xmkd.recipes.summary import format_summary, summarize

    summary = summarize(args.config, args.overrides, depth=args.depth)
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from xmkd.data.synthetic.synth import SynthOptions, synthesize

    opts = SynthOptions(out=args.out, preset=args.preset, format=args.format, frames=args.frames, seed=args.seed,
                        frames_per_scene=args.frames_per_scene, image_size=args.image_size,
                        cameras=tuple(args.cameras.split(",")) if args.cameras else None, sweeps=not args.no_sweeps,
                        unlabelled=args.unlabelled, workers=args.workers)
    summary = synthesize(opts, progress=not args.quiet)
    print(f"wrote {summary['frames']} {summary['format']} frames ({summary['domain']}) to {summary['root']}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from xmkd.config import load_config, peek_recipe
    from xmkd.engine import distributed
    from xmkd.engine.trainer import Trainer
    from xmkd.recipes import get_recipe

    name = peek_recipe(args.config, args.overrides)
    if not name:
        raise XmkdError(f"{args.config}: no `recipe:` given")
    recipe = get_recipe(name)
    cfg = load_config(args.config, args.overrides, schema=recipe.schema)
    if args.allow_config_change and not args.resume:
        raise XmkdError("--allow-config-change only applies with --resume")
    if args.resume:
        _check_resumed_config(cfg, args.allow_config_change)
    trainer, ok = None, False
    try:
        trainer = Trainer(cfg, recipe, resume=args.resume, progress=not args.quiet)
        trainer.fit()
        ok = True
    except BaseException as err:
        # the traceback's frames (fit's `self`) would keep the DDP wrappers, and with them the process group, alive
        # past `finish`; clearing their locals leaves the printed traceback as it is
        traceback.clear_frames(err.__traceback__)
        raise
    finally:
        trainer = None  # its DistributedDataParallel wrappers hold the process group that `finish` destroys
        distributed.finish(wait=ok)
    return 0


def _check_resumed_config(cfg, allow: bool) -> None:
    """`xmkd train --resume`: refuse a config that differs from the run's saved one (config.yaml, else the config
    its last.pt stores) on a key that changes what is trained, a saved config that cannot be read, or another
    recipe (XmkdError naming the file and each key with both values); `allow` (`--allow-config-change`) lets such
    changes through except on keys whose value the resumed state holds (`config_changes.FIXED`). Prints every
    difference that goes ahead, ignored keys included (rank 0 only under torchrun)."""
    from pathlib import Path

    from xmkd.runs.config_changes import resume_check

    run_dir = Path(cfg.output_dir) / cfg.name
    if not (run_dir / "checkpoints" / "last.pt").exists():
        return  # nothing to resume: the Trainer says what is missing
    note = resume_check(run_dir, cfg, allow, "--allow-config-change")
    if note and os.environ.get("RANK", "0") == "0":
        print(f"xmkd train: {note}", file=sys.stderr, flush=True)


def _cmd_eval(args: argparse.Namespace) -> int:
    from xmkd.engine import distributed
    from xmkd.runs.evaluate import evaluate_run

    ok = False
    try:
        evaluate_run(args.run_dir, ckpt=args.ckpt, every=args.all, json_out=args.json, progress=not args.quiet)
        ok = True
    finally:
        distributed.finish(wait=ok)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from xmkd.runs.predict import predict_split

    report = predict_split(args.run_dir, args.split, args.out, ckpt=args.ckpt, eval_set=args.eval_set,
                           device=args.device, workers=args.workers, progress=not args.quiet)
    print(f"predicted {report['written']} frames ({report['skipped']} already done) of {args.split} -> {args.out}")
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    from xmkd.runs.predict import infer_split

    n = infer_split(args.run_dir, args.split, args.out, ckpt=args.ckpt, device=args.device, workers=args.workers,
                    progress=not args.quiet)
    print(f"wrote {n} KITTI prediction files to {args.out} (score them with `xmkd eval-kitti`)")
    return 0


def _cmd_pseudo_label(args: argparse.Namespace) -> int:
    from xmkd.runs.predict import pseudo_label_split

    report = pseudo_label_split(args.run_dir, args.split, args.out, ckpt=args.ckpt, device=args.device,
                                workers=args.workers, progress=not args.quiet)
    print(f"pseudo-labels for {report['frames']} frames -> {args.out} (kept after refinement: "
          f"2D {100 * report['kept']['2d']:.1f}%, 3D {100 * report['kept']['3d']:.1f}%)")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from xmkd.demo import run_demo

    run_demo(args.out, args.seed, args.budget, args.jobs)
    return 0


def _cmd_eval_kitti(args: argparse.Namespace) -> int:
    from xmkd.eval.kitti import CEILING_NOTE, N_SAMPLE, format_table, kitti_report, write_json

    report = kitti_report(args.gt, args.pred, args.split, allow_missing=args.allow_missing)
    print(format_table(report, "strict"))
    print(format_table(report, "loose"))
    if any(n < N_SAMPLE for n in report.valid_gt.values()):
        print(CEILING_NOTE)
    for warning in report.warnings:
        print(f"xmkd eval-kitti: warning: {warning}", file=sys.stderr)
    if args.json:
        write_json(report, args.json)
        print(f"wrote {args.json}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from xmkd.data.index import bad_file_count, format_bad, prepare

    report = prepare(args.dataset, args.root, args.out, args.split, progress=not args.quiet, cameras=args.cameras)
    resumed = f" ({report.resumed} frames from an interrupted run)" if report.resumed else ""
    print(f"indexed {report.frames} frames{resumed} -> {report.index_path}")
    for name, count in sorted(report.splits.items()):
        without = report.unlabelled.get(name, 0)
        note = f" ({without} without {report.label_kind})" if without else ""
        print(f"  {name:<32} {count:>8} frames{note}")
    if report.bad:
        frames = len({b["frame"] for b in report.bad})
        print(f"{bad_file_count(report.bad)} bad file(s), in {frames} frame(s) left out of the index:",
              file=sys.stderr)
        print("\n".join(format_bad(report.bad)), file=sys.stderr)
        return 1
    return 0


def _cmd_prepare_instances(args: argparse.Namespace) -> int:
    from xmkd.data.index import IndexedFrames
    from xmkd.data.instances import build_database

    frames = IndexedFrames(args.index, args.split, args.label_space, cameras=(), root=args.root)
    if args.boxes:
        from xmkd.data.gt_database import build_box_database

        if args.min_points is not None:
            print("xmkd prepare-instances: --min-points does not apply to --boxes (the box database keeps every box; "
                  "model.augment.gt_sampling.min_points filters when sampling)", file=sys.stderr)
            return 2

        summary = build_box_database(frames, args.out, progress=not args.quiet)
        print(f"{summary['boxes']} boxes ({summary['points']} points) from {summary['frames']} frames -> {args.out}")
        for name, count in summary["per_class"].items():
            print(f"  {name:<24} {count:>8}")
        return 0
    summary = build_database(frames, args.out, args.label_space or frames.reader.label_space.name, args.min_points,
                             progress=not args.quiet)
    print(f"{summary['instances']} instances ({summary['points']} points) from {summary['frames']} frames -> "
          f"{args.out}")
    for name, count in summary["per_class"].items():
        print(f"  {name:<24} {count:>8}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from xmkd.data.index import describe_frame, inspect

    if args.frame:
        info = describe_frame(args.dataset, args.root, args.frame, args.label_space, args.cameras)
    else:
        info = inspect(args.dataset, args.root, args.index, progress=not args.json, label_space=args.label_space,
                       cameras=args.cameras, check=args.check)
    if args.json:
        print(json.dumps(info))
        return 0
    print(_format_summary(info))
    return 0


def _format_summary(info: dict) -> str:
    from xmkd.data.index import format_bad

    lines = []
    if info.get("source") == "index":
        lines.append(f"source: the index {info['index']} (written {info['index_written']}; `--check` checks the "
                     "files instead)")
    elif info.get("source") == "files":
        lines.append("source: the files (every frame checked now; nothing written)")
    for key, value in info.items():
        if key in ("source", "index", "index_written"):
            continue
        if key == "bad":  # every bad file with its reason, under bad_files
            lines += format_bad(value)
        elif key == "cameras" and value and all(isinstance(v, dict) for v in value.values()):
            lines.append("cameras:")
            width = max(len(str(k)) for k in value)
            lines += [f"  {k:<{width}}  " + ", ".join(f"{size} ({n} frames)" for size, n in sizes.items())
                      for k, sizes in value.items()]
        elif value is None:
            lines.append(f"{key}: none")
        elif isinstance(value, dict) and value:
            lines.append(f"{key}:")
            width = max(len(str(k)) for k in value)
            lines += [f"  {str(k):<{width}}  {v}" for k, v in value.items()]
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


def _kitti_predictions(folder: str, frame):
    """LiDAR boxes of the frame's KITTI prediction file `<folder>/<frame id>.txt`."""
    from pathlib import Path

    from xmkd.data.readers.kitti_files import read_label_file
    from xmkd.eval.kitti import require_prediction_folder
    from xmkd.geometry.boxes import kitti_camera_to_lidar

    if "T_rect_lidar" not in frame.meta:
        raise XmkdError("--pred reads KITTI prediction files: use it with kitti_object frames")
    require_prediction_folder(Path(folder), "--pred: ")
    path = Path(folder) / f"{Path(frame.frame_id).name}.txt"
    if not path.is_file():
        raise XmkdDataError(f"--pred: no prediction file for frame {frame.frame_id!r} in the prediction folder",
                            source=str(path))
    objs = read_label_file(path, ground_truth=False)
    care = objs.names != "DontCare"
    return kitti_camera_to_lidar(objs.camera_boxes[care], frame.meta["T_rect_lidar"])


def _cmd_viz(args: argparse.Namespace) -> int:
    from xmkd.data.labels import get_label_space
    from xmkd.viz.frame import BEV_EXTENT, bev_extent, bev_outside, save_frame_pictures

    space = get_label_space(args.label_space) if args.label_space else None
    cameras = None if args.cameras is None else tuple(args.cameras)
    if args.source == "synthetic":
        from xmkd.data.synthetic.generate import generate_keyframes, keyframe_to_frame
        from xmkd.data.synthetic.world import parse_domain

        if args.frame:
            raise XmkdError("xmkd viz synthetic renders a frame of the synthetic world: choose it with --preset, "
                            "--seed and --scene, not --frame")
        domain = parse_domain(args.preset)
        kf = next(generate_keyframes(args.seed, args.scene, domain, 1, with_sweeps=False, cameras=cameras))
        space = space or get_label_space("nuscenes16")
        frame = keyframe_to_frame(kf, space, frame_id=f"synthetic_{domain.name.replace(',', '_')}_s{args.seed}")
    else:
        from xmkd.data.readers import make_reader

        if not args.root:
            raise XmkdError(f"xmkd viz {args.source} needs --root")
        reader = make_reader(args.source, args.root, args.label_space, cameras)
        space = space or reader.label_space
        frame = reader.load(reader.check(reader.find(args.frame)))
    pred = _kitti_predictions(args.pred, frame) if args.pred else None
    extent = args.extent or bev_extent(frame, pred)
    for path in save_frame_pictures(frame, space, args.out, list(frame.cameras), pred, extent):
        print(path)
    outside = bev_outside(frame, extent, pred)
    if outside:
        print(f"xmkd viz: note: {outside} (--extent METRES widens it)", file=sys.stderr)
    elif not args.extent and extent > BEV_EXTENT:
        print(f"xmkd viz: note: the bird's-eye view spans +-{extent:.0f} m to hold every box", file=sys.stderr)
    return 0


def _run_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that run a trained model over a split."""
    p.add_argument("--ckpt", help="checkpoint file (default: the run's best, else last; the UDA recipes' last, as "
                   "released)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--workers", type=int, default=1, help="data-loading processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


CAMERAS_HELP = ("comma-separated camera names, or 'none' for LiDAR only (then no image or camera calibration is "
                "needed); default: every camera")

CONFIG_HELP = "YAML config file, or the name of a shipped config (e.g. u2mkd/synthetic; `xmkd config --list`)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xmkd",
        description="Cross-modal LiDAR <-> camera knowledge distillation for 3D perception "
        "(U2MKD, FtD++/xMUDA, HSRDN).",
    )
    parser.add_argument("--version", action="version", version=f"xmkd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("synth", help="generate a synthetic multi-modal driving dataset in a real format")
    p.add_argument("--preset", default="day", help="comma-separated domain presets, e.g. day,city-a,rig-a")
    p.add_argument("--format", choices=["nuscenes", "semantickitti", "kitti"], default="nuscenes")
    p.add_argument("--frames", type=int, default=10, help="number of keyframes to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output dataset root (refused if it holds another dataset)")
    p.add_argument("--frames-per-scene", type=int, default=0, help="keyframes per scene (0 = format default)")
    p.add_argument("--image-size", type=_image_size, help="camera resolution WxH (default: the rig's)")
    p.add_argument("--cameras", help="comma-separated camera names (nuScenes format; default: all)")
    p.add_argument("--no-sweeps", action="store_true", help="nuScenes: skip the LiDAR sweeps between keyframes")
    p.add_argument("--unlabelled", type=int, default=0, help="kitti: extra unlabelled frames (KITTI raw layout)")
    p.add_argument("--workers", type=int, default=1, help="render scenes in this many processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_synth, outputs={"out": ("the dataset", "folder")})

    datasets = ["nuscenes", "semantickitti", "kitti_object", "kitti_raw", "waymo", "a2d2", "virtualkitti"]
    p = sub.add_parser("prepare", help="validate a dataset on disk and write its compact index (resumable)")
    p.add_argument("dataset", choices=datasets)
    p.add_argument("--root", required=True, help="dataset root")
    p.add_argument("--out", required=True, help="folder for index.json (e.g. <root>/xmkd_index)")
    p.add_argument("--split", action="append", help="only frames of these splits (repeatable)")
    p.add_argument("--cameras", type=_camera_list, help=CAMERAS_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_prepare, outputs={"out": ("the index", "folder")})

    p = sub.add_parser("prepare-instances", help="cut thing instances (or, with --boxes, labelled boxes) out of a "
                       "split into a paste database")
    p.add_argument("--index", required=True, help="index folder or file written by `xmkd prepare`")
    p.add_argument("--split", required=True, help="the training split, e.g. train")
    p.add_argument("--out", required=True, help="database folder (then model.paste.database=<out>)")
    p.add_argument("--root", help="dataset root (default: the one recorded in the index)")
    p.add_argument("--label-space", help="default: the dataset's")
    p.add_argument("--min-points", type=int, help="smallest instance kept (default: nuScenes 10, "
                   "SemanticKITTI 40, Waymo 50; with --boxes every box is kept, the sampler filters)")
    p.add_argument("--boxes", action="store_true", help="a detection box database for lidar_det's gt-sampling "
                   "(then model.augment.gt_sampling.database=<out>, or <out> = <root>/xmkd_gt_database)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_prepare_instances, outputs={"out": ("the instance database", "folder")})

    p = sub.add_parser("inspect", help="summarise a dataset: frames, points, cameras, labels, boxes")
    p.add_argument("dataset", choices=datasets)
    p.add_argument("--root", required=True)
    p.add_argument("--index", help="index folder or file (default: <root>/xmkd_index if present)")
    p.add_argument("--check", action="store_true", help="check every file now, even where an index exists (what "
                   "an index says is as of when `xmkd prepare` wrote it)")
    p.add_argument("--frame", help="describe one frame by id")
    p.add_argument("--label-space", help="label space for the histogram (default: the dataset's)")
    p.add_argument("--cameras", type=_camera_list, help=CAMERAS_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_cmd_inspect)

    p = sub.add_parser("train", help="train a recipe from a config (runs under torchrun for DDP)")
    p.add_argument("config", help=CONFIG_HELP)
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=5")
    p.add_argument("--resume", action="store_true", help="continue the run in the config's run directory (refused "
                   "when the config differs from the run's saved one on a key that changes what is trained)")
    p.add_argument("--allow-config-change", action="store_true", help="with --resume: continue even with such "
                   "differences (each is printed), or with a saved config that cannot be read; not for "
                   "train.optimizer.*, train.schedule.*, train.max_iters / epochs, whose values the checkpoint's "
                   "state holds")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's checkpoint(s)")
    p.add_argument("run_dir")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--ckpt", help="checkpoint file (default: the run's best, else last; the UDA recipes' last, as "
                   "released)")
    g.add_argument("--all", action="store_true", help="every saved checkpoint, with a metric curve")
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_eval, outputs={"json": ("a JSON file", "file")})

    p = sub.add_parser("predict", help="write a segmentation run's point predictions in the submission format")
    p.add_argument("run_dir")
    p.add_argument("--split", required=True, help="split of the run's dataset index, e.g. val or test")
    p.add_argument("--out", required=True, help="results folder (nuScenes: lidarseg/<set>/*.bin; "
                   "SemanticKITTI: sequences/*/predictions/*.label)")
    p.add_argument("--eval-set", help="nuScenes eval set name for the folder (default: the split)")
    _run_options(p)
    p.set_defaults(handler=_cmd_predict, outputs={"out": ("the predictions", "folder")})

    p = sub.add_parser("infer", help="write a detection run's boxes for a split as KITTI label files")
    p.add_argument("run_dir")
    p.add_argument("--split", required=True, help="split of the run's dataset index, e.g. val or test")
    p.add_argument("--out", required=True, help="folder for <frame>.txt prediction files")
    _run_options(p)
    p.set_defaults(handler=_cmd_infer, outputs={"out": ("the prediction files", "folder")})

    p = sub.add_parser("eval-kitti", help="KITTI 3D object AP (R11/R40; bbox, BEV, 3D, AOS) on CPU")
    p.add_argument("--gt", required=True, help="folder of ground-truth label_2 files")
    p.add_argument("--pred", required=True, help="folder of prediction files in KITTI format")
    p.add_argument("--split", help="file listing the frame ids to evaluate")
    p.add_argument("--json", help="write the AP table (with valid ground-truth counts, AP ceilings and warnings) to "
                   "this JSON file")
    p.add_argument("--allow-missing", action="store_true", help="frames without a prediction file count as frames "
                   "without detections, with a warning (the official devkit refuses them, as xmkd does by default)")
    p.set_defaults(handler=_cmd_eval_kitti, outputs={"json": ("a JSON file", "file")})

    p = sub.add_parser("pseudo-label", help="predict pseudo-labels for a target split (FtD++/xMUDA)")
    p.add_argument("run_dir")
    p.add_argument("--split", required=True, help="target split to label, e.g. the target's train split")
    p.add_argument("--out", required=True, help="output file (.npz); then model.pseudo_labels=<out>")
    _run_options(p)
    p.set_defaults(handler=_cmd_pseudo_label, outputs={"out": ("a .npz file", "file")})

    p = sub.add_parser("viz", help="draw a frame: image, labels, projected points, bird's-eye view (PNG files)")
    p.add_argument("source", choices=["synthetic", *datasets],
                   help="synthetic: render a frame of the synthetic world; else a dataset on disk (--root)")
    p.add_argument("--root", help="dataset root")
    p.add_argument("--frame", help="frame id (default: the first frame)")
    p.add_argument("--preset", default="day", help="synthetic: domain presets, e.g. night,city-b,rig-b")
    p.add_argument("--seed", type=int, default=0, help="synthetic: dataset seed")
    p.add_argument("--scene", type=int, default=0, help="synthetic: scene index")
    p.add_argument("--label-space", help="colour points and pixels in this label space (default nuscenes16)")
    p.add_argument("--cameras", type=_camera_list, help=CAMERAS_HELP)
    p.add_argument("--pred", help="kitti_object: folder of KITTI prediction files (`xmkd infer`) to draw in red")
    p.add_argument("--extent", type=_positive_float, help="half-width of the bird's-eye view in metres (default: "
                   "50, widened to hold every box; what lies outside is named)")
    p.add_argument("--out", default="viz", help="output folder for the PNG files")
    p.set_defaults(handler=_cmd_viz, outputs={"out": ("the pictures", "folder")})

    p = sub.add_parser("demo", help="the main job: synthetic data, U2MKD teacher and students, results table")
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", choices=["demo", "tiny", "bench"], default="demo",
                   help="tiny: a smoke test of the pipeline; bench: the benchmark's larger budget (~25 min)")
    p.add_argument("--jobs", type=_positive_int, help="rows that train side by side, each in its own process "
                   "(default: one per core; 1: one after the other in this process)")
    p.set_defaults(handler=_cmd_demo, outputs={"out": ("the demo's outputs", "folder")})

    p = sub.add_parser("summary", help="each network of a config's recipe with its parameter and trainable counts "
                       "(built on CPU, no data or weights needed)")
    p.add_argument("config", help=CONFIG_HELP)
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model.backbone.cr=1")
    p.add_argument("--depth", type=_non_negative, default=1, help="also list submodules this many levels down "
                   "(default 1; 0: the networks only)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_cmd_summary)

    p = sub.add_parser("config", help="print (or save) a fully resolved, validated config; --list the shipped ones")
    p.add_argument("config", nargs="?", help=f"{CONFIG_HELP} (default: the built-in defaults)")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p.add_argument("--out", help="write <out>/config.yaml instead of printing")
    p.add_argument("--list", action="store_true", help="list the configs shipped with xmkd (name, recipe, what)")
    p.set_defaults(handler=_cmd_config, outputs={"out": ("config.yaml", "folder")})
    return parser


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path of the command (its `outputs` default: option -> (what is written there, "file" or
    "folder")) checked with `xmkd.io.check_output` before the command does any work, so that a long job cannot fail
    at its end (or with a traceback) for a path it could never write."""
    from xmkd.io import check_output

    for option, (what, kind) in getattr(args, "outputs", {}).items():
        value = getattr(args, option, None)
        if value is not None:
            check_output(value, folder=kind == "folder", what=what)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        check_outputs(args)
        return int(args.handler(args) or 0)
    except XmkdError as err:
        print(f"xmkd {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"xmkd {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of stdout left (`xmkd eval-kitti ... | head`): stop quietly, as Unix tools do, and keep Python
        # from failing again when it flushes stdout at exit
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # a stdout without a file descriptor
            pass
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
