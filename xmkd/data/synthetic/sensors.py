"""Sensors of the synthetic world, ray-cast with Embree: a spinning multi-beam LiDAR and pinhole cameras.

Both sensors query the same `RayCaster`, so a LiDAR point and the pixel it projects to see the same
surface. Static geometry is one Embree scene built once per scene; moving objects form a second, small
scene rebuilt for each time stamp.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from xmkd.data.synthetic.meshes import Mesh
from xmkd.data.synthetic.surfaces import surface_table, texture_albedo
from xmkd.data.synthetic.world import Scene

# ---------------------------------------------------------------------------------------------------
# Rigs
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LidarSpec:
    beams: int
    elevation_deg: tuple[float, float]  # (top, bottom) beam elevation
    azimuth_steps: int  # firings per revolution
    max_range: float
    min_range: float
    mount: tuple[float, float, float]  # position on the ego (x fwd, y left, z up)
    frame: str  # "nuscenes" (x right, y forward, z up) or "kitti" (x forward, y left, z up)
    range_noise: float  # metres (1 sigma)
    dropout: float  # fraction of returns lost at random


@dataclass(frozen=True)
class CameraSpec:
    name: str
    width: int
    height: int
    hfov_deg: float
    mount: tuple[float, float, float]
    yaw_deg: float  # about the ego's z axis; 0 = looking forward, 90 = left


@dataclass(frozen=True)
class Rig:
    name: str
    lidar: LidarSpec
    cameras: tuple[CameraSpec, ...]
    color_matrix: tuple[tuple[float, float, float], ...]  # linear RGB response of the cameras
    lidar_intensity_scale: float  # 255 for nuScenes-like intensities, 1 for KITTI-like reflectance


def _nusc_cams(w: int, h: int) -> tuple[CameraSpec, ...]:
    return (
        CameraSpec("CAM_FRONT", w, h, 70.0, (1.70, 0.0, 1.51), 0.0),
        CameraSpec("CAM_FRONT_RIGHT", w, h, 70.0, (1.55, -0.49, 1.50), -55.0),
        CameraSpec("CAM_FRONT_LEFT", w, h, 70.0, (1.52, 0.49, 1.51), 55.0),
        CameraSpec("CAM_BACK", w, h, 110.0, (0.03, 0.0, 1.57), 180.0),
        CameraSpec("CAM_BACK_LEFT", w, h, 70.0, (1.04, 0.48, 1.49), 110.0),
        CameraSpec("CAM_BACK_RIGHT", w, h, 70.0, (1.05, -0.48, 1.49), -110.0),
    )


def make_rig(name: str, image_size: tuple[int, int] | None = None) -> Rig:
    """`rig-a`: 32-beam LiDAR + 6 surround cameras (nuScenes-like); `rig-b`: 64-beam LiDAR mounted higher
    + one wide front camera (KITTI-like) with a warmer colour response. `image_size` = (W, H) overrides the
    camera resolution (the field of view is kept)."""
    if name == "rig-a":
        w, h = image_size or (640, 360)
        return Rig("rig-a", LidarSpec(32, (10.67, -30.67), 1084, 70.0, 1.0, (0.94, 0.0, 1.84), "nuscenes", 0.02, 0.03),
                   _nusc_cams(w, h), ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), 255.0)
    if name == "rig-b":
        w, h = image_size or (832, 256)
        return Rig("rig-b", LidarSpec(64, (2.0, -24.9), 1200, 80.0, 2.5, (0.76, 0.0, 1.93), "kitti", 0.015, 0.02),
                   (CameraSpec("CAM_FRONT", w, h, 81.0, (1.03, 0.06, 1.65), 0.0),),
                   ((1.08, 0.05, -0.05), (0.02, 0.97, 0.0), (-0.04, 0.02, 0.85)), 1.0)
    raise ValueError(f"unknown rig {name!r} (rig-a or rig-b)")


def lidar_to_ego(spec: LidarSpec) -> np.ndarray:
    """T_ego_lidar."""
    T = np.eye(4)
    if spec.frame == "nuscenes":
        T[:3, :3] = [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # lidar x = ego right, y = ego forward
    T[:3, 3] = spec.mount
    return T


def camera_to_ego(spec: CameraSpec) -> np.ndarray:
    """T_ego_cam (camera: x right, y down, z forward)."""
    psi = np.deg2rad(spec.yaw_deg)
    forward = np.array([np.cos(psi), np.sin(psi), 0.0])
    right = np.array([np.sin(psi), -np.cos(psi), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    T = np.eye(4)
    T[:3, :3] = np.stack([right, down, forward], axis=1)
    T[:3, 3] = spec.mount
    return T


def intrinsics(spec: CameraSpec) -> np.ndarray:
    f = spec.width / 2 / np.tan(np.deg2rad(spec.hfov_deg) / 2)
    return np.array([[f, 0.0, spec.width / 2], [0.0, f, spec.height / 2], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------------------------------------
# Ray casting
# ---------------------------------------------------------------------------------------------------


def _embree_scene(vertices: np.ndarray, faces: np.ndarray):
    from embreex import rtcore_scene
    from embreex.mesh_construction import TriangleMesh

    scene = rtcore_scene.EmbreeScene()
    TriangleMesh(scene=scene, vertices=np.ascontiguousarray(vertices, np.float32),
                 indices=np.ascontiguousarray(faces, np.int32))
    return scene


def _face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    v0 = vertices[faces[:, 0]]
    n = np.cross(vertices[faces[:, 1]] - v0, vertices[faces[:, 2]] - v0)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.where(norm > 0, norm, 1.0)


class RayCaster:
    """Nearest-hit queries against a scene at a given time (Embree through embreex, float32 rays)."""

    def __init__(self, scene: Scene):
        self.scene = scene
        static = scene.static
        self._static = _embree_scene(static.vertices, static.faces)
        self._static_n = _face_normals(static.vertices, static.faces)
        moving = scene.moving_objects
        self._moving = moving
        self._dyn_local = Mesh.concat([o.mesh for o in moving])
        counts = [len(o.mesh.vertices) for o in moving]
        self._dyn_owner = np.repeat(np.arange(len(moving)), counts)
        d = self._dyn_local
        self.surface = np.concatenate([static.surface, d.surface]).astype(np.int64)
        self.instance = np.concatenate([static.instance, d.instance]).astype(np.int64)
        self.albedo = np.concatenate([static.albedo, d.albedo]).astype(np.float64)
        self.seed = np.concatenate([static.seed, d.seed])
        self._n_static = static.num_faces
        self._dynamic = None
        self._normals = self._static_n
        self.time: float | None = None

    def set_time(self, t: float) -> None:
        """Move the moving objects to time t and rebuild their acceleration structure."""
        if self.time == t:
            return
        self.time = t
        if not self._moving:
            return
        poses = np.stack([o.transform_at(t) for o in self._moving])  # (K, 4, 4)
        R = poses[self._dyn_owner, :3, :3]
        v = np.einsum("nij,nj->ni", R, self._dyn_local.vertices) + poses[self._dyn_owner, :3, 3]
        self._dynamic = _embree_scene(v, self._dyn_local.faces)
        self._normals = np.concatenate([self._static_n, _face_normals(v, self._dyn_local.faces)])

    def _layers(self):
        if self.time is None:
            raise RuntimeError("RayCaster.set_time must be called before casting rays")
        yield self._static, 0
        if self._dynamic is not None:
            yield self._dynamic, self._n_static

    def cast(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit rays (N, 3) -> (distance (N,) inf on a miss, face (N,) -1 on a miss, normal (N, 3) facing
        the ray). Faces index the combined attribute arrays (`surface`, `instance`, `albedo`, `seed`)."""
        o32 = np.ascontiguousarray(origins, np.float32)
        d32 = np.ascontiguousarray(dirs, np.float32)
        n = len(o32)
        dist = np.full(n, np.inf, dtype=np.float32)
        face = np.full(n, -1, dtype=np.int64)
        for scene, offset in self._layers():
            res = scene.run(o32, d32, output=1)
            closer = (res["primID"] >= 0) & (res["tfar"] < dist)
            np.copyto(dist, res["tfar"], where=closer)
            np.copyto(face, res["primID"] + offset, where=closer)
        normal = np.zeros((n, 3))
        hit = np.nonzero(face >= 0)[0]
        nh = self._normals[face[hit]]
        normal[hit] = nh * np.where(np.einsum("ij,ij->i", nh, dirs[hit]) > 0, -1.0, 1.0)[:, None]
        return dist.astype(np.float64), face, normal

    def occluded(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """(N,) bool: the ray hits anything (shadow rays)."""
        o32 = np.ascontiguousarray(origins, np.float32)
        d32 = np.ascontiguousarray(dirs, np.float32)
        blocked = np.zeros(len(o32), dtype=bool)
        for scene, _ in self._layers():
            blocked |= scene.run(o32, d32, query="OCCLUDED") >= 0
        return blocked


# ---------------------------------------------------------------------------------------------------
# LiDAR
# ---------------------------------------------------------------------------------------------------

_REFLECTIVITY = surface_table("reflectivity")


@dataclass
class LidarScan:
    points: np.ndarray  # (N, 5) float32: x, y, z (LiDAR frame), intensity, ring
    surface: np.ndarray  # (N,) int64
    instance: np.ndarray  # (N,) int64


def lidar_directions(spec: LidarSpec) -> tuple[np.ndarray, np.ndarray]:
    """Unit directions (B * A, 3) in the LiDAR frame, firing order (azimuth-major), and their ring index."""
    elev = np.deg2rad(np.linspace(spec.elevation_deg[0], spec.elevation_deg[1], spec.beams))
    az = np.linspace(np.pi, -np.pi, spec.azimuth_steps, endpoint=False)  # clockwise seen from above
    a, e = np.meshgrid(az, elev, indexing="ij")
    dirs = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3)
    ring = np.tile(np.arange(spec.beams)[::-1], spec.azimuth_steps)  # ring 0 = lowest beam
    return dirs, ring


