"""Sequences of synthetic sensor frames: keyframes (LiDAR + every camera) and LiDAR-only sweeps between
them, rendered from one scene along the ego trajectory; and their conversion to `Frame`s.

Timing follows nuScenes: keyframes every `keyframe_interval` seconds (0.5 s, 2 Hz) and LiDAR sweeps every
`sweep_interval` (0.05 s, 20 Hz). Everything is deterministic in (seed, scene index, frame index).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from xmkd.data.frame import Boxes, CameraView, Frame
from xmkd.data.labels import NUSCENES_FINE_INDEX, LabelSpace
from xmkd.data.synthetic.sensors import (
    CameraRender,
    LidarScan,
    RayCaster,
    Rig,
    camera_to_ego,
    intrinsics,
    lidar_to_ego,
    make_lighting,
    make_rig,
    render_camera,
    scan_lidar,
)
from xmkd.data.synthetic.surfaces import SURFACES
from xmkd.data.synthetic.world import Domain, Scene, generate_scene
from xmkd.errors import XmkdNameError
from xmkd.geometry.transforms import invert_transform

SURFACE_TO_NUSCENES = np.array([NUSCENES_FINE_INDEX[s.nuscenes] for s in SURFACES])


@dataclass
class Sweep:
    timestamp: float  # seconds since the scene start
    T_world_ego: np.ndarray
    scan: LidarScan


@dataclass
class ObjectState:
    """A boxed object as seen at one keyframe (world frame)."""

    instance_id: int
    kind: str
    box_world: np.ndarray  # (7,)
    velocity: np.ndarray  # (2,) world xy
    moving: bool
    num_lidar_points: int


@dataclass
class Keyframe:
    scene: Scene
    rig: Rig
    index: int  # within the scene
    sweep: Sweep  # the keyframe's own LiDAR sweep
    cameras: dict[str, CameraRender]
    T_ego_cam: dict[str, np.ndarray]
    K: dict[str, np.ndarray]
    objects: list[ObjectState]
    sweeps_before: list[Sweep] = field(default_factory=list)  # LiDAR-only sweeps since the last keyframe

    @property
    def T_ego_lidar(self) -> np.ndarray:
        return lidar_to_ego(self.rig.lidar)

    @property
    def timestamp(self) -> float:
        return self.sweep.timestamp

    def T_cam_lidar(self, camera: str) -> np.ndarray:
        # Cameras and LiDAR are rendered at the same instant, so the chain goes through one ego pose.
        return invert_transform(self.T_ego_cam[camera]) @ self.T_ego_lidar

    def boxes_lidar(self) -> np.ndarray:
        """(M, 7) object boxes in the keyframe's LiDAR frame."""
        T_lidar_world = invert_transform(self.sweep.T_world_ego @ self.T_ego_lidar)
        out = np.zeros((len(self.objects), 7))
        for i, o in enumerate(self.objects):
            b = o.box_world
            centre = T_lidar_world[:3, :3] @ b[:3] + T_lidar_world[:3, 3]
            heading = T_lidar_world[:3, :3] @ np.array([np.cos(b[6]), np.sin(b[6]), 0.0])
            out[i] = [*centre, *b[3:6], np.arctan2(heading[1], heading[0])]
        return out


def _seconds_rng(seed: int, scene: int, frame: int, sweep: int, what: int) -> np.random.Generator:
    return np.random.default_rng([seed, scene, frame, sweep, what])


