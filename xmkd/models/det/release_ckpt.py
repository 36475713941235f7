"""Load a SECOND teacher saved by OpenPCDet / CMKD / HSRDN (`torch.save({"model_state": ...})` of a `SECONDNet`
with MeanVFE, VoxelResBackBone8x[_c64] or VoxelBackBone8x, HeightCompression, BaseBEVBackbone and AnchorHeadSingle
[QFL]) into xmkd's `Second`.

The names map one to one (xmkd names its modules after the release's), except:
- `backbone_3d.*` -> `sparse.*`; sparse conv kernels go from the release's (z, y, x) axis order to xmkd's (x, y, z),
  from spconv 2.x's (out, kz, ky, kx, in) or spconv 1.x's (kz, ky, kx, in, out) layout [OpenPCDet:
  pcdet/models/detectors/detector3d_template.py `_load_state_dict` handles the same two];
- the biases of the release's `SparseBasicBlock` convs (followed by a BatchNorm) are folded into that BatchNorm's
  running mean: bn(conv(x) + b) with mean m equals bn(conv(x)) with mean m - b, exactly;
- `backbone_2d.blocks.i.j` -> `bev.backbone.blocks.i.(j-1)` (the release pads with a ZeroPad2d at index 0; xmkd's
  first conv pads itself); `backbone_2d.deblocks` -> `bev.backbone.ups`;
- `dense_head.conv_cls / conv_box / conv_dir_cls` -> `bev.head.cls / box / dir` (same channel order: anchor-major,
  then class / code / bin).
The model must be built with the release's settings (widths, out_channels, anchors with `align_center: False` and
rotations [0, 1.57], 40 + 1 z voxels); any name or shape that does not fit is an error that names it.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from xmkd.errors import XmkdDataError

_RENAMES = [
    (re.compile(r"^backbone_3d\.(.*)$"), lambda m: f"sparse.{m[1]}"),
    (re.compile(r"^backbone_2d\.blocks\.(\d+)\.(\d+)\.(.*)$"),
     lambda m: f"bev.backbone.blocks.{m[1]}.{int(m[2]) - 1}.{m[3]}"),
    (re.compile(r"^backbone_2d\.deblocks\.(.*)$"), lambda m: f"bev.backbone.ups.{m[1]}"),
    (re.compile(r"^dense_head\.conv_(cls|box|dir_cls)\.(.*)$"),
     lambda m: f"bev.head.{ {'cls': 'cls', 'box': 'box', 'dir_cls': 'dir'}[m[1]] }.{m[2]}"),
]
_BLOCK_BIAS = re.compile(r"^(sparse\.conv\d\.\d+)\.conv([12])\.bias$")


def release_name(name: str) -> str | None:
    """xmkd's name of a release state-dict entry (None for one xmkd has no place for)."""
    for pattern, rename in _RENAMES:
        m = pattern.match(name)
        if m:
            return rename(m)
    return None


def _kernel(value: torch.Tensor, target: torch.Size, name: str, source: str) -> torch.Tensor:
    """A release sparse-conv kernel in xmkd's (out, kx, ky, kz, in) layout."""
    out_c, kx, ky, kz, in_c = target
    if tuple(value.shape) == (out_c, kz, ky, kx, in_c):  # spconv 2.x
        return value.permute(0, 3, 2, 1, 4).contiguous()
    if tuple(value.shape) == (kz, ky, kx, in_c, out_c):  # spconv 1.x
        return value.permute(4, 2, 1, 0, 3).contiguous()
    raise XmkdDataError(f"sparse kernel of shape {tuple(value.shape)}: expected spconv 2.x {(out_c, kz, ky, kx, in_c)} "
                        f"or 1.x {(kz, ky, kx, in_c, out_c)} for xmkd's {tuple(target)}", source=source, field=name)


def convert_release_state(state: dict[str, torch.Tensor], model: nn.Module, source: str = "checkpoint"
                          ) -> dict[str, torch.Tensor]:
    """A release `model_state` as a state dict of xmkd's `Second` (`model`, for the target shapes); strict: every
    entry of both sides is accounted for, or an `XmkdDataError` names the first that is not."""
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    biases: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        new = release_name(name)
        if new is None:
            raise XmkdDataError("no place in xmkd's SECOND for this entry", source=source, field=name)
        m = _BLOCK_BIAS.match(new)
        if m:
            biases[f"{m[1]}.bn{m[2]}.running_mean"] = value
            continue
        if new not in target:
            raise XmkdDataError(f"maps to {new!r}, which xmkd's SECOND (as configured) does not have", source=source,
                                field=name)
        if value.ndim == 5 and new.startswith("sparse."):
            value = _kernel(value, target[new].shape, name, source)
        if value.shape != target[new].shape:
            raise XmkdDataError(f"shape {tuple(value.shape)}, xmkd's {new} has {tuple(target[new].shape)}",
                                source=source, field=name)
        out[new] = value
    for key, bias in biases.items():
        if key not in out:
            raise XmkdDataError(f"a conv bias without its BatchNorm {key!r}", source=source, field=key)
        out[key] = out[key] - bias  # bn(conv + b) with mean m == bn(conv) with mean m - b
    missing = sorted(set(target) - set(out))
    if missing:
        raise XmkdDataError(f"the checkpoint lacks {len(missing)} of xmkd's entries, e.g. {missing[:3]}",
                            source=source, field="model_state")
    return out
