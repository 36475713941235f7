"""Label spaces as data: class names, colours, raw-id mappings and the ids written back for submissions.

A `LabelSpace` maps a dataset's raw label ids (nuScenes-lidarseg fine index, SemanticKITTI raw id, Waymo
semantic class, A2D2 colour index, VirtualKITTI id) to contiguous training classes 0..C-1; everything
unmapped becomes `ignore_index` (255). `submission_ids` map classes back to what the dataset's official
tools expect: nuScenes coarse indices 1..16, SemanticKITTI raw ids (via `learning_map_inv`), Waymo
classes 1..22; for xMUDA's merged spaces the first raw id of each group stands for the group.

Tables are transcribed from the official devkits (nuscenes-devkit `color_map.py` and
`eval/lidarseg/utils.py`, semantic-kitti-api `config/semantic-kitti.yaml`, Waymo `segmentation.proto`)
and from xMUDA's merge tables; see FORMATS.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from xmkd.errors import XmkdDataError, XmkdNameError

IGNORE_INDEX = 255

# ---------------------------------------------------------------------------------------------------
# Raw taxonomies
# ---------------------------------------------------------------------------------------------------

# nuScenes-lidarseg fine classes, in the devkit colormap order (= category.index), with their colours.
NUSCENES_FINE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("noise", (0, 0, 0)),
    ("animal", (70, 130, 180)),
    ("human.pedestrian.adult", (0, 0, 230)),
    ("human.pedestrian.child", (135, 206, 235)),
    ("human.pedestrian.construction_worker", (100, 149, 237)),
    ("human.pedestrian.personal_mobility", (219, 112, 147)),
    ("human.pedestrian.police_officer", (0, 0, 128)),
    ("human.pedestrian.stroller", (240, 128, 128)),
    ("human.pedestrian.wheelchair", (138, 43, 226)),
    ("movable_object.barrier", (112, 128, 144)),
    ("movable_object.debris", (210, 105, 30)),
    ("movable_object.pushable_pullable", (105, 105, 105)),
    ("movable_object.trafficcone", (47, 79, 79)),
    ("static_object.bicycle_rack", (188, 143, 143)),
    ("vehicle.bicycle", (220, 20, 60)),
    ("vehicle.bus.bendy", (255, 127, 80)),
    ("vehicle.bus.rigid", (255, 69, 0)),
    ("vehicle.car", (255, 158, 0)),
    ("vehicle.construction", (233, 150, 70)),
    ("vehicle.emergency.ambulance", (255, 83, 0)),
    ("vehicle.emergency.police", (255, 215, 0)),
    ("vehicle.motorcycle", (255, 61, 99)),
    ("vehicle.trailer", (255, 140, 0)),
    ("vehicle.truck", (255, 99, 71)),
    ("flat.driveable_surface", (0, 207, 191)),
    ("flat.other", (175, 0, 75)),
    ("flat.sidewalk", (75, 0, 75)),
    ("flat.terrain", (112, 180, 60)),
    ("static.manmade", (222, 184, 135)),
    ("static.other", (255, 228, 196)),
    ("static.vegetation", (0, 175, 0)),
    ("vehicle.ego", (255, 240, 245)),
)
NUSCENES_FINE_NAMES = {i: name for i, (name, _) in enumerate(NUSCENES_FINE)}
NUSCENES_FINE_INDEX = {name: i for i, name in NUSCENES_FINE_NAMES.items()}

# The devkit's LidarsegClassMapper: coarse class (index 1..16) -> fine names, with the coarse colours.
NUSCENES_COARSE: tuple[tuple[str, tuple[str, ...], tuple[int, int, int]], ...] = (
    ("barrier", ("movable_object.barrier",), (112, 128, 144)),
    ("bicycle", ("vehicle.bicycle",), (220, 20, 60)),
    ("bus", ("vehicle.bus.bendy", "vehicle.bus.rigid"), (255, 127, 80)),
    ("car", ("vehicle.car",), (255, 158, 0)),
    ("construction_vehicle", ("vehicle.construction",), (233, 150, 70)),
    ("motorcycle", ("vehicle.motorcycle",), (255, 61, 99)),
    ("pedestrian", ("human.pedestrian.adult", "human.pedestrian.child",
                    "human.pedestrian.construction_worker", "human.pedestrian.police_officer"), (0, 0, 230)),
    ("traffic_cone", ("movable_object.trafficcone",), (47, 79, 79)),
    ("trailer", ("vehicle.trailer",), (255, 140, 0)),
    ("truck", ("vehicle.truck",), (255, 99, 71)),
    ("driveable_surface", ("flat.driveable_surface",), (0, 207, 191)),
    ("other_flat", ("flat.other",), (175, 0, 75)),
    ("sidewalk", ("flat.sidewalk",), (75, 0, 75)),
    ("terrain", ("flat.terrain",), (112, 180, 60)),
    ("manmade", ("static.manmade",), (222, 184, 135)),
    ("vegetation", ("static.vegetation",), (0, 175, 0)),
)

# SemanticKITTI raw ids: name and colour (config/semantic-kitti.yaml lists BGR; these are RGB).
SEMANTIC_KITTI_RAW: dict[int, tuple[str, tuple[int, int, int]]] = {
    0: ("unlabeled", (0, 0, 0)), 1: ("outlier", (255, 0, 0)), 10: ("car", (100, 150, 245)),
    11: ("bicycle", (100, 230, 245)), 13: ("bus", (100, 80, 250)), 15: ("motorcycle", (30, 60, 150)),
    16: ("on-rails", (0, 0, 255)), 18: ("truck", (80, 30, 180)), 20: ("other-vehicle", (0, 0, 255)),
    30: ("person", (255, 30, 30)), 31: ("bicyclist", (255, 40, 200)), 32: ("motorcyclist", (150, 30, 90)),
    40: ("road", (255, 0, 255)), 44: ("parking", (255, 150, 255)), 48: ("sidewalk", (75, 0, 75)),
    49: ("other-ground", (175, 0, 75)), 50: ("building", (255, 200, 0)), 51: ("fence", (255, 120, 50)),
    52: ("other-structure", (255, 150, 0)), 60: ("lane-marking", (150, 255, 170)),
    70: ("vegetation", (0, 175, 0)), 71: ("trunk", (135, 60, 0)), 72: ("terrain", (150, 240, 80)),
    80: ("pole", (255, 240, 150)), 81: ("traffic-sign", (255, 0, 0)), 99: ("other-object", (50, 255, 255)),
    252: ("moving-car", (100, 150, 245)), 253: ("moving-bicyclist", (255, 40, 200)),
    254: ("moving-person", (255, 30, 30)), 255: ("moving-motorcyclist", (150, 30, 90)),
    256: ("moving-on-rails", (0, 0, 255)), 257: ("moving-bus", (100, 80, 250)),
    258: ("moving-truck", (80, 30, 180)), 259: ("moving-other-vehicle", (0, 0, 255)),
}
# learning_map (raw -> 1..19, 0 = ignore) and learning_map_inv (1..19 -> raw).
SEMANTIC_KITTI_LEARNING_MAP: dict[int, int] = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10, 48: 11,
    49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 99: 0, 252: 1, 253: 7,
    254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}
SEMANTIC_KITTI_LEARNING_MAP_INV: tuple[int, ...] = (
    0, 10, 11, 15, 18, 20, 30, 31, 32, 40, 44, 48, 49, 50, 51, 70, 71, 72, 80, 81,
)
SEMANTIC_KITTI_NAMES_19: tuple[str, ...] = (
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist", "road",
    "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk", "terrain", "pole",
    "traffic-sign",
)

# Waymo Open segmentation classes (protos/segmentation.proto); 0 = UNDEFINED.
WAYMO_RAW: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("undefined", (0, 0, 0)), ("car", (255, 158, 0)), ("truck", (255, 99, 71)), ("bus", (255, 127, 80)),
    ("other_vehicle", (233, 150, 70)), ("motorcyclist", (150, 30, 90)), ("bicyclist", (255, 40, 200)),
    ("pedestrian", (0, 0, 230)), ("sign", (255, 0, 0)), ("traffic_light", (255, 215, 0)),
    ("pole", (255, 240, 150)), ("construction_cone", (47, 79, 79)), ("bicycle", (220, 20, 60)),
    ("motorcycle", (255, 61, 99)), ("building", (222, 184, 135)), ("vegetation", (0, 175, 0)),
    ("tree_trunk", (135, 60, 0)), ("curb", (150, 150, 150)), ("road", (0, 207, 191)),
    ("lane_marker", (150, 255, 170)), ("other_ground", (175, 0, 75)), ("walkable", (120, 60, 120)),
    ("sidewalk", (75, 0, 75)),
)

# VirtualKITTI (vkitti3D .npy label column).
VKITTI_RAW: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("Terrain", (200, 90, 0)), ("Tree", (0, 128, 50)), ("Vegetation", (0, 220, 0)), ("Building", (255, 0, 0)),
    ("Road", (100, 100, 100)), ("GuardRail", (200, 100, 100)), ("TrafficSign", (255, 255, 0)),
    ("TrafficLight", (200, 200, 0)), ("Pole", (255, 130, 0)), ("Misc", (80, 80, 80)), ("Truck", (160, 60, 60)),
    ("Car", (255, 127, 80)), ("Van", (0, 139, 139)), ("Don't care", (0, 0, 0)),
)

# A2D2 semantic classes: (colour in class_list.json, name), in the file's order (index = raw id).
A2D2_RAW: tuple[tuple[str, str], ...] = (
    ("#ff0000", "Car 1"), ("#c80000", "Car 2"), ("#960000", "Car 3"), ("#800000", "Car 4"),
    ("#b65906", "Bicycle 1"), ("#963204", "Bicycle 2"), ("#5a1e01", "Bicycle 3"), ("#5a1e1e", "Bicycle 4"),
    ("#cc99ff", "Pedestrian 1"), ("#bd499b", "Pedestrian 2"), ("#ef59bf", "Pedestrian 3"),
    ("#ff8000", "Truck 1"), ("#c88000", "Truck 2"), ("#968000", "Truck 3"),
    ("#00ff00", "Small vehicles 1"), ("#00c800", "Small vehicles 2"), ("#009600", "Small vehicles 3"),
    ("#0080ff", "Traffic signal 1"), ("#1e1c9e", "Traffic signal 2"), ("#3c1c64", "Traffic signal 3"),
    ("#00ffff", "Traffic sign 1"), ("#1edcdc", "Traffic sign 2"), ("#3c9dc7", "Traffic sign 3"),
    ("#ffff00", "Utility vehicle 1"), ("#ffffc8", "Utility vehicle 2"), ("#e96400", "Sidebars"),
    ("#6e6e00", "Speed bumper"), ("#808000", "Curbstone"), ("#ffc125", "Solid line"),
    ("#400040", "Irrelevant signs"), ("#b97a57", "Road blocks"), ("#000064", "Tractor"),
    ("#8b636c", "Non-drivable street"), ("#d23273", "Zebra crossing"), ("#ff0080", "Obstacles / trash"),
    ("#fff68f", "Poles"), ("#960096", "RD restricted area"), ("#ccff99", "Animals"),
    ("#eea2ad", "Grid structure"), ("#212cb1", "Signal corpus"), ("#b432b4", "Drivable cobblestone"),
    ("#ff46b9", "Electronic traffic"), ("#eee9bf", "Slow drive area"), ("#93fdc2", "Nature object"),
    ("#9696c8", "Parking area"), ("#b496c8", "Sidewalk"), ("#48d1cc", "Ego car"),
    ("#c87dd2", "Painted driv. instr."), ("#9f79ee", "Traffic guide obj."), ("#8000ff", "Dashed line"),
    ("#ff00ff", "RD normal street"), ("#87ceff", "Sky"), ("#f1e6ff", "Buildings"), ("#60458f", "Blurred area"),
    ("#352e52", "Rain dirt"),
)


def hex_to_rgb(code: str) -> tuple[int, int, int]:
    code = code.lstrip("#")
    return int(code[0:2], 16), int(code[2:4], 16), int(code[4:6], 16)


# ---------------------------------------------------------------------------------------------------
# LabelSpace
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelSpace:
    """Training classes 0..C-1 over a dataset's raw label ids."""

    name: str
    class_names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]  # RGB per class
    raw_names: dict[int, str]  # raw id -> the dataset's own class name
    raw_to_class: dict[int, int]  # raw id -> class; raw ids not listed map to ignore
    submission_ids: tuple[int, ...]  # class -> id written in prediction files
    ignore_index: int = IGNORE_INDEX
    submission_ignore: int = 0  # written where a prediction is ignore (never happens for argmax outputs)
    raw_dataset: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @cached_property
    def lut(self) -> np.ndarray:
        """Dense lookup table raw id -> class (ignore for unmapped ids), length max raw id + 1."""
        size = max(self.raw_names) + 1
        table = np.full(size, self.ignore_index, dtype=np.int64)
        for raw, cls in self.raw_to_class.items():
            table[raw] = cls
        return table

    def from_raw(self, raw: np.ndarray, source: str = "") -> np.ndarray:
        """Raw label ids -> class ids (int64). An id outside the dataset's taxonomy raises XmkdDataError."""
        raw = np.asarray(raw)
        if raw.size == 0:
            return np.zeros(raw.shape, dtype=np.int64)
        raw64 = raw.astype(np.int64)
        known = np.zeros(len(self.lut), dtype=bool)
        known[list(self.raw_names)] = True
        bad = (raw64 < 0) | (raw64 >= len(known))
        bad[~bad] = ~known[raw64[~bad]]
        if bad.any():
            values = sorted(set(raw64[bad].tolist()))[:5]
            raise XmkdDataError(
                f"unknown {self.raw_dataset or self.name} label id(s) {values} "
                f"({int(bad.sum())} points); known ids: {sorted(self.raw_names)[:8]}...",
                source=source or None, field="labels",
            )
        return self.lut[raw64]

    def lut_for_names(self, index_to_name: dict[int, str], source: str = "") -> np.ndarray:
        """LUT from a dataset's own index -> name table (e.g. nuScenes category.json) to classes.

        Maps by name, as the nuScenes devkit does, so a dataset whose indices differ still maps right.
        """
        by_name = {name: self.raw_to_class.get(raw, self.ignore_index) for raw, name in self.raw_names.items()}
        table = np.full(max(index_to_name) + 1, self.ignore_index, dtype=np.int64)
        for idx, name in index_to_name.items():
            if name not in by_name:
                raise XmkdDataError(f"class name {name!r} is not in the {self.raw_dataset} taxonomy",
                                    source=source or None, field="category")
            table[idx] = by_name[name]
        return table

    def to_submission(self, classes: np.ndarray) -> np.ndarray:
        """Class ids -> the ids the dataset's official tools expect (ignore -> `submission_ignore`)."""
        table = np.asarray(self.submission_ids, dtype=np.int64)
        classes = np.asarray(classes, dtype=np.int64)
        out = np.full(classes.shape, self.submission_ignore, dtype=np.int64)
        ok = (classes >= 0) & (classes < self.num_classes)
        out[ok] = table[classes[ok]]
        return out

    def colorize(self, classes: np.ndarray) -> np.ndarray:
        """Class ids (...) -> RGB uint8 (..., 3); ignore and out-of-range ids are black."""
        palette = np.zeros((256, 3), dtype=np.uint8)
        palette[: self.num_classes] = np.asarray(self.colors, dtype=np.uint8)
        classes = np.asarray(classes, dtype=np.int64)
        return palette[np.where((classes >= 0) & (classes < self.num_classes), classes, 255)]


