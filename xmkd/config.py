"""Configs: YAML files validated against dataclass schemas (omegaconf), with inheritance and overrides.

A config file may start with `defaults: [other.yaml, ...]`; those files (paths relative to this one) are
merged first, in order, then this file on top, then `key=value` overrides from the command line. Every
layer is validated against the schema as it is merged, so an unknown key or a value of the wrong type
fails with an `XmkdConfigError` that names the key and the file (or the override) it came from.

The configs xmkd ships live in the package (`xmkd/configs/<recipe>/<dataset>.yaml`, installed with it). Where a
config path or a `defaults` entry names no file, it is looked up there by name: `u2mkd/synthetic`,
`u2mkd/synthetic.yaml` and `configs/u2mkd/synthetic.yaml` all name the shipped U2MKD synthetic config, from any
directory and from an installed wheel (`list_configs()` / `xmkd config --list` name them all).

Schemas are plain dataclasses. `ExperimentConfig` holds what the engine and the data pipeline read;
a recipe extends it with a dataclass of its own (passed as `schema=`) for its model and loss settings.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import AnyNode, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from xmkd.errors import XmkdConfigError
from xmkd.io import atomic_write_text

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # the shipped configs (package data)


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # reader: synthetic, nuscenes, semantickitti, kitti_object, kitti_raw, waymo, ...
    root: str = "data/synthetic"  # dataset root on disk
    index: str = ""  # index written by `xmkd prepare` ("" = <root>/xmkd_index)
    label_space: str = "nuscenes16"  # a name in xmkd.data.labels.LABEL_SPACES
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    cameras: list[str] | None = None  # camera names to load; null = every camera the dataset has, [] = none
    sweeps: int = 0  # extra LiDAR sweeps merged into each keyframe
    voxel_size: float = 0.05  # metres
    voxel_z: float = 0.0  # metres along z when it differs from voxel_size (detection grids); 0 = voxel_size
    point_range: list[float] = field(default_factory=lambda: [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0])
    image_size: list[int] = field(default_factory=list)  # [W, H] to resize images to; empty = native
    batch_size: int = 2  # per process
    num_workers: int = 2


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # cosine (per iteration, linear warm-up) | multistep | onecycle | constant
    warmup_iters: int = 0
    warmup_start_ratio: float = 0.01  # warm-up starts at lr * this
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    milestones: list[int] = field(default_factory=list)  # multistep, in iterations
    gamma: float = 0.1  # multistep decay factor
    pct_start: float = 0.3  # onecycle
    # onecycle: the last step's lr as a fraction of lr. 1e-4: torch OneCycleLR with div_factor 10, final_div_factor
    # 1000 (the HSRDN / CMKD students' START_RATE / END_RATE); 1e-5: OpenPCDet's OneCycle (lr / DIV_FACTOR / 1e4,
    # learning_schedules_fastai.py), the SECOND teacher's adam_onecycle
    final_ratio: float = 1e-4
    # cosine as U2MKD's release (core/schedulers.py cosine_schedule_with_warmup): warmup_iters // processes warm-up
    # iterations (none on one process), the lr rising as (step + 1) / that (lr / 250 first on 4 GPUs with 1000),
    # then the cosine over the whole run's length; warmup_start_ratio is not used
    release_warmup: bool = False
    # onecycle: [high, low] Adam beta1 / SGD momentum cycled against the lr (high -> low while it rises, back while it
    # falls; torch OneCycleLR cycle_momentum, OpenPCDet OneCycle MOMS); [] keeps the optimizer's value fixed
    momentum: list[float] = field(default_factory=list)


@dataclass
class TrainConfig:
    epochs: int = 1
    max_iters: int = 0  # > 0: iteration-based training, `epochs` is ignored
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    amp: bool = False  # mixed precision (CUDA only)
    sync_bn: bool = False
    val_every: int = 1  # epochs (or iterations when max_iters > 0)
    ckpt_every: int = 1
    log_every: int = 10  # iterations
    keep_snapshots: bool = False  # also keep checkpoints/step_NNNNNNN.pt at every checkpoint (for eval --all)
    best_metric: str = "miou"
    best_mode: str = "max"  # max | min


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    recipe: str = ""
    seed: int = 0
    output_dir: str = "runs"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# what a list-typed key holds, for the error when a config gives it something else (a string such as `none`)
LIST_HINTS = {"cameras": "a list of camera names, [] for none, null for all"}


def _describe(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    msg = str(err).splitlines()[0]
    if key and "is not a ListConfig" in msg:  # OmegaConf's "AnyNode is not a ListConfig" names no type a user wrote
        value = getattr(err, "value", None)
        got = f"got {value!r}; " if value is not None else ""
        msg = f"{got}expected {LIST_HINTS.get(str(key).rsplit('.', 1)[-1], 'a list ([a, b], or [] for empty)')}"
    return f"key '{key}': {msg}" if key else msg


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise XmkdConfigError(f"{path}: config file not found")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and friends: report the file and yaml's own message
        raise XmkdConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(cfg, DictConfig):
        raise XmkdConfigError(f"{path}: the top level must be a mapping of keys, got a list")
    return cfg


def list_configs() -> list[str]:
    """Names of the shipped configs (`u2mkd/synthetic`, `_base/data/nuscenes`, ...), sorted."""
    return sorted(p.relative_to(CONFIG_DIR).with_suffix("").as_posix() for p in CONFIG_DIR.rglob("*.yaml"))


def resolve_config(path: str | Path, base: Path | None = None) -> Path:
    """The file a config path or name means: the file itself (relative to `base` when given, else to the
    working directory) if it exists, else the shipped config of that name (`u2mkd/synthetic`, with or without
    `.yaml` and a leading `configs/`). Raises XmkdConfigError naming what was looked for and close names."""
    given = Path(path)
    local = base / given if base is not None and not given.is_absolute() else given
    if local.is_file() or given.is_absolute():
        return local
    name = given.as_posix().removesuffix(".yaml").removeprefix("./")
    name = name.removeprefix("configs/").removeprefix("xmkd/configs/")
    shipped = CONFIG_DIR / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    if local.exists():
        return local  # a folder, not a file: _read_yaml says so
    if (CONFIG_DIR / name).is_dir() and name.strip("/"):  # a folder of shipped configs, e.g. `u2mkd`
        inside = [n for n in list_configs() if n.startswith(f"{name.strip('/')}/")]
        raise XmkdConfigError(f"{name!r} is a folder of shipped configs, not a config; name one of them: "
                              f"{', '.join(inside)}")
    close = difflib.get_close_matches(name, list_configs(), n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else " (`xmkd config --list` names them)"
    raise XmkdConfigError(f"{local}: config file not found, and no shipped config is named {name!r}{hint}")


def _layers(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]]:
    """The file's `defaults` (recursively, in order) followed by the file itself."""
    path = resolve_config(path).resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise XmkdConfigError(f"{path}: `defaults` form a cycle: {cycle}")
    cfg = _read_yaml(path)
    layers: list[tuple[Path, DictConfig]] = []
    defaults = cfg.pop("defaults", [])
    if isinstance(defaults, str):
        defaults = [defaults]
    if not OmegaConf.is_list(defaults) and not isinstance(defaults, list):
        raise XmkdConfigError(f"{path}: `defaults` must be a list of config files")
    for entry in defaults:
        if not isinstance(entry, str):
            raise XmkdConfigError(f"{path}: `defaults` entries must be file paths, got {entry!r}")
        try:
            entry_path = resolve_config(entry, path.parent)
        except XmkdConfigError as err:
            raise XmkdConfigError(f"{path}: `defaults` entry {entry!r}: {err}") from None
        layers.extend(_layers(entry_path, (*chain, path)))
    layers.append((path, cfg))
    return layers


