"""nuScenes v1.0 + lidarseg writer: the 13 JSON tables, samples/, sweeps/, lidarseg/, a map stub.

What `nuscenes.NuScenes(version, dataroot)` requires is reproduced (FORMATS.md 1.2-1.9): every table,
`lidarseg.token == sample_data_token`, one label file per lidarseg record, a map whose `log_tokens` cover
every log, per-sensor `prev`/`next` chains, sweeps pointing to the next keyframe's sample. Scene names come
from the official mini splits (`mini_train`, `mini_val`) while there are few enough, so the devkit's own
lidarseg evaluation runs on `mini_val`; `<version>/splits.json` lists the synthetic train/val scenes and an SSDA
split of the train scenes (`synthetic_train_labeled`: the first quarter, `synthetic_train_unlabeled`: the rest).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from xmkd.data.labels import NUSCENES_FINE
from xmkd.data.synthetic.generate import Keyframe, Sweep, object_coverage
from xmkd.data.synthetic.objects import CATEGORIES
from xmkd.data.synthetic.surfaces import SURFACES
from xmkd.data.synthetic.writers.common import token, write_array, write_image
from xmkd.geometry.transforms import matrix_to_quat
from xmkd.io import atomic_write_text

VERSION = "v1.0-mini"
MINI_TRAIN = ("scene-0061", "scene-0553", "scene-0655", "scene-0757", "scene-0796", "scene-1077", "scene-1094",
              "scene-1100")
MINI_VAL = ("scene-0103", "scene-0916")
LOCATIONS = {"city-a": "boston-seaport", "city-b": "singapore-onenorth"}
ATTRIBUTES = ("vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider", "cycle.without_rider",
              "pedestrian.sitting_lying_down", "pedestrian.standing", "pedestrian.moving")
VISIBILITY = (("v0-40", "visibility of whole object is between 0 and 40%"),
              ("v40-60", "visibility of whole object is between 40 and 60%"),
              ("v60-80", "visibility of whole object is between 60 and 80%"),
              ("v80-100", "visibility of whole object is between 80 and 100%"))
BASE_TIMESTAMP_US = 1_700_000_000_000_000
ANNOTATION_RANGE = 55.0  # metres from the ego within which objects are annotated
SURFACE_FINE = np.array([[n for n, _ in NUSCENES_FINE].index(s.nuscenes) for s in SURFACES], dtype=np.uint8)


def scene_names(num_train: int, num_val: int) -> tuple[list[str], list[str]]:
    """Official mini-split names first (so the devkit's `mini_val` evaluation works), then synthetic ones."""
    train = list(MINI_TRAIN[:num_train]) + [f"scene-{9000 + i:04d}" for i in range(max(0, num_train - 8))]
    val = list(MINI_VAL[:num_val]) + [f"scene-{9500 + i:04d}" for i in range(max(0, num_val - 2))]
    return train, val


def _quat(R: np.ndarray) -> list[float]:
    return [float(v) for v in matrix_to_quat(R)]


def _yaw_quat(yaw: float) -> list[float]:
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


TABLES = ("log", "scene", "sample", "sample_data", "ego_pose", "calibrated_sensor", "instance", "sample_annotation",
          "lidarseg")


class _SceneWriter:
    """Writes one scene's files and collects its table records."""

    def __init__(self, root: Path, seed: int, name: str, first: Keyframe):
        self.root, self.seed, self.name = root, seed, name
        self.rec: dict[str, list[dict]] = {t: [] for t in TABLES}
        self.sd_chain: dict[str, list[dict]] = {}
        self.ann_chain: dict[int, list[dict]] = {}
        scene = first.scene
        self.scene = scene
        day = 1 + scene.index % 28
        self.logfile = f"n900-2026-01-{day:02d}-{scene.index // 28 % 24:02d}-{scene.index % 60:02d}-00+0000"
        self.rec["log"].append({"token": token(seed, name, "log"), "logfile": self.logfile, "vehicle": "n900",
                                "date_captured": f"2026-01-{day:02d}", "location": LOCATIONS[scene.domain.city]})
        self.t0 = BASE_TIMESTAMP_US + scene.index * 1_000_000_000
        calib = {"LIDAR_TOP": (first.T_ego_lidar, [])}
        calib.update({cam: (T, first.K[cam].tolist()) for cam, T in first.T_ego_cam.items()})
        self.cs_tokens = {}
        for channel, (T, K) in calib.items():
            self.cs_tokens[channel] = token(seed, name, "calibrated_sensor", channel)
            self.rec["calibrated_sensor"].append({
                "token": self.cs_tokens[channel], "sensor_token": token("sensor", channel),
                "translation": T[:3, 3].tolist(), "rotation": _quat(T[:3, :3]), "camera_intrinsic": K})

    def timestamp(self, seconds: float) -> int:
        return self.t0 + int(round(seconds * 1e6))

    def sample_data(self, sample_token: str, channel: str, ts: int, key: bool, ext: str, size: tuple[int, int],
                    T_world_ego: np.ndarray) -> dict:
        sd_token = token(self.seed, self.name, "sample_data", channel, ts)
        folder = "samples" if key else "sweeps"
        self.rec["ego_pose"].append({"token": sd_token, "timestamp": ts,
                                     "translation": [float(T_world_ego[0, 3]), float(T_world_ego[1, 3]), 0.0],
                                     "rotation": _quat(T_world_ego[:3, :3])})
        sd = {"token": sd_token, "sample_token": sample_token, "ego_pose_token": sd_token,
              "calibrated_sensor_token": self.cs_tokens[channel], "timestamp": ts,
              "fileformat": "pcd" if channel == "LIDAR_TOP" else "jpg", "is_key_frame": key,
              "width": size[0], "height": size[1], "prev": "", "next": "",
              "filename": f"{folder}/{channel}/{self.logfile}__{channel}__{ts}.{ext}"}
        self.sd_chain.setdefault(channel, []).append(sd)
        return sd

    def keyframe(self, kf: Keyframe) -> dict:
        sample = {"token": token(self.seed, self.name, "sample", kf.index), "timestamp": self.timestamp(kf.timestamp),
                  "scene_token": token(self.seed, self.name, "scene"), "prev": "", "next": ""}
        sweeps: list[tuple[Sweep, bool]] = [(s, False) for s in kf.sweeps_before] + [(kf.sweep, True)]
        for sweep, key in sweeps:
            sd = self.sample_data(sample["token"], "LIDAR_TOP", self.timestamp(sweep.timestamp), key, "pcd.bin",
                                  (0, 0), sweep.T_world_ego)
            write_array(self.root / sd["filename"], sweep.scan.points.astype(np.float32))
            if key:
                label_file = f"lidarseg/{VERSION}/{sd['token']}_lidarseg.bin"
                write_array(self.root / label_file, SURFACE_FINE[sweep.scan.surface])
                self.rec["lidarseg"].append({"token": sd["token"], "sample_data_token": sd["token"],
                                             "filename": label_file})
        for cam, render in kf.cameras.items():
            h, w = render.image.shape[:2]
            sd = self.sample_data(sample["token"], cam, sample["timestamp"], True, "jpg", (w, h), kf.sweep.T_world_ego)
            write_image(self.root / sd["filename"], render.image)
        self.annotations(kf, sample["token"])
        return sample

    def annotations(self, kf: Keyframe, sample_token: str) -> None:
        """Boxes of the objects near the ego, with nuScenes visibility levels from the camera renders."""
        coverage = [object_coverage(kf, cam, max_distance=ANNOTATION_RANGE + 5) for cam in kf.cameras]
        ego_xy = kf.sweep.T_world_ego[:2, 3]
        for obj in kf.objects:
            if np.hypot(*(obj.box_world[:2] - ego_xy)) > ANNOTATION_RANGE:
                continue
            cat = CATEGORIES[obj.kind]
            inside = sum(c[obj.instance_id].inside for c in coverage if obj.instance_id in c)
            visible = sum(c[obj.instance_id].visible for c in coverage if obj.instance_id in c)
            frac = visible / inside if inside else 0.0
            level = 1 + int(frac >= 0.4) + int(frac >= 0.6) + int(frac >= 0.8)
            attribute = cat.moving_attribute if obj.moving else cat.parked_attribute
            b = obj.box_world
            self.ann_chain.setdefault(obj.instance_id, []).append({
                "token": token(self.seed, self.name, "ann", obj.instance_id, kf.index), "sample_token": sample_token,
                "instance_token": token(self.seed, self.name, "instance", obj.instance_id),
                "visibility_token": str(level),
                "attribute_tokens": [token("attribute", attribute)] if attribute else [],
                "translation": [float(v) for v in b[:3]], "size": [float(b[4]), float(b[3]), float(b[5])],
                "rotation": _yaw_quat(float(b[6])), "prev": "", "next": "",
                "num_lidar_pts": obj.num_lidar_points, "num_radar_pts": 0})

    def records(self, samples: list[dict]) -> dict[str, list[dict]]:
        for chain in [*self.sd_chain.values(), *self.ann_chain.values(), samples]:
            for a, b in zip(chain[:-1], chain[1:]):
                a["next"], b["prev"] = b["token"], a["token"]
        for chain in self.sd_chain.values():
            self.rec["sample_data"].extend(chain)
        kinds = {o.instance_id: o.kind for o in self.scene.objects}
        for inst, chain in self.ann_chain.items():
            self.rec["instance"].append({"token": chain[0]["instance_token"],
                                         "category_token": token("category", CATEGORIES[kinds[inst]].nuscenes),
                                         "nbr_annotations": len(chain), "first_annotation_token": chain[0]["token"],
                                         "last_annotation_token": chain[-1]["token"]})
            self.rec["sample_annotation"].extend(chain)
        self.rec["sample"] = samples
        self.rec["scene"].append({
            "token": token(self.seed, self.name, "scene"), "name": self.name, "description": self.scene.description,
            "log_token": token(self.seed, self.name, "log"), "nbr_samples": len(samples),
            "first_sample_token": samples[0]["token"], "last_sample_token": samples[-1]["token"]})
        return self.rec


def write_scene(root: Path, seed: int, name: str, keyframes: Iterable[Keyframe]) -> dict[str, list[dict]]:
    """Write one scene's files (sweeps, keyframes, images, lidarseg labels); return its table records."""
    writer: _SceneWriter | None = None
    samples = []
    for kf in keyframes:
        if writer is None:
            writer = _SceneWriter(root, seed, name, kf)
        samples.append(writer.keyframe(kf))
    if writer is None:
        raise ValueError(f"scene {name} has no keyframes")
    return writer.records(samples)


def finish(root: Path, seed: int, scene_records: list[dict[str, list[dict]]], cameras: list[str],
           splits: dict[str, list[str]]) -> None:
    """Write the JSON tables, the map stub and splits.json once every scene is written."""
    tables: dict[str, list[dict]] = {t: [] for t in TABLES}
    for rec in scene_records:
        for table, rows in rec.items():
            tables[table].extend(rows)
    tables["category"] = [{"token": token("category", n), "name": n, "description": f"nuScenes class {n}",
                           "index": i} for i, (n, _) in enumerate(NUSCENES_FINE)]
    tables["attribute"] = [{"token": token("attribute", a), "name": a, "description": a} for a in ATTRIBUTES]
    tables["visibility"] = [{"token": str(i + 1), "level": lvl, "description": d}
                            for i, (lvl, d) in enumerate(VISIBILITY)]
    tables["sensor"] = [{"token": token("sensor", ch), "channel": ch, "modality": "lidar" if ch == "LIDAR_TOP"
                         else "camera"} for ch in ["LIDAR_TOP", *cameras]]
    map_token = token(seed, "map")
    map_file = f"maps/{map_token}.png"
    # A 1x1 PNG: the devkit only checks that the map image exists and reads it lazily.
    write_image(root / map_file, np.zeros((1, 1, 3), np.uint8))
    tables["map"] = [{"token": map_token, "log_tokens": [r["token"] for r in tables["log"]],
                      "category": "semantic_prior", "filename": map_file}]
    for table, rows in tables.items():
        atomic_write_text(root / VERSION / f"{table}.json", json.dumps(rows, indent=0, sort_keys=True))
    named = {f"synthetic_{k}": v for k, v in splits.items()}
    # semi-supervised adaptation: the first quarter of the training scenes (at least one) labelled, the rest not
    n_labelled = max(1, len(splits["train"]) // 4)
    named["synthetic_train_labeled"] = splits["train"][:n_labelled]
    named["synthetic_train_unlabeled"] = splits["train"][n_labelled:]
    atomic_write_text(root / VERSION / "splits.json", json.dumps(named, indent=1, sort_keys=True))
