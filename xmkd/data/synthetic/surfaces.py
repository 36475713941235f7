"""Surface materials of the synthetic world and their procedural textures.

Every triangle of a scene carries a surface id (an index into `SURFACES`). A surface fixes the semantic
classes it is labelled with in each written format (nuScenes-lidarseg fine name, SemanticKITTI raw id),
the LiDAR reflectivity and the texture kind; the base colour is chosen per instance by the world, so colour
alone does not give the class: a grey car, grey asphalt and a grey facade differ only in shape and texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Surface:
    name: str
    nuscenes: str  # nuScenes-lidarseg fine class name
    semantickitti: int  # SemanticKITTI raw id
    texture: str  # texture kind, see `texture_albedo`
    reflectivity: float  # LiDAR return strength for a surface facing the beam, 0..1
    thing: bool = False  # part of an object with a 3D box


SURFACES: tuple[Surface, ...] = (
    Surface("road", "flat.driveable_surface", 40, "asphalt", 0.12),
    Surface("lane_marking", "flat.driveable_surface", 60, "marking", 0.75),
    Surface("sidewalk", "flat.sidewalk", 48, "tiles", 0.25),
    Surface("curb", "flat.sidewalk", 48, "concrete", 0.3),
    Surface("terrain", "flat.terrain", 72, "grass", 0.35),
    Surface("flat_other", "flat.other", 49, "gravel", 0.2),
    Surface("building", "static.manmade", 50, "facade", 0.3),
    Surface("pole", "static.manmade", 80, "metal", 0.45),
    Surface("traffic_sign", "static.manmade", 81, "sign", 0.95),
    Surface("trunk", "static.vegetation", 71, "bark", 0.3),
    Surface("foliage", "static.vegetation", 70, "foliage", 0.4),
    Surface("barrier", "movable_object.barrier", 51, "stripes", 0.5, True),
    Surface("traffic_cone", "movable_object.trafficcone", 99, "stripes", 0.8, True),
    Surface("car", "vehicle.car", 10, "paint", 0.4, True),
    Surface("car_glass", "vehicle.car", 10, "glass", 0.06, True),
    Surface("wheel", "vehicle.car", 10, "rubber", 0.1, True),
    Surface("truck", "vehicle.truck", 18, "paint", 0.4, True),
    Surface("bus", "vehicle.bus.rigid", 13, "paint", 0.4, True),
    Surface("trailer", "vehicle.trailer", 20, "paint", 0.35, True),
    Surface("construction_vehicle", "vehicle.construction", 20, "paint", 0.45, True),
    Surface("motorcycle", "vehicle.motorcycle", 15, "paint", 0.4, True),
    Surface("bicycle", "vehicle.bicycle", 11, "metal", 0.35, True),
    Surface("pedestrian", "human.pedestrian.adult", 30, "cloth", 0.3, True),
    Surface("cyclist", "human.pedestrian.adult", 31, "cloth", 0.3, True),
    Surface("motorcyclist", "human.pedestrian.adult", 32, "cloth", 0.3, True),
)
SURFACE_ID = {s.name: i for i, s in enumerate(SURFACES)}


def surface_table(attr: str) -> np.ndarray:
    """Per-surface column as an array, e.g. surface_table('reflectivity')."""
    return np.array([getattr(s, attr) for s in SURFACES])


def _hash_noise(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Deterministic value noise in [0, 1) per integer lattice cell (and per instance seed)."""
    h = (ix.astype(np.uint64) * np.uint64(73856093)) ^ (iy.astype(np.uint64) * np.uint64(19349663))
    h ^= iz.astype(np.uint64) * np.uint64(83492791)
    h ^= seed.astype(np.uint64) * np.uint64(2654435761)
    h ^= h >> np.uint64(13)
    h *= np.uint64(0x5BD1E995)
    h ^= h >> np.uint64(15)
    return (h & np.uint64(0xFFFFFF)).astype(np.float64) / float(0x1000000)


def _cell_noise(pos: np.ndarray, cell: float, seed: np.ndarray) -> np.ndarray:
    c = np.floor(pos / cell).astype(np.int64)
    return _hash_noise(c[:, 0], c[:, 1], c[:, 2], seed)


TEXTURES = tuple(sorted({s.texture for s in SURFACES}))
SURFACE_TEXTURE = np.array([TEXTURES.index(s.texture) for s in SURFACES])  # surface id -> texture code