def generate_keyframes(
    seed: int,
    scene_index: int,
    domain: Domain,
    num_keyframes: int,
    keyframe_interval: float = 0.5,
    sweep_interval: float = 0.05,
    with_sweeps: bool = True,
    image_size: tuple[int, int] | None = None,
    cameras: tuple[str, ...] | None = None,
) -> Iterator[Keyframe]:
    """Render `num_keyframes` keyframes of scene `scene_index` (and the LiDAR sweeps between them). `cameras`: the
    rig's cameras to render (None = all, () = none); a name the rig does not have is an `XmkdNameError`."""
    duration = max(num_keyframes - 1, 0) * keyframe_interval
    rig = make_rig(domain.rig, image_size)
    unknown = sorted(set(cameras or ()) - {c.name for c in rig.cameras})
    if unknown:
        raise XmkdNameError(f"rig {domain.rig!r} has no camera {', '.join(map(repr, unknown))}; its cameras: "
                            f"{', '.join(c.name for c in rig.cameras)}")
    scene = generate_scene(seed, scene_index, domain, duration=max(duration, 1.0))
    cam_specs = [c for c in rig.cameras if cameras is None or c.name in cameras]
    caster = RayCaster(scene)
    lighting = make_lighting(domain.time, np.random.default_rng([seed, scene_index, 0x11947]))
    T_ego_lidar = lidar_to_ego(rig.lidar)
    n_between = int(round(keyframe_interval / sweep_interval)) - 1 if with_sweeps else 0
    for k in range(num_keyframes):
        t_key = k * keyframe_interval
        sweeps_before = []
        for j in range(n_between, 0, -1):
            t = t_key - j * sweep_interval
            caster.set_time(t)
            T_we = scene.ego_pose(t)
            scan = scan_lidar(caster, rig, T_we @ T_ego_lidar, _seconds_rng(seed, scene_index, k, j, 1))
            sweeps_before.append(Sweep(t, T_we, scan))
        caster.set_time(t_key)
        T_we = scene.ego_pose(t_key)
        scan = scan_lidar(caster, rig, T_we @ T_ego_lidar, _seconds_rng(seed, scene_index, k, 0, 1))
        renders, T_ego_cam, Ks = {}, {}, {}
        for ci, spec in enumerate(cam_specs):
            T_ec = camera_to_ego(spec)
            renders[spec.name] = render_camera(caster, rig, spec, T_we @ T_ec, T_we, lighting, scene.lamps,
                                               _seconds_rng(seed, scene_index, k, ci, 2))
            T_ego_cam[spec.name] = T_ec
            Ks[spec.name] = intrinsics(spec)
        states = []
        for o in scene.objects:
            states.append(ObjectState(o.instance_id, o.kind, o.box_at(t_key), o.velocity.copy(), o.moving,
                                      int((scan.instance == o.instance_id).sum())))
        kf = Keyframe(scene, rig, k, Sweep(t_key, T_we, scan), renders, T_ego_cam, Ks, states, sweeps_before)
        yield kf


def keyframe_to_frame(kf: Keyframe, label_space: LabelSpace, frame_id: str | None = None) -> Frame:
    """The keyframe as a `Frame` in its LiDAR frame, labels mapped through nuScenes' fine classes."""
    lut = label_space.lut if label_space.raw_dataset == "nuScenes-lidarseg" else None
    if lut is None:
        raise ValueError(f"label space {label_space.name} is not defined over nuScenes-lidarseg classes")

    def labels(surface: np.ndarray) -> np.ndarray:
        out = np.full(surface.shape, label_space.ignore_index, dtype=np.int64)
        ok = surface >= 0
        out[ok] = lut[SURFACE_TO_NUSCENES[surface[ok]]]
        return out

    scan = kf.sweep.scan
    cams = {}
    for name, r in kf.cameras.items():
        cams[name] = CameraView(name, r.image, kf.K[name], kf.T_cam_lidar(name), labels=labels(r.surface),
                                depth=r.depth)
    from xmkd.data.synthetic.objects import CATEGORIES

    boxes = Boxes(kf.boxes_lidar(), np.array([CATEGORIES[o.kind].nuscenes for o in kf.objects], dtype=str),
                  instance_ids=np.array([o.instance_id for o in kf.objects], dtype=np.int64))
    return Frame(
        frame_id or f"scene{kf.scene.index:04d}_{kf.index:03d}",
        scan.points.copy(), ("x", "y", "z", "intensity", "ring"), labels(scan.surface), scan.instance.copy(),
        cams, boxes, kf.sweep.T_world_ego @ kf.T_ego_lidar, kf.timestamp,
        {"domain": kf.scene.domain.name, "scene": kf.scene.index},
    )


