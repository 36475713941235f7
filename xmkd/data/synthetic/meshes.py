"""Triangle meshes with per-face attributes, and the primitive shapes the world is built from.

A `Mesh` is plain arrays: vertices, faces and, per face, the surface id, instance id, base colour and
texture seed. Object meshes are built in the object's local frame (box centre at the origin, x forward,
z up) and placed in the world with a transform.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from xmkd.data.synthetic.surfaces import SURFACE_ID


@dataclass
class Mesh:
    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64
    surface: np.ndarray  # (F,) int16, index into SURFACES
    instance: np.ndarray  # (F,) int32
    albedo: np.ndarray  # (F, 3) float32 base colour in [0, 1]
    seed: np.ndarray  # (F,) int64 texture seed (per instance)

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def transformed(self, T: np.ndarray) -> Mesh:
        v = self.vertices @ T[:3, :3].T + T[:3, 3]
        return Mesh(v, self.faces, self.surface, self.instance, self.albedo, self.seed)

    @staticmethod
    def concat(meshes: list[Mesh]) -> Mesh:
        meshes = [m for m in meshes if m.num_faces]
        if not meshes:
            return Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, np.int16),
                        np.zeros(0, np.int32), np.zeros((0, 3), np.float32), np.zeros(0, np.int64))
        offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
        return Mesh(
            np.concatenate([m.vertices for m in meshes]),
            np.concatenate([m.faces + o for m, o in zip(meshes, offsets)]),
            np.concatenate([m.surface for m in meshes]),
            np.concatenate([m.instance for m in meshes]),
            np.concatenate([m.albedo for m in meshes]),
            np.concatenate([m.seed for m in meshes]),
        )


def _icosphere(subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    t = (1 + 5 ** 0.5) / 2
    v = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
         [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6],
         [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10],
         [8, 6, 7], [9, 8, 1]]
    verts = [np.asarray(p, float) / np.linalg.norm(p) for p in v]
    faces = f
    def mid(a: int, b: int, cache: dict[tuple[int, int], int]) -> int:
        key = (min(a, b), max(a, b))
        if key not in cache:
            m = verts[a] + verts[b]
            verts.append(m / np.linalg.norm(m))
            cache[key] = len(verts) - 1
        return cache[key]

    for _ in range(subdivisions):
        midpoints: dict[tuple[int, int], int] = {}
        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(a, b, midpoints), mid(b, c, midpoints), mid(c, a, midpoints)
            new += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        faces = new
    return np.array(verts), np.array(faces)


def _revolve(sections: int, cone: bool) -> tuple[np.ndarray, np.ndarray]:
    """Closed cylinder (radius 1, z in [-0.5, 0.5]) or cone (base radius 1 at z = 0, apex at z = 1)."""
    a = np.linspace(0, 2 * np.pi, sections, endpoint=False)
    ring = np.stack([np.cos(a), np.sin(a)], 1)
    n = sections
    idx = np.arange(n)
    nxt = (idx + 1) % n
    if cone:
        v = np.vstack([np.column_stack([ring, np.zeros(n)]), [[0, 0, 1.0]], [[0, 0, 0.0]]])
        side = np.stack([idx, nxt, np.full(n, n)], 1)
        base = np.stack([nxt, idx, np.full(n, n + 1)], 1)
        return v, np.vstack([side, base])
    v = np.vstack([np.column_stack([ring, np.full(n, -0.5)]), np.column_stack([ring, np.full(n, 0.5)]),
                   [[0, 0, -0.5]], [[0, 0, 0.5]]])
    side = np.vstack([np.stack([idx, nxt, nxt + n], 1), np.stack([idx, nxt + n, idx + n], 1)])
    bottom = np.stack([nxt, idx, np.full(n, 2 * n)], 1)
    top = np.stack([idx + n, nxt + n, np.full(n, 2 * n + 1)], 1)
    return v, np.vstack([side, bottom, top])


_BOX_FACES = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4], [2, 3, 7], [2, 7, 6],
                       [1, 2, 6], [1, 6, 5], [0, 4, 7], [0, 7, 3]])


@functools.cache
def _unit(shape: str, detail: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cached primitive (vertices, faces), outward-facing counter-clockwise triangles: unit box around the
    origin, cylinder (radius 1, height 1, axis z), cone (base radius 1 at z = 0, apex at z = 1), unit sphere."""
    if shape == "box":
        v = np.array([[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1], [-1, -1, 1], [1, -1, 1], [1, 1, 1],
                      [-1, 1, 1]], dtype=np.float64) * 0.5
        f = _BOX_FACES
    elif shape in ("cylinder", "cone"):
        v, f = _revolve(detail, cone=shape == "cone")
    elif shape == "sphere":
        v, f = _icosphere(detail)
    else:
        raise ValueError(shape)
    v = np.asarray(v, dtype=np.float64)
    f = np.asarray(f, dtype=np.int64)
    v.flags.writeable = False
    f.flags.writeable = False
    return v, f