def texture_albedo(
    surface: np.ndarray, base: np.ndarray, pos: np.ndarray, normal: np.ndarray, seed: np.ndarray
) -> np.ndarray:
    """Albedo (N, 3) in [0, 1] of N surface points from their surface id (N,), per-instance base colour
    (N, 3), world position (N, 3), unit normal (N, 3) and per-instance texture seed (N,)."""
    out = base.astype(np.float64).copy()
    codes = SURFACE_TEXTURE[surface]
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(TEXTURES) + 1))
    for code, kind in enumerate(TEXTURES):
        m = order[bounds[code]:bounds[code + 1]]
        if len(m) == 0:
            continue
        p, b, s, n = pos[m], out[m], seed[m], normal[m]
        fine = _cell_noise(p, 0.07, s)
        if kind == "asphalt":
            out[m] = b * (0.8 + 0.4 * fine[:, None]) * (0.9 + 0.2 * _cell_noise(p, 0.9, s + 1)[:, None])
        elif kind == "marking":
            out[m] = b * (0.9 + 0.1 * fine[:, None])
        elif kind == "tiles":
            size = 0.3 + 0.3 * _hash_noise(s, s, s, s)[:, None]  # tile size per instance, 0.3 .. 0.6 m
            f = np.mod(p[:, :2] / size, 1.0)
            grout = (f < 0.07).any(1)
            tile = _cell_noise(p / size.repeat(3, 1), 1.0, s)
            shade = np.where(grout, 0.45, 0.85 + 0.3 * tile)
            out[m] = b * shade[:, None]
        elif kind == "grass":
            blade = _cell_noise(p, 0.05, s)
            patch = _cell_noise(p, 0.6, s + 7)
            dry = np.array([0.55, 0.45, 0.25])
            mix = (0.5 * patch)[:, None]
            out[m] = ((1 - mix) * b + mix * dry) * (0.55 + 0.9 * blade[:, None])
        elif kind == "gravel":
            out[m] = b * (0.6 + 0.8 * _cell_noise(p, 0.04, s)[:, None])
        elif kind == "facade":
            horizontal = np.where(np.abs(n[:, 1]) > np.abs(n[:, 0]), p[:, 0], p[:, 1])
            spacing = 2.5 + 1.5 * _hash_noise(s, s + 3, s, s)
            floor_h = 3.0 + 0.6 * _hash_noise(s, s, s + 5, s)
            fu = np.mod(horizontal / spacing, 1.0)
            fz = np.mod(p[:, 2] / floor_h, 1.0)
            window = (fu > 0.25) & (fu < 0.75) & (fz > 0.3) & (fz < 0.85) & (p[:, 2] > 1.0) & (np.abs(n[:, 2]) < 0.5)
            glass = np.array([0.12, 0.14, 0.2]) * (0.7 + 0.8 * _cell_noise(p, 1.0, s + 11))[:, None]
            wall = b * (0.85 + 0.3 * fine[:, None])
            roof = np.abs(n[:, 2]) > 0.5
            out[m] = np.where(window[:, None], glass, np.where(roof[:, None], wall * 0.6, wall))
        elif kind in ("paint", "cloth", "metal", "sign"):
            out[m] = b * (0.93 + 0.14 * fine[:, None])
        elif kind == "glass":
            out[m] = np.array([0.08, 0.1, 0.13]) * (0.8 + 0.4 * fine[:, None])
        elif kind == "rubber":
            out[m] = np.array([0.05, 0.05, 0.05]) + 0.03 * fine[:, None]
        elif kind == "bark":
            stripes = _cell_noise(p * np.array([12.0, 12.0, 1.5]), 1.0, s)
            out[m] = b * (0.6 + 0.6 * stripes[:, None])
        elif kind == "foliage":
            leaf = _cell_noise(p, 0.12, s)
            out[m] = b * (0.35 + 1.1 * leaf[:, None])
        elif kind == "stripes":
            band = np.mod(np.floor(p[:, 2] / 0.15), 2) == 0
            out[m] = np.where(band[:, None], np.array([0.92, 0.92, 0.9]), b)
        elif kind == "concrete":
            out[m] = b * (0.8 + 0.35 * fine[:, None])
        else:  # unknown kinds keep their base colour
            out[m] = b
    return np.clip(out, 0.0, 1.0)