def _merged(
    name: str,
    raw_dataset: str,
    raw_names: dict[int, str],
    groups: dict[str, tuple[str, ...]],
    colors: dict[str, tuple[int, int, int]],
) -> LabelSpace:
    """A label space whose classes are groups of raw class names (xMUDA's `merge_classes`)."""
    index = {n: i for i, n in raw_names.items()}
    raw_to_class: dict[int, int] = {}
    for cls, members in enumerate(groups.values()):
        for member in members:
            raw_to_class[index[member]] = cls
    submission = tuple(index[members[0]] for members in groups.values())
    return LabelSpace(name, tuple(groups), tuple(colors[g] for g in groups), raw_names, raw_to_class,
                      submission, raw_dataset=raw_dataset)


def _nuscenes16() -> LabelSpace:
    raw_to_class = {}
    for cls, (_, members, _) in enumerate(NUSCENES_COARSE):
        for member in members:
            raw_to_class[NUSCENES_FINE_INDEX[member]] = cls
    return LabelSpace(
        "nuscenes16", tuple(c[0] for c in NUSCENES_COARSE), tuple(c[2] for c in NUSCENES_COARSE),
        dict(NUSCENES_FINE_NAMES), raw_to_class, tuple(range(1, 17)), raw_dataset="nuScenes-lidarseg",
    )


