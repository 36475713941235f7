"""Where the 2D and 3D networks of a cross-modal UDA run agree and disagree on the target's validation split.

    python -m benchmarks.uda_agreement outputs/bench_uda/city/seed0/runs [more runs folders ...]
    python -m benchmarks.uda_agreement --where manmade outputs/bench_uda/rig/seed0/runs

For every run folder (a run directory, or a folder of them) and every labelled point: accuracy of 2D, 3D and xM;
`agree`: 2D and 3D pick the same class; `shared wrong`: they agree on a wrong class (no fusion can fix those);
`one right`: exactly one of them is right, `xM fixes`: the share of those the xM argmax gets right, and
`conf right / wrong`: the mean max probability of the right and of the wrong network on them (the xM average
follows the more confident one). A cross-modal KL that pulls each network toward the other's mistakes shows as
more shared-wrong points; one that makes the wrong network more confident, as fewer fixes. Reads the
last checkpoint of each run (the UDA recipes' default, as released); about 10 s per run on one core.

`--where CLASS` prints instead where the points labelled CLASS go: for each run and each of 2D / 3D / xM, the
share of them predicted as each class (the row of the confusion matrix, in %).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from xmkd.data.labels import LabelSpace
from xmkd.engine.data import EvalSampler, make_loader, to_device
from xmkd.runs.predict import load_trained

COLUMNS = ("2D acc", "3D acc", "xM acc", "agree", "shared wrong", "one right", "xM fixes", "conf right",
           "conf wrong")
KEYS = ("n", "r2", "r3", "rx", "agree", "shared", "one", "fixed", "c_right", "c_wrong")


def tally(probs: dict[str, torch.Tensor], labels: torch.Tensor, ignore: int) -> dict[str, float]:
    """Counts (and confidence sums) of one batch: `probs` holds (N, C) "2d", "3d" and "xm" probabilities."""
    keep = labels != ignore
    y = labels[keep]
    l2, l3, lx = (probs[k].argmax(1)[keep] for k in ("2d", "3d", "xm"))
    r2, r3, rx, same = l2 == y, l3 == y, lx == y, l2 == l3
    one = r2 ^ r3
    c2, c3 = (probs[k].max(1).values[keep][one] for k in ("2d", "3d"))
    right2 = r2[one]
    values = (keep.sum(), r2.sum(), r3.sum(), rx.sum(), same.sum(), (same & ~r2).sum(), one.sum(),
              (one & rx).sum(), torch.where(right2, c2, c3).sum(), torch.where(right2, c3, c2).sum())
    return {k: float(v) for k, v in zip(KEYS, values)}


def rates(counts: dict[str, float]) -> dict[str, float]:
    n, one = max(1.0, counts["n"]), max(1.0, counts["one"])
    return {"2D acc": counts["r2"] / n, "3D acc": counts["r3"] / n, "xM acc": counts["rx"] / n,
            "agree": counts["agree"] / n, "shared wrong": counts["shared"] / n, "one right": counts["one"] / n,
            "xM fixes": counts["fixed"] / one, "conf right": counts["c_right"] / one,
            "conf wrong": counts["c_wrong"] / one}


def predicted_as(probs: dict[str, torch.Tensor], labels: torch.Tensor, cls: int) -> dict[str, torch.Tensor]:
    """For the points labelled `cls`: how many each of "2d", "3d" and "xm" predicts as each class, (C,) counts."""
    mine = labels == cls
    return {k: torch.bincount(p.argmax(1)[mine], minlength=p.shape[1]) for k, p in probs.items()}


def val_predictions(run_dir: Path) -> tuple[LabelSpace, Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]]:
    """The run's label space and, per validation batch, its ("2d", "3d", "xm") probabilities and labels."""
    recipe = load_trained(run_dir, needs=("predict_all", "has no separate 2D / 3D predictions"))
    val = recipe.val_dataset()
    loader = make_loader(val, EvalSampler(len(val)), recipe.cfg.data.batch_size, recipe.collate, 0, False, False)

    def stream() -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        for batch in loader:
            batch = to_device(batch, recipe.device)
            yield recipe.predict_all(batch), batch["labels"]

    return recipe.space, stream()


def agreement(run_dir: Path) -> dict[str, float]:
    space, stream = val_predictions(run_dir)
    ignore = space.ignore_index
    counts = dict.fromkeys(KEYS, 0.0)
    for probs, labels in stream:
        for key, value in tally(probs, labels, ignore).items():
            counts[key] += value
    return rates(counts)


def where(run_dir: Path, name: str) -> tuple[tuple[str, ...], dict[str, torch.Tensor]]:
    """Class names and, per modality, how many of the `name` points it predicts as each class, (C,) counts."""
    space, stream = val_predictions(run_dir)
    names = space.class_names
    if name not in names:
        raise SystemExit(f"{run_dir}: no class {name!r} in its label space (classes: {', '.join(names)})")
    totals: dict[str, torch.Tensor] = {}
    for probs, labels in stream:
        for key, counts in predicted_as(probs, labels, names.index(name)).items():
            totals[key] = totals.get(key, 0) + counts.cpu()
    return names, totals


def runs_in(folder: Path) -> list[Path]:
    if (folder / "config.yaml").exists():
        return [folder]
    runs = sorted(p for p in folder.iterdir() if (p / "config.yaml").exists())
    if not runs:
        raise SystemExit(f"{folder}: no run directories (folders with a config.yaml)")
    return runs


def main_where(name: str, folders: list[str]) -> None:
    torch.set_grad_enabled(False)
    header = False
    for folder in map(Path, folders):
        for run in runs_in(folder):
            names, predicted = where(run, name)
            if not header:
                print(f"{name} points predicted as (%):\n| runs | run | net | points | " + " | ".join(names) + " |")
                print("|---|---|---|---|" + "---|" * len(names))
                header = True
            for net, counts in predicted.items():
                share = counts.double() / max(1, int(counts.sum()))
                cells = " | ".join(f"{100 * float(x):.1f}" for x in share)
                print(f"| {folder} | {run.name} | {net} | {int(counts.sum())} | {cells} |")


def main(folders: list[str]) -> None:
    torch.set_grad_enabled(False)
    print("| runs | run | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for folder in map(Path, folders):
        for run in runs_in(folder):
            row = agreement(run)
            print(f"| {folder} | {run.name} | " + " | ".join(f"{100 * row[c]:.1f}" for c in COLUMNS) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if len(sys.argv) > 1 else 2)
    if sys.argv[1] == "--where":
        if len(sys.argv) < 4:
            raise SystemExit("usage: python -m benchmarks.uda_agreement --where CLASS RUNS_DIR [...]")
        main_where(sys.argv[2], sys.argv[3:])
    else:
        main(sys.argv[1:])
