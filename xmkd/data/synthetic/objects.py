"""Object categories of the synthetic world (the things that get 3D boxes) and their procedural meshes.

Meshes are built in the object's box frame: centre at the origin, x forward, z up, fitting the box
(dx, dy, dz) so that the box is tight. Sizes follow the real datasets' typical dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xmkd.data.synthetic.meshes import Mesh, MeshBuilder


@dataclass(frozen=True)
class Category:
    name: str
    nuscenes: str  # nuScenes category of its box (sample_annotation)
    kitti: str  # KITTI object class ("" = not annotated in KITTI)
    size: tuple[float, float, float]  # mean (dx = length, dy = width, dz = height)
    size_std: tuple[float, float, float]
    moving_attribute: str
    parked_attribute: str


CATEGORIES: dict[str, Category] = {c.name: c for c in (
    Category("car", "vehicle.car", "Car", (4.3, 1.85, 1.55), (0.35, 0.08, 0.08), "vehicle.moving", "vehicle.parked"),
    Category("van", "vehicle.car", "Van", (5.0, 2.0, 2.1), (0.3, 0.08, 0.1), "vehicle.moving", "vehicle.parked"),
    Category("truck", "vehicle.truck", "Truck", (7.5, 2.45, 3.1), (1.2, 0.1, 0.25), "vehicle.moving",
             "vehicle.parked"),
    Category("bus", "vehicle.bus.rigid", "Misc", (11.5, 2.6, 3.3), (0.8, 0.05, 0.1), "vehicle.moving",
             "vehicle.parked"),
    Category("trailer", "vehicle.trailer", "Misc", (8.5, 2.5, 3.6), (1.0, 0.05, 0.2), "vehicle.moving",
             "vehicle.parked"),
    Category("construction_vehicle", "vehicle.construction", "Misc", (6.2, 2.7, 3.2), (0.6, 0.1, 0.2),
             "vehicle.moving", "vehicle.parked"),
    Category("motorcycle", "vehicle.motorcycle", "Misc", (2.1, 0.8, 1.5), (0.1, 0.05, 0.05), "cycle.with_rider",
             "cycle.without_rider"),
    Category("cyclist", "vehicle.bicycle", "Cyclist", (1.75, 0.6, 1.75), (0.08, 0.04, 0.06), "cycle.with_rider",
             "cycle.with_rider"),
    Category("pedestrian", "human.pedestrian.adult", "Pedestrian", (0.65, 0.65, 1.75), (0.05, 0.05, 0.1),
             "pedestrian.moving", "pedestrian.standing"),
    Category("barrier", "movable_object.barrier", "", (2.0, 0.45, 0.95), (0.2, 0.03, 0.05), "", ""),
    Category("traffic_cone", "movable_object.trafficcone", "", (0.4, 0.4, 0.75), (0.02, 0.02, 0.04), "", ""),
)}

_WHEEL_DARK = (0.05, 0.05, 0.05)


def sample_size(cat: Category, rng: np.random.Generator) -> np.ndarray:
    size = np.asarray(cat.size) + rng.normal(size=3) * np.asarray(cat.size_std)
    return np.maximum(size, 0.5 * np.asarray(cat.size))


def _wheels(b: MeshBuilder, l: float, w: float, h: float, radius: float, axles: list[float]) -> None:
    for x in axles:
        for side in (-1, 1):
            b.cylinder((x, side * (w / 2 - 0.13), -h / 2 + radius), radius, 0.24, "wheel", _WHEEL_DARK, axis="y")


def _person(b: MeshBuilder, surface: str, x: float, z0: float, height: float, clothes, skin,
            rng: np.random.Generator, seated: bool = False) -> None:
    """A person standing on z0 (or sitting, for riders), facing +x, `height` tall."""
    s = height / 1.75
    if not seated:
        for side in (-1, 1):
            b.box((x - 0.08 * s, side * 0.11 * s - 0.07 * s, z0), (x + 0.08 * s, side * 0.11 * s + 0.07 * s,
                  z0 + 0.85 * s), surface, clothes[1])
        torso_z = z0 + 0.85 * s
    else:
        torso_z = z0
        b.box((x, -0.18 * s, z0 - 0.05), (x + 0.45 * s, 0.18 * s, z0 + 0.1), surface, clothes[1])
    b.box((x - 0.12 * s, -0.2 * s, torso_z), (x + 0.12 * s, 0.2 * s, torso_z + 0.6 * s), surface, clothes[0])
    for side in (-1, 1):
        b.box((x - 0.05 * s, side * 0.24 * s - 0.05 * s, torso_z + 0.05 * s),
              (x + 0.05 * s + (0.25 * s if seated else 0), side * 0.24 * s + 0.05 * s, torso_z + 0.58 * s),
              surface, clothes[0])
    b.ellipsoid((x, 0, torso_z + 0.6 * s + 0.12 * s), (0.1 * s, 0.09 * s, 0.12 * s), surface, skin)


def build_object(kind: str, size: np.ndarray, instance: int, color: np.ndarray, rng: np.random.Generator) -> Mesh:
    """Mesh of one object of category `kind` filling the box `size` = (dx, dy, dz), in its box frame."""
    l, w, h = (float(v) for v in size)
    seed = int(rng.integers(1 << 30))
    b = MeshBuilder(instance, seed)
    lo_z = -h / 2
    if kind in ("car", "van"):
        r = 0.3 * h / 1.5 if kind == "car" else 0.36
        _wheels(b, l, w, h, r, [l / 2 - 0.75, -l / 2 + 0.8])
        body_top = lo_z + (0.55 if kind == "car" else 0.5) * h
        b.box((-l / 2, -w / 2, lo_z + 0.7 * r), (l / 2, w / 2, body_top), "car", color)
        front = l / 2 - (0.3 if kind == "car" else 0.12) * l
        back = -l / 2 + (0.2 if kind == "car" else 0.03) * l
        b.box((back, -w / 2 + 0.06, body_top), (front, w / 2 - 0.06, h / 2 - 0.06), "car_glass", color)
        b.box((back + 0.05, -w / 2 + 0.1, h / 2 - 0.06), (front - 0.05, w / 2 - 0.1, h / 2), "car", color)
    elif kind == "truck":
        _wheels(b, l, w, h, 0.48, [l / 2 - 1.0, -l / 2 + 1.2, -l / 2 + 2.4])
        cab = min(2.3, 0.35 * l)
        b.box((l / 2 - cab, -w / 2, lo_z + 0.45), (l / 2, w / 2, lo_z + 0.62 * h), "truck", color)
        b.box((l / 2 - cab + 0.1, -w / 2 + 0.05, lo_z + 0.62 * h), (l / 2 - 0.15, w / 2 - 0.05, lo_z + 0.85 * h),
              "car_glass", color)
        b.box((-l / 2, -w / 2, lo_z + 0.75), (l / 2 - cab - 0.15, w / 2, h / 2), "truck",
              rng.uniform(0.5, 0.95, 3))
    elif kind == "bus":
        _wheels(b, l, w, h, 0.5, [l / 2 - 2.2, -l / 2 + 2.8])
        b.box((-l / 2, -w / 2, lo_z + 0.35), (l / 2, w / 2, lo_z + 0.45 * h), "bus", color)
        b.box((-l / 2 + 0.05, -w / 2 + 0.03, lo_z + 0.45 * h), (l / 2 - 0.05, w / 2 - 0.03, lo_z + 0.82 * h),
              "car_glass", color)
        b.box((-l / 2, -w / 2, lo_z + 0.82 * h), (l / 2, w / 2, h / 2), "bus", color)
    elif kind == "trailer":
        _wheels(b, l, w, h, 0.45, [-l / 2 + 1.0, -l / 2 + 2.1])
        b.box((-l / 2, -w / 2, lo_z + 1.0), (l / 2 - 0.6, w / 2, h / 2), "trailer", color)
        b.box((l / 2 - 0.6, -0.1, lo_z + 0.9), (l / 2, 0.1, lo_z + 1.05), "trailer", (0.2, 0.2, 0.2))
    elif kind == "construction_vehicle":
        _wheels(b, l, w, h, 0.6, [l / 2 - 1.1, -l / 2 + 1.3])
        b.box((-l / 2, -w / 2, lo_z + 0.6), (l / 2 - 1.2, w / 2, lo_z + 0.55 * h), "construction_vehicle", color)
        b.box((-l / 2 + 0.6, -w / 4, lo_z + 0.55 * h), (0.5, w / 2 - 0.1, h / 2), "car_glass", color)
        b.box((l / 2 - 1.25, -0.25, lo_z + 0.5), (l / 2, 0.25, lo_z + 0.75), "construction_vehicle", color)
        b.box((l / 2 - 0.5, -w / 2, lo_z + 0.05), (l / 2, w / 2, lo_z + 0.8), "construction_vehicle",
              (0.3, 0.3, 0.3))
    elif kind in ("motorcycle", "cyclist"):
        r = 0.32 if kind == "motorcycle" else 0.34
        for x in (l / 2 - r, -l / 2 + r):
            b.cylinder((x, 0, lo_z + r), r, 0.1 if kind == "motorcycle" else 0.05,
                       "wheel" if kind == "motorcycle" else "bicycle", _WHEEL_DARK, axis="y")
        frame_surface = "motorcycle" if kind == "motorcycle" else "bicycle"
        thick = 0.35 if kind == "motorcycle" else 0.06
        b.box((-l / 2 + r, -thick / 2, lo_z + r), (l / 2 - r, thick / 2, lo_z + 2.2 * r), frame_surface, color)
        rider_surface = "motorcyclist" if kind == "motorcycle" else "cyclist"
        clothes = (rng.uniform(0.05, 0.9, 3), rng.uniform(0.05, 0.5, 3))
        seat = lo_z + 2.2 * r
        # a seated person is 0.85 * scale tall above the seat; scale it to reach the box top
        _person(b, rider_surface, -0.15, seat, 1.75 * (h / 2 - seat) / 0.85, clothes, (0.8, 0.6, 0.5), rng,
                seated=True)
    elif kind == "pedestrian":
        clothes = (rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.6, 3))
        skin = np.array([0.85, 0.65, 0.5]) * rng.uniform(0.4, 1.1)
        _person(b, "pedestrian", 0.0, lo_z, h - 0.02, clothes, np.clip(skin, 0, 1), rng)
    elif kind == "barrier":
        b.box((-l / 2, -w / 2, lo_z), (l / 2, w / 2, lo_z + 0.2), "barrier", (0.6, 0.6, 0.6))
        b.box((-l / 2, -w / 4, lo_z + 0.2), (l / 2, w / 4, h / 2), "barrier", color)
    elif kind == "traffic_cone":
        b.box((-l / 2, -w / 2, lo_z), (l / 2, w / 2, lo_z + 0.04), "traffic_cone", (0.1, 0.1, 0.1))
        b.cone((0, 0, lo_z + 0.04), 0.8 * l / 2, h - 0.04, "traffic_cone", color)
    else:
        raise ValueError(f"unknown object kind {kind!r}")
    return b.build()
