"""Procedural street scenes: layout from a seed and domain presets, objects, ego trajectory.

World frame: the street runs along +x, z up, ground at z = 0; the ego drives along +x in the right-hand
lane. A scene is a fixed layout with moving objects (constant velocity along the street) observed over
a few seconds. Domains (`day`/`night`, `city-a`/`city-b`, `rig-a`/`rig-b`) combine freely; they are the
source/target pairs of the domain-adaptation recipes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xmkd.data.synthetic.meshes import Mesh, MeshBuilder, yaw_transform
from xmkd.data.synthetic.objects import CATEGORIES, build_object, sample_size
from xmkd.errors import XmkdError

STREET_X = (-90.0, 130.0)  # street extent along x; the ego stays near x = 0
SIDEWALK_HEIGHT = 0.15


@dataclass(frozen=True)
class Domain:
    time: str = "day"  # day | night
    city: str = "city-a"  # city-a | city-b
    rig: str = "rig-a"  # rig-a | rig-b

    @property
    def name(self) -> str:
        return f"{self.time},{self.city},{self.rig}"


PRESET_GROUPS = {"day": "time", "night": "time", "city-a": "city", "city-b": "city", "rig-a": "rig", "rig-b": "rig"}


def parse_domain(preset: str) -> Domain:
    """'night,city-b' -> Domain(time='night', city='city-b', rig='rig-a'); unknown or conflicting names fail."""
    values: dict[str, str] = {}
    for name in (p.strip() for p in preset.split(",") if p.strip()):
        group = PRESET_GROUPS.get(name)
        if group is None:
            raise XmkdError(f"unknown preset {name!r}; choose from {', '.join(PRESET_GROUPS)}")
        if group in values and values[group] != name:
            raise XmkdError(f"presets {values[group]!r} and {name!r} conflict (both set the {group})")
        values[group] = name
    return Domain(**values)


@dataclass(frozen=True)
class CityStyle:
    lane_width: float
    lanes_per_direction: tuple[int, ...]
    sidewalk_width: tuple[float, float]
    verge_width: tuple[float, float]  # grass strip between sidewalk and buildings
    building_gap: float  # probability of a gap instead of a building
    building_height: tuple[float, float]
    building_palette: tuple[tuple[float, float, float], ...]
    tile_palette: tuple[tuple[float, float, float], ...]
    tree_spacing: tuple[float, float]
    bush_density: float  # bushes per metre of verge
    clutter: float  # probability of a construction zone (cones, barriers, construction vehicle)
    parked_density: float  # parked vehicles per metre of curb
    traffic_density: float  # moving vehicles per metre of lane
    pedestrian_density: float  # per metre of sidewalk


CITIES = {
    "city-a": CityStyle(  # a North-American downtown: wide lanes, tall grey/glass blocks, little green
        3.6, (1, 2), (3.0, 4.5), (0.0, 3.0), 0.1, (10.0, 35.0),
        ((0.55, 0.55, 0.58), (0.7, 0.68, 0.64), (0.4, 0.42, 0.46), (0.62, 0.5, 0.42), (0.8, 0.8, 0.78)),
        ((0.62, 0.6, 0.57), (0.5, 0.5, 0.5), (0.66, 0.62, 0.55)),
        (12.0, 22.0), 0.05, 0.25, 0.05, 0.025, 0.06),
    "city-b": CityStyle(  # a South-East-Asian suburb: narrow lanes, low colourful houses, dense vegetation
        3.0, (1,), (2.0, 3.0), (2.0, 6.0), 0.25, (5.0, 14.0),
        ((0.85, 0.75, 0.55), (0.9, 0.85, 0.75), (0.75, 0.45, 0.35), (0.6, 0.75, 0.7), (0.9, 0.9, 0.85)),
        ((0.7, 0.55, 0.5), (0.6, 0.6, 0.55), (0.75, 0.7, 0.6)),
        (5.0, 10.0), 0.25, 0.4, 0.08, 0.02, 0.09),
}


@dataclass
class SceneObject:
    """A thing with a 3D box, moving at constant velocity (zero when parked)."""

    instance_id: int
    kind: str  # key of CATEGORIES
    size: np.ndarray  # (3,) dx, dy, dz
    position: np.ndarray  # (3,) box centre at t = 0 (world)
    yaw: float
    velocity: np.ndarray  # (2,) world xy, m/s
    mesh: Mesh  # in the box frame

    @property
    def moving(self) -> bool:
        return bool(np.any(self.velocity != 0))

    @property
    def category(self):
        return CATEGORIES[self.kind]

    def box_at(self, t: float) -> np.ndarray:
        """(7,) = (x, y, z, dx, dy, dz, yaw) in the world frame at time t."""
        c = self.position.copy()
        c[:2] += self.velocity * t
        return np.concatenate([c, self.size, [self.yaw]])

    def transform_at(self, t: float) -> np.ndarray:
        b = self.box_at(t)
        return yaw_transform(b[0], b[1], b[2], b[6])


@dataclass
class Scene:
    seed: int
    index: int
    domain: Domain
    static: Mesh  # everything that does not move, parked objects included
    objects: list[SceneObject]  # every thing with a box (parked and moving)
    lamps: np.ndarray  # (L, 3) street-lamp light positions
    ego_speed: float  # m/s along +x
    ego_lane_y: float
    ego_start_x: float
    description: str = ""
    meta: dict = field(default_factory=dict)

    def ego_pose(self, t: float) -> np.ndarray:
        """T_world_ego at time t (x forward, y left, z up; a gentle lane-keeping sway)."""
        x = self.ego_start_x + self.ego_speed * t
        y = self.ego_lane_y + 0.15 * np.sin(0.4 * t + self.index)
        yaw = 0.06 * np.cos(0.4 * t + self.index)
        return yaw_transform(x, y, 0.0, yaw)

    @property
    def moving_objects(self) -> list[SceneObject]:
        return [o for o in self.objects if o.moving]


class _Ids:
    def __init__(self) -> None:
        self.next = 1

    def __call__(self) -> int:
        self.next += 1
        return self.next - 1


def _tight(mesh: Mesh) -> tuple[Mesh, np.ndarray, np.ndarray]:
    """Recentre a box-frame mesh on its bounding box: (mesh, size, centre offset in the box frame)."""
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    centre = (lo + hi) / 2
    moved = Mesh(mesh.vertices - centre, mesh.faces, mesh.surface, mesh.instance, mesh.albedo, mesh.seed)
    return moved, hi - lo, centre


def _vehicle_color(rng: np.random.Generator) -> np.ndarray:
    # Greys, whites and blacks as often as colours, so paint alone does not separate cars from asphalt.
    if rng.random() < 0.55:
        return np.full(3, rng.uniform(0.08, 0.9)) * rng.uniform(0.95, 1.05, 3)
    return rng.uniform(0.05, 0.95, 3)


def _place(objects: list[SceneObject], ids: _Ids, rng: np.random.Generator, kind: str, x: float, y: float,
           ground: float, yaw: float, speed: float = 0.0, color: np.ndarray | None = None) -> SceneObject:
    cat = CATEGORIES[kind]
    inst = ids()
    size = sample_size(cat, rng)
    mesh = build_object(kind, size, inst, _vehicle_color(rng) if color is None else color, rng)
    mesh, size, _ = _tight(mesh)
    velocity = speed * np.array([np.cos(yaw), np.sin(yaw)])
    obj = SceneObject(inst, kind, size, np.array([x, y, ground + size[2] / 2]), yaw, velocity, mesh)
    objects.append(obj)
    return obj


def _free(objects: list[SceneObject], x: float, y: float, radius: float) -> bool:
    return all(np.hypot(o.position[0] - x, o.position[1] - y) > radius + 0.5 * np.hypot(*o.size[:2])
               for o in objects if not o.moving)


def _meets_ego(x: float, v: float, ego_x: float, ego_v: float, duration: float, gap: float = 15.0) -> bool:
    """Would a vehicle at x with speed v come within `gap` metres of the ego in its lane during the scene?"""
    rel0 = x - ego_x
    rel1 = rel0 + (v - ego_v) * duration
    return np.sign(rel0) != np.sign(rel1) or min(abs(rel0), abs(rel1)) < gap


def generate_scene(seed: int, index: int, domain: Domain, duration: float = 5.0) -> Scene:
    """Build scene `index` of the dataset with `seed` (deterministic) for `domain`."""
    rng = np.random.default_rng([seed, index, 0x5CE7E])
    style = CITIES[domain.city]
    ids = _Ids()
    x0, x1 = STREET_X
    lanes = int(rng.choice(style.lanes_per_direction))
    lane_w = style.lane_width * rng.uniform(0.95, 1.05)
    park_w = 3.5  # on each side, outside the edge line: a 1 m cycle strip, then parking along the curb
    half_road = lanes * lane_w + park_w
    parts: list[Mesh] = []
    objects: list[SceneObject] = []

    # Road, markings, curbs, sidewalks, verges, far ground.
    stuff = MeshBuilder(ids(), int(rng.integers(1 << 30)))
    asphalt = np.full(3, rng.uniform(0.22, 0.4))
    stuff.quad([[x0, -half_road, 0], [x1, -half_road, 0], [x1, half_road, 0], [x0, half_road, 0]], "road", asphalt)
    marking = (0.9, 0.9, 0.88) if domain.city == "city-a" else (0.9, 0.8, 0.3)
    dash = np.arange(x0, x1, 9.0)
    for xs in dash:  # dashed centre line
        stuff.quad([[xs, -0.08, 0.01], [xs + 3, -0.08, 0.01], [xs + 3, 0.08, 0.01], [xs, 0.08, 0.01]],
                   "lane_marking", marking)
    for side in (-1, 1):  # solid edge lines between the traffic lanes and the parking lanes
        yl = side * lanes * lane_w
        stuff.quad([[x0, yl - 0.08, 0.01], [x1, yl - 0.08, 0.01], [x1, yl + 0.08, 0.01], [x0, yl + 0.08, 0.01]],
                   "lane_marking", (0.92, 0.92, 0.9))
    sidewalk_w = rng.uniform(*style.sidewalk_width)
    verge_w = rng.uniform(*style.verge_width)
    tile = np.asarray(style.tile_palette[rng.integers(len(style.tile_palette))]) * rng.uniform(0.9, 1.1)
    grass = np.array([0.25, 0.45, 0.15]) * rng.uniform(0.8, 1.2, 3)
    for side in (-1, 1):
        ya, yb = sorted((side * half_road, side * (half_road + 0.2)))
        stuff.box((x0, ya, 0), (x1, yb, SIDEWALK_HEIGHT), "curb", (0.6, 0.6, 0.58))
        ya, yb = sorted((side * (half_road + 0.2), side * (half_road + sidewalk_w)))
        stuff.box((x0, ya, 0), (x1, yb, SIDEWALK_HEIGHT), "sidewalk", tile)
        ya, yb = sorted((side * (half_road + sidewalk_w), side * (half_road + sidewalk_w + verge_w)))
        if verge_w > 0.3:
            stuff.box((x0, ya, 0), (x1, yb, SIDEWALK_HEIGHT - 0.03), "terrain", grass)
    far = half_road + sidewalk_w + verge_w
    for side in (-1, 1):
        ya, yb = sorted((side * far, side * 70.0))
        stuff.quad([[x0, ya, 0], [x1, ya, 0], [x1, yb, 0], [x0, yb, 0]], "terrain", grass * 0.9)
    parts.append(stuff.build())

    # Buildings along both sides, with driveways (flat.other) in the gaps.
    for side in (-1, 1):
        x = x0
        while x < x1:
            width = rng.uniform(8, 25)
            if rng.random() < style.building_gap:
                b = MeshBuilder(ids(), int(rng.integers(1 << 30)))
                ya, yb = sorted((side * far, side * (far + 12)))
                b.box((x + 1, ya, 0), (x + min(width, 6) + 1, yb, 0.05), "flat_other",
                      np.full(3, rng.uniform(0.35, 0.6)))
                parts.append(b.build())
            else:
                depth = rng.uniform(10, 20)
                height = rng.uniform(*style.building_height)
                set_back = rng.uniform(0.0, 2.5)
                color = np.asarray(style.building_palette[rng.integers(len(style.building_palette))])
                b = MeshBuilder(ids(), int(rng.integers(1 << 30)))
                ya, yb = sorted((side * (far + set_back), side * (far + set_back + depth)))
                b.box((x, ya, 0), (x + width - rng.uniform(0.5, 3), yb, height), "building",
                      color * rng.uniform(0.85, 1.1, 3))
                parts.append(b.build())
            x += width

    # Street lamps and signs on the sidewalk edge, trees and bushes on the verge or sidewalk.
    lamps = []
    for side in (-1, 1):
        y_pole = side * (half_road + 0.6)
        for x in np.arange(x0 + rng.uniform(0, 25), x1, 25.0):
            b = MeshBuilder(ids(), int(rng.integers(1 << 30)))
            h = rng.uniform(6.5, 8.0)
            b.cylinder((x, y_pole, h / 2), 0.09, h, "pole", (0.35, 0.35, 0.37))
            b.box((x - 0.3, y_pole - side * 1.2, h - 0.15), (x + 0.3, y_pole, h), "pole", (0.3, 0.3, 0.3))
            lamps.append([x, y_pole - side * 1.0, h - 0.25])
            parts.append(b.build())
        for x in np.arange(x0 + rng.uniform(5, 40), x1, rng.uniform(30, 60)):
            b = MeshBuilder(ids(), int(rng.integers(1 << 30)))
            b.cylinder((x, y_pole + side * 0.3, 1.3), 0.04, 2.6, "pole", (0.5, 0.5, 0.5))
            plate = ((0.1, 0.3, 0.75), (0.8, 0.1, 0.1), (0.9, 0.9, 0.9), (0.95, 0.8, 0.1))[rng.integers(4)]
            b.box((x - 0.3, y_pole + side * 0.3 - 0.03, 2.1), (x + 0.3, y_pole + side * 0.3 + 0.03, 2.7),
                  "traffic_sign", plate)
            parts.append(b.build())
        y_tree = side * (half_road + sidewalk_w + (verge_w / 2 if verge_w > 1.5 else -0.8))
        for x in np.arange(x0 + rng.uniform(0, 10), x1, rng.uniform(*style.tree_spacing)):
            b = MeshBuilder(ids(), int(rng.integers(1 << 30)))
            trunk_h = rng.uniform(1.8, 3.5)
            crown = rng.uniform(1.5, 3.2)
            b.cylinder((x, y_tree, trunk_h / 2), rng.uniform(0.12, 0.25), trunk_h + 0.3, "trunk",
                       (0.35, 0.25, 0.15) * rng.uniform(0.8, 1.2, 3))
            b.ellipsoid((x, y_tree, trunk_h + crown * 0.8), (crown, crown, crown * rng.uniform(0.8, 1.3)),
                        "foliage", np.array([0.18, 0.4, 0.12]) * rng.uniform(0.7, 1.3, 3), subdivisions=2,
                        jitter=0.12, rng=rng)
            parts.append(b.build())
        if verge_w > 1.0:
            for _ in range(rng.poisson(style.bush_density * (x1 - x0))):
                b = MeshBuilder(ids(), int(rng.integers(1 << 30)))
                x = rng.uniform(x0, x1)
                r = rng.uniform(0.4, 1.0)
                y = side * (half_road + sidewalk_w + rng.uniform(r, max(verge_w - r, r + 0.01)))
                b.ellipsoid((x, y, r * 0.7), (r, r, r * 0.8), "foliage",
                            np.array([0.2, 0.45, 0.15]) * rng.uniform(0.6, 1.3, 3), jitter=0.15, rng=rng)
                parts.append(b.build())

    # Parked vehicles along both curbs.
    for side in (-1, 1):
        x = x0 + rng.uniform(0, 10)
        while x < x1:
            kind = rng.choice(["car", "car", "car", "van", "truck", "trailer", "motorcycle"],
                              p=[0.3, 0.2, 0.15, 0.13, 0.08, 0.04, 0.1])
            if rng.random() < style.parked_density * 8:
                yaw = 0.0 if side < 0 else np.pi
                yaw += rng.normal(0, 0.03)
                o = _place(objects, ids, rng, kind, x, side * (half_road - park_w / 2), 0.0, yaw)
                o.position[1] = side * (half_road - o.size[1] / 2 - 0.2)
                x += o.size[0] + rng.uniform(1.0, 4.0)
            else:
                x += rng.uniform(4, 9)

    # A construction zone in a parking lane: cones along the lane edge, barriers, a construction vehicle.
    if rng.random() < style.clutter:
        side = rng.choice([-1, 1])
        xc = rng.uniform(15, 60) * rng.choice([-1, 1])
        zone = [("traffic_cone", xc + 2.5 * k, side * (lanes * lane_w + 0.3), 0.3) for k in range(6)]
        zone += [("barrier", xc + 2.0 + 4.0 * k, side * (half_road - 0.5), 1.0) for k in range(3)]
        zone += [("construction_vehicle", xc + 7.0, side * (half_road - park_w / 2 - 0.1), 3.5)]
        for kind, x, y, radius in zone:
            if not _free(objects, x, y, radius):
                continue
            color = {"traffic_cone": np.array([0.95, 0.4, 0.05]), "construction_vehicle": np.array([0.95, 0.75, 0.1]),
                     "barrier": np.array([0.9, 0.15, 0.1]) if rng.random() < 0.5 else np.array([0.95, 0.6, 0.1])}[kind]
            _place(objects, ids, rng, kind, x, y, 0.0, 0.0 if side < 0 else np.pi, color=color)

    # The ego drives +x in one of the right-hand lanes, centred on x = 0 over the scene's duration.
    ego_lane = int(rng.integers(lanes))
    ego_lane_y = -(ego_lane + 0.5) * lane_w
    ego_speed = rng.uniform(4.0, 9.0)
    ego_start_x = -ego_speed * duration / 2

    # Pedestrians on the sidewalks (some standing), cyclists near the road edge.
    for side in (-1, 1):
        for _ in range(rng.poisson(style.pedestrian_density * (x1 - x0) * 0.5)):
            x = rng.uniform(x0 + 10, x1 - 10)
            y = side * (half_road + rng.uniform(0.8, sidewalk_w - 0.4))
            if not _free(objects, x, y, 0.6):
                continue
            walking = rng.random() < 0.7
            yaw = (0.0 if rng.random() < 0.5 else np.pi) + rng.normal(0, 0.1)
            _place(objects, ids, rng, "pedestrian", x, y, SIDEWALK_HEIGHT, yaw, rng.uniform(0.8, 1.6) * walking)
        for _ in range(rng.poisson(0.01 * (x1 - x0))):
            yaw = 0.0 if side < 0 else np.pi
            x, speed = rng.uniform(x0 + 20, x1 - 20), rng.uniform(3.0, 6.0)
            _place(objects, ids, rng, "cyclist", x, side * (lanes * lane_w + 0.35), 0.0, yaw, speed)

    # Moving traffic in every lane (right-hand traffic: -y lanes drive +x).
    for lane in range(lanes):
        for direction in (1, -1):
            y = -direction * (lane + 0.5) * lane_w
            yaw = 0.0 if direction == 1 else np.pi
            speed = rng.uniform(3.0, 11.0)
            x = x0 + rng.uniform(0, 20)
            while x < x1:
                kind = rng.choice(["car", "van", "truck", "bus", "trailer", "motorcycle"],
                                  p=[0.55, 0.12, 0.1, 0.1, 0.05, 0.08])
                o_len = CATEGORIES[kind].size[0]
                v = speed * direction
                if rng.random() < style.traffic_density * 30 and not (
                        lane == ego_lane and direction == 1 and _meets_ego(x, v, ego_start_x, ego_speed, duration)):
                    _place(objects, ids, rng, kind, x, y + rng.normal(0, 0.15), 0.0, yaw + rng.normal(0, 0.01),
                           speed * rng.uniform(0.9, 1.1))
                x += o_len + rng.uniform(8, 30)

    static_objects = [o.mesh.transformed(o.transform_at(0.0)) for o in objects if not o.moving]
    static = Mesh.concat(parts + static_objects)
    # nuScenes-style description: xMUDA's day/night split looks for "night" in it.
    description = f"{domain.time.capitalize()}, synthetic {domain.city} street, {lanes} lane(s) per direction"
    return Scene(seed, index, domain, static, objects, np.asarray(lamps, dtype=np.float64).reshape(-1, 3),
                 ego_speed, ego_lane_y, ego_start_x, description,
                 {"lanes_per_direction": lanes, "lane_width": lane_w, "half_road": half_road})