@dataclass
class Coverage:
    """How one object appears in one camera, measured by ray casting (sampled pixels)."""

    bbox: np.ndarray  # (4,) x1, y1, x2, y2 of the projected 3D box, clipped to the image
    own: int  # sampled rays that hit the object when it is alone (inside or outside the image)
    inside: int  # ... of which inside the image
    visible: int  # ... of which the full render also shows this object (not occluded)

    @property
    def truncation(self) -> float:
        return 1.0 - self.inside / self.own if self.own else 1.0

    @property
    def visible_fraction(self) -> float:
        return self.visible / self.inside if self.inside else 0.0


def object_coverage(kf: Keyframe, camera: str, max_samples: int = 1500,
                    max_distance: float = np.inf) -> dict[int, Coverage]:
    """Per instance id: the object's projected box, truncation and occlusion in `camera`.

    Rays through a grid of (possibly virtual, outside-the-image) pixels covering the projected box are
    cast against the object alone; comparing with the full render's instance buffer gives the visible
    part. Objects behind or straddling the camera plane, or farther than `max_distance`, are left out.
    """
    from xmkd.data.synthetic.sensors import _embree_scene
    from xmkd.geometry.boxes import box_corners
    from xmkd.geometry.camera import project_points

    render = kf.cameras[camera]
    K = kf.K[camera]
    h, w = render.instance.shape
    T_world_cam = kf.sweep.T_world_ego @ kf.T_ego_cam[camera]
    T_cam_world = invert_transform(T_world_cam)
    origin = T_world_cam[:3, 3]
    by_id = {o.instance_id: o for o in kf.scene.objects}
    out: dict[int, Coverage] = {}
    for state in kf.objects:
        if np.hypot(*(state.box_world[:2] - origin[:2])) > max_distance:
            continue
        corners = box_corners(state.box_world[None])[0]
        proj = project_points(corners, K, T_cam_world, (w, h), min_depth=0.3)
        if np.any(proj.depth <= 0.3):
            continue
        x1, y1 = proj.uv.min(0)
        x2, y2 = proj.uv.max(0)
        if x2 < 0 or y2 < 0 or x1 >= w or y1 >= h:
            continue
        step = max(1.0, np.sqrt((x2 - x1) * (y2 - y1) / max_samples))
        us, vs = np.meshgrid(np.arange(x1 + step / 2, x2, step), np.arange(y1 + step / 2, y2, step))
        us, vs = us.ravel(), vs.ravel()
        rays = np.stack([(us - K[0, 2]) / K[0, 0], (vs - K[1, 2]) / K[1, 1], np.ones_like(us)], 1)
        dirs = rays / np.linalg.norm(rays, axis=1, keepdims=True) @ T_world_cam[:3, :3].T
        obj = by_id[state.instance_id]
        mesh = obj.mesh.transformed(obj.transform_at(kf.timestamp))
        hit = _embree_scene(mesh.vertices, mesh.faces).run(
            np.broadcast_to(origin, dirs.shape).astype(np.float32), dirs.astype(np.float32)) >= 0
        inside = hit & (us >= 0) & (us < w) & (vs >= 0) & (vs < h)
        rows = np.clip(vs[inside].astype(np.int64), 0, h - 1)
        cols = np.clip(us[inside].astype(np.int64), 0, w - 1)
        visible = int((render.instance[rows, cols] == state.instance_id).sum())
        bbox = np.array([max(x1, 0.0), max(y1, 0.0), min(x2, w - 1.0), min(y2, h - 1.0)])
        out[state.instance_id] = Coverage(bbox, int(hit.sum()), int(inside.sum()), visible)
    return out