def _semantic_kitti19() -> LabelSpace:
    raw_to_class = {raw: c - 1 for raw, c in SEMANTIC_KITTI_LEARNING_MAP.items() if c > 0}
    colors = tuple(SEMANTIC_KITTI_RAW[raw][1] for raw in SEMANTIC_KITTI_LEARNING_MAP_INV[1:])
    return LabelSpace(
        "semantickitti19", SEMANTIC_KITTI_NAMES_19, colors, {k: v[0] for k, v in SEMANTIC_KITTI_RAW.items()},
        raw_to_class, SEMANTIC_KITTI_LEARNING_MAP_INV[1:], raw_dataset="SemanticKITTI",
    )


def _waymo22() -> LabelSpace:
    names = {i: n for i, (n, _) in enumerate(WAYMO_RAW)}
    return LabelSpace(
        "waymo22", tuple(n for n, _ in WAYMO_RAW[1:]), tuple(c for _, c in WAYMO_RAW[1:]), names,
        {i: i - 1 for i in range(1, len(WAYMO_RAW))}, tuple(range(1, len(WAYMO_RAW))), raw_dataset="Waymo",
    )


_SK_NAMES = {k: v[0] for k, v in SEMANTIC_KITTI_RAW.items()}
_NUSC6_COLORS = {"vehicle": (255, 158, 0), "driveable_surface": (0, 207, 191), "sidewalk": (75, 0, 75),
                 "terrain": (112, 180, 60), "manmade": (222, 184, 135), "vegetation": (0, 175, 0)}