def scan_lidar(caster: RayCaster, rig: Rig, T_world_lidar: np.ndarray, rng: np.random.Generator) -> LidarScan:
    spec = rig.lidar
    dirs_l, ring = lidar_directions(spec)
    if spec.frame == "nuscenes":  # x right, y forward: start the sweep behind the car, as nuScenes does
        dirs_l = dirs_l[:, [1, 0, 2]] * np.array([-1.0, 1.0, 1.0])
    R, o = T_world_lidar[:3, :3], T_world_lidar[:3, 3]
    dirs_w = dirs_l @ R.T
    dist, face, normal = caster.cast(np.broadcast_to(o, dirs_w.shape).copy(), dirs_w)
    keep = (face >= 0) & (dist >= spec.min_range) & (dist <= spec.max_range)
    cos_inc = np.abs(np.einsum("ij,ij->i", normal, dirs_w))
    keep &= cos_inc > 0.03  # grazing returns are lost
    keep &= rng.random(len(dist)) >= spec.dropout
    r = dist[keep] + rng.normal(0.0, spec.range_noise, int(keep.sum()))
    xyz = dirs_l[keep] * r[:, None]
    surface = caster.surface[face[keep]]
    refl = _REFLECTIVITY[surface] * (0.3 + 0.7 * cos_inc[keep]) * np.clip(1.2 - r / spec.max_range, 0.2, 1.0)
    refl = np.clip(refl * rng.uniform(0.9, 1.1, len(r)), 0.0, 1.0)
    intensity = refl * rig.lidar_intensity_scale
    if rig.lidar_intensity_scale > 1:
        intensity = np.round(intensity)
    points = np.column_stack([xyz, intensity, ring[keep]]).astype(np.float32)
    return LidarScan(points, surface, caster.instance[face[keep]])