def _shown(node: Any) -> str:
    """A layer's value as a user wrote it, with what kind of thing it is."""
    value = OmegaConf.to_container(node) if isinstance(node, (DictConfig, ListConfig)) else node
    kind = "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list) else "the value"
    return f"{kind} {value!r}"


def _check_shapes(base: DictConfig, layer: DictConfig, origin: str, prefix: str = "") -> None:
    """Refuse a mapping where the schema holds a list or a scalar, and a list or scalar where it holds a mapping,
    before OmegaConf merges them: its errors there name no key ("Merge error: list is not a subclass of
    DataConfig") or are a bare TypeError ("Cannot merge incompatible container types").

    Raises XmkdConfigError naming `origin` (file or override), the full key, what was expected and what it got."""
    for key in layer.keys():
        if key not in base:
            continue  # an unknown key: the merge names it
        have, new = base._get_node(key), layer._get_node(key)
        if new is None or new._is_none() or new._is_missing() or new._is_interpolation() or isinstance(have, AnyNode):
            continue  # null, ???, ${...} and untyped keys: the merge's and resolve's own checks apply
        full = f"{prefix}{key}"
        if isinstance(have, DictConfig):
            if not isinstance(new, DictConfig):
                names = list(have.keys()) if not have._is_none() else []
                keys = f" ({', '.join(map(str, names[:6]))}{', ...' if len(names) > 6 else ''})" if names else ""
                raise XmkdConfigError(f"{origin}: key '{full}': expected a mapping of its keys{keys}, "
                                      f"got {_shown(new)}")
            if not have._is_none():
                _check_shapes(have, new, origin, f"{full}.")
        elif isinstance(have, ListConfig):
            expected = LIST_HINTS.get(str(key), "a list ([a, b], or [] for empty)")
            if not isinstance(new, ListConfig):
                if isinstance(new, DictConfig):
                    raise XmkdConfigError(f"{origin}: key '{full}': expected {expected}, got {_shown(new)}")
                continue  # a scalar: _describe's LIST_HINTS message
            element = have._metadata.element_type
            if element in (str, int, float, bool) and any(isinstance(n, (DictConfig, ListConfig))
                                                          for n in new._iter_ex(resolve=False)):
                raise XmkdConfigError(f"{origin}: key '{full}': expected a list of {element.__name__} values, "
                                      f"got {_shown(new)}")
        elif isinstance(new, (DictConfig, ListConfig)):
            kind = getattr(have._metadata.ref_type, "__name__", "plain")
            raise XmkdConfigError(f"{origin}: key '{full}': expected a single {kind} value, got {_shown(new)}")