_VKITTI6_COLORS = {"vegetation_terrain": (0, 175, 0), "building": (255, 200, 0), "road": (255, 0, 255),
                   "object": (50, 255, 255), "truck": (80, 30, 180), "car": (100, 150, 245)}
_A2D2_10_COLORS = {"car": (100, 150, 245), "truck": (80, 30, 180), "bike": (100, 230, 245),
                   "person": (255, 30, 30), "road": (255, 0, 255), "parking": (255, 150, 255),
                   "sidewalk": (75, 0, 75), "building": (255, 200, 0), "nature": (0, 175, 0),
                   "other-objects": (50, 255, 255)}


def _build() -> dict[str, LabelSpace]:
    nusc6 = {
        "vehicle": ("vehicle.car", "vehicle.bicycle", "vehicle.bus.bendy", "vehicle.bus.rigid",
                    "vehicle.construction", "vehicle.motorcycle", "vehicle.trailer", "vehicle.truck"),
        "driveable_surface": ("flat.driveable_surface",), "sidewalk": ("flat.sidewalk",),
        "terrain": ("flat.terrain",), "manmade": ("static.manmade",), "vegetation": ("static.vegetation",),
    }
    vkitti6 = {
        "vegetation_terrain": ("Terrain", "Tree", "Vegetation"), "building": ("Building",), "road": ("Road",),
        "object": ("TrafficSign", "TrafficLight", "Pole", "Misc"), "truck": ("Truck",), "car": ("Car",),
    }
    a2d2_10 = {
        "car": ("Car 1", "Car 2", "Car 3", "Car 4", "Ego car"), "truck": ("Truck 1", "Truck 2", "Truck 3"),
        "bike": ("Bicycle 1", "Bicycle 2", "Bicycle 3", "Bicycle 4", "Small vehicles 1", "Small vehicles 2",
                 "Small vehicles 3"),
        "person": ("Pedestrian 1", "Pedestrian 2", "Pedestrian 3"),
        "road": ("RD normal street", "Zebra crossing", "Solid line", "RD restricted area", "Slow drive area",
                 "Drivable cobblestone", "Dashed line", "Painted driv. instr."),
        "parking": ("Parking area",), "sidewalk": ("Sidewalk", "Curbstone"), "building": ("Buildings",),
        "nature": ("Nature object",),
        "other-objects": ("Poles", "Traffic signal 1", "Traffic signal 2", "Traffic signal 3", "Traffic sign 1",
                          "Traffic sign 2", "Traffic sign 3", "Sidebars", "Speed bumper", "Irrelevant signs",
                          "Road blocks", "Obstacles / trash", "Animals", "Signal corpus", "Electronic traffic",
                          "Traffic guide obj.", "Grid structure"),
    }
    sk_a2d2 = {
        "car": ("car", "moving-car"), "truck": ("truck", "moving-truck"),
        "bike": ("bicycle", "motorcycle", "bicyclist", "motorcyclist", "moving-bicyclist",
                 "moving-motorcyclist"),
        "person": ("person", "moving-person"), "road": ("road", "lane-marking"), "parking": ("parking",),
        "sidewalk": ("sidewalk",), "building": ("building",), "nature": ("vegetation", "trunk", "terrain"),
        "other-objects": ("fence", "pole", "traffic-sign", "other-object"),
    }
    sk_vkitti = {
        "vegetation_terrain": ("vegetation", "trunk", "terrain"), "building": ("building",),
        "road": ("road", "lane-marking"), "object": ("fence", "pole", "traffic-sign", "other-object"),
        "truck": ("truck", "moving-truck"), "car": ("car", "moving-car"),
    }
    sk_nusc = {
        "vehicle": ("car", "moving-car", "truck", "moving-truck", "bicycle", "motorcycle", "bicyclist",
                    "motorcyclist", "moving-bicyclist", "moving-motorcyclist"),
        "driveable_surface": ("road", "lane-marking", "parking"), "sidewalk": ("sidewalk",),
        "terrain": ("terrain",), "manmade": ("building", "fence", "pole", "traffic-sign", "other-object"),
        "vegetation": ("vegetation", "trunk"),
    }
    a2d2_names = {i: name for i, (_, name) in enumerate(A2D2_RAW)}
    a2d2_names[len(A2D2_RAW)] = "unmatched colour"  # xMUDA's index for colours not in class_list.json
    spaces = [
        _nuscenes16(),
        _semantic_kitti19(),
        _waymo22(),
        _merged("nuscenes6", "nuScenes-lidarseg", dict(NUSCENES_FINE_NAMES), nusc6, _NUSC6_COLORS),
        _merged("virtualkitti6", "VirtualKITTI", {i: n for i, (n, _) in enumerate(VKITTI_RAW)}, vkitti6,
                _VKITTI6_COLORS),
        _merged("a2d2_10", "A2D2", a2d2_names, a2d2_10, _A2D2_10_COLORS),
        _merged("semantickitti_a2d2_10", "SemanticKITTI", _SK_NAMES, sk_a2d2, _A2D2_10_COLORS),
        _merged("semantickitti_vkitti6", "SemanticKITTI", _SK_NAMES, sk_vkitti, _VKITTI6_COLORS),
        _merged("semantickitti_nuscenes6", "SemanticKITTI", _SK_NAMES, sk_nusc, _NUSC6_COLORS),
    ]
    return {s.name: s for s in spaces}


LABEL_SPACES: dict[str, LabelSpace] = _build()


def get_label_space(name: str) -> LabelSpace:
    """The label space called `name` (see `LABEL_SPACES`), with a clear error for an unknown name."""
    try:
        return LABEL_SPACES[name]
    except KeyError:
        raise XmkdNameError(f"unknown label space {name!r}; known: {', '.join(sorted(LABEL_SPACES))}") from None