# ---------------------------------------------------------------------------------------------------
# Cameras
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Lighting:
    sun_dir: np.ndarray  # (3,) unit vector towards the sun (world)
    sun: float
    ambient: float
    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    noise: float  # sensor noise sigma (0..1 scale, after gamma)
    exposure: float
    headlights: float  # intensity of the ego's headlights (0 = off)
    lamps: float  # intensity of street lamps (0 = off)


def make_lighting(time_of_day: str, rng: np.random.Generator) -> Lighting:
    az = rng.uniform(-np.pi, np.pi)
    if time_of_day == "night":
        el = np.deg2rad(-20)
        sun_dir = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        return Lighting(sun_dir, 0.0, 0.012, (0.01, 0.012, 0.03), (0.04, 0.035, 0.05), 0.045, 1.0, 25.0, 10.0)
    el = np.deg2rad(rng.uniform(25, 65))
    sun_dir = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return Lighting(sun_dir, rng.uniform(0.8, 1.1), rng.uniform(0.3, 0.45), (0.35, 0.55, 0.9), (0.75, 0.82, 0.9),
                    0.012, 1.0, 0.0, 0.0)


@dataclass
class CameraRender:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    surface: np.ndarray  # (H, W) int64, -1 = sky
    instance: np.ndarray  # (H, W) int64, 0 = none
    depth: np.ndarray  # (H, W) float32 z-depth in metres, 0 = sky


@functools.cache
def _camera_rays(spec: CameraSpec) -> tuple[np.ndarray, np.ndarray]:
    """Unit ray directions (H*W, 3) through the pixel centres in the camera frame, and 1 / their z."""
    K = intrinsics(spec)
    vv, uu = np.meshgrid(np.arange(spec.height) + 0.5, np.arange(spec.width) + 0.5, indexing="ij")
    rays = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones_like(uu)], -1).reshape(-1, 3)
    norm = np.linalg.norm(rays, axis=1)
    rays = rays / norm[:, None]
    rays.flags.writeable = False
    return rays, (1.0 / norm)