def _merge(base: DictConfig, layer: DictConfig, origin: str) -> DictConfig:
    _check_shapes(base, layer, origin)
    try:
        return OmegaConf.merge(base, layer)
    except OmegaConfBaseException as err:
        raise XmkdConfigError(f"{origin}: {_describe(err)}") from None


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    schema: type = ExperimentConfig,
) -> DictConfig:
    """Load `path` (with its defaults), apply `key=value` overrides and validate against `schema`.

    Returns a read-only DictConfig. Raises XmkdConfigError naming the key and its file on any problem.
    """
    cfg = OmegaConf.structured(schema)
    if path is not None:
        for layer_path, layer in _layers(Path(path)):
            cfg = _merge(cfg, layer, str(layer_path))
    for item in overrides:
        if "=" not in item:
            raise XmkdConfigError(f"override {item!r}: expected key=value")
        try:
            layer = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as err:
            raise XmkdConfigError(f"override {item!r}: {_describe(err)}") from None
        cfg = _merge(cfg, layer, f"override {item!r}")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise XmkdConfigError(f"{path or 'config'}: required key(s) without a value: {', '.join(missing)}")
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise XmkdConfigError(f"{path or 'config'}: {_describe(err)}") from None
    OmegaConf.set_readonly(cfg, True)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def peek_recipe(path: str | Path | None, overrides: Sequence[str] = ()) -> str:
    """The `recipe` a config names (after defaults and overrides), before choosing the schema to validate it."""
    name = ""
    if path is not None:
        for _, layer in _layers(Path(path)):
            name = str(layer.get("recipe", name) or name)
    for item in overrides:
        if item.startswith("recipe="):
            name = item.split("=", 1)[1]
    return name


def save_config(cfg: DictConfig, run_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the fully resolved config into a run directory (atomically) and return its path."""
    return atomic_write_text(Path(run_dir) / name, to_yaml(cfg))