class MeshBuilder:
    """Collects primitive parts, all of one instance, into a `Mesh`."""

    def __init__(self, instance: int, seed: int):
        self.instance = instance
        self.seed = seed
        self.parts: list[Mesh] = []

    def add(self, vertices: np.ndarray, faces: np.ndarray, surface: str, albedo) -> MeshBuilder:
        n = len(faces)
        self.parts.append(Mesh(np.asarray(vertices, np.float64), np.asarray(faces, np.int64),
                               np.full(n, SURFACE_ID[surface], np.int16), np.full(n, self.instance, np.int32),
                               np.tile(np.asarray(albedo, np.float32), (n, 1)), np.full(n, self.seed, np.int64)))
        return self

    def box(self, lo: tuple[float, float, float], hi: tuple[float, float, float], surface: str, albedo) -> MeshBuilder:
        v, f = _unit("box")
        lo_a, hi_a = np.asarray(lo, float), np.asarray(hi, float)
        return self.add(v * (hi_a - lo_a) + (lo_a + hi_a) / 2, f, surface, albedo)

    def quad(self, corners, surface: str, albedo) -> MeshBuilder:
        """A planar quad from 4 corners given counter-clockwise seen from its front side."""
        return self.add(np.asarray(corners, float), np.array([[0, 1, 2], [0, 2, 3]]), surface, albedo)

    def cylinder(self, centre: tuple[float, float, float], radius: float, height: float, surface: str, albedo,
                 axis: str = "z", sections: int = 10) -> MeshBuilder:
        v, f = _unit("cylinder", sections)
        v = v * np.array([radius, radius, height])
        if axis == "y":
            v = v[:, [0, 2, 1]]
        elif axis == "x":
            v = v[:, [2, 1, 0]]
        return self.add(v + np.asarray(centre, float), f if axis == "z" else f[:, ::-1], surface, albedo)

    def ellipsoid(self, centre: tuple[float, float, float], radii: tuple[float, float, float], surface: str,
                  albedo, subdivisions: int = 1, jitter: float = 0.0,
                  rng: np.random.Generator | None = None) -> MeshBuilder:
        v, f = _unit("sphere", subdivisions)
        v = v * np.asarray(radii, float)
        if jitter and rng is not None:
            v = v * (1 + jitter * rng.uniform(-1, 1, size=(len(v), 1)))
        return self.add(v + np.asarray(centre, float), f, surface, albedo)

    def cone(self, base_centre: tuple[float, float, float], radius: float, height: float, surface: str,
             albedo) -> MeshBuilder:
        v, f = _unit("cone", 10)
        return self.add(v * np.array([radius, radius, height]) + np.asarray(base_centre, float), f, surface, albedo)

    def build(self) -> Mesh:
        return Mesh.concat(self.parts)


def yaw_transform(x: float, y: float, z: float, yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T[:3, 3] = [x, y, z]
    return T