def render_camera(
    caster: RayCaster,
    rig: Rig,
    spec: CameraSpec,
    T_world_cam: np.ndarray,
    T_world_ego: np.ndarray,
    lighting: Lighting,
    lamps: np.ndarray,
    rng: np.random.Generator,
) -> CameraRender:
    h, w = spec.height, spec.width
    rays, z_of_unit = _camera_rays(spec)
    dirs = rays @ T_world_cam[:3, :3].T
    origin = T_world_cam[:3, 3]
    dist, face, normal = caster.cast(np.broadcast_to(origin, dirs.shape), dirs)
    hit = face >= 0
    surface = np.where(hit, caster.surface[np.maximum(face, 0)], -1)
    instance = np.where(hit, caster.instance[np.maximum(face, 0)], 0)
    depth = np.where(hit, dist * z_of_unit, 0.0).astype(np.float32)

    rgb = np.empty((len(dirs), 3), dtype=np.float32)
    # Sky: a vertical gradient.
    up = np.clip(dirs[~hit, 2], 0, 1)[:, None]
    rgb[~hit] = (1 - up) * np.asarray(lighting.sky_horizon) + up * np.asarray(lighting.sky_top)
    # Surfaces: albedo x (ambient + sun with cast shadows + artificial lights).
    idx = np.nonzero(hit)[0]
    pos = origin + dirs[idx] * dist[idx, None]
    n = normal[idx]
    f = face[idx]
    albedo = texture_albedo(caster.surface[f], caster.albedo[f], pos, n, caster.seed[f])
    light = lighting.ambient * (0.6 + 0.4 * np.clip(n[:, 2], 0, 1))
    if lighting.sun > 0:
        lambert = np.clip(n @ lighting.sun_dir, 0, None)
        lit = np.nonzero(lambert > 0)[0]
        shadow_origin = pos[lit] + n[lit] * 0.03
        blocked = caster.occluded(shadow_origin, np.broadcast_to(lighting.sun_dir, shadow_origin.shape))
        sun = np.zeros(len(idx))
        sun[lit] = lambert[lit] * ~blocked
        light = light + lighting.sun * sun
    if lighting.headlights > 0:
        fwd = T_world_ego[:3, 0]
        for side in (-0.7, 0.7):
            src = T_world_ego[:3, 3] + 2.0 * fwd + side * T_world_ego[:3, 1] + np.array([0, 0, 0.7])
            light = light + lighting.headlights * _point_light(pos, n, src, cone_axis=fwd)
    if lighting.lamps > 0 and len(lamps):
        for lamp in lamps[np.linalg.norm(lamps[:, :2] - origin[:2], axis=1) < 60]:
            light = light + lighting.lamps * _point_light(pos, n, lamp)
    rgb[idx] = albedo * (light * lighting.exposure)[:, None]
    rgb = np.clip(rgb @ np.asarray(rig.color_matrix, dtype=np.float32).T, 0, 1)
    rgb = _gamma(rgb)
    noise = rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(lighting.noise)
    rgb += noise * (1.0 + 2.0 * (1 - rgb))  # darker pixels are noisier
    image = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(h, w, 3)
    return CameraRender(image, surface.reshape(h, w), instance.reshape(h, w), depth.reshape(h, w))


def _point_light(pos: np.ndarray, n: np.ndarray, src: np.ndarray, cone_axis: np.ndarray | None = None) -> np.ndarray:
    """Irradiance factor of a point light at `src` on surfaces (pos, normal): cos / d^2 (x a ~40 deg cone)."""
    to_src = src - pos
    d2 = np.einsum("ij,ij->i", to_src, to_src)
    l_dir = to_src / np.sqrt(d2)[:, None]
    out = np.clip(np.einsum("ij,ij->i", n, l_dir), 0, None) / d2
    if cone_axis is not None:
        out *= np.clip((-(l_dir @ cone_axis) - 0.75) / 0.25, 0, 1)
    return out


_GAMMA_LUT = (np.linspace(0, 1, 4097) ** (1 / 2.2)).astype(np.float32)


def _gamma(rgb: np.ndarray) -> np.ndarray:
    """x ** (1 / 2.2) for x in [0, 1] via a 4097-entry table (np.power is the slowest step otherwise)."""
    return _GAMMA_LUT[(rgb * 4096 + 0.5).astype(np.int32)]
