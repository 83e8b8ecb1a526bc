"""Draw saved against regret, one point per rule and setting, per family (PNG).

Run: python benchmarks/single_run.py --json single.json
     python benchmarks/search_rules.py --json search.json
     python benchmarks/plot_tradeoff.py single.json search.json [--output docs/]

Writes ``stopping_tradeoff.png`` (single runs: the gain rule's ``min_delta`` settings
as one line per ``gain_patience``, patience 1-20 as another, the default marked, and
the hindsight ceiling where ``single.json`` holds it: the most any rule could save at
each regret, knowing every run's whole curve) and
``search_tradeoff.png`` (a search: the default rule against the pruners).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _grid(n: int) -> tuple[int, int]:
    cols = min(4, n)
    return math.ceil(n / cols), cols


def _lines(rows: dict) -> list[tuple[list[str], str, str, object]]:
    """The curves of one panel: patience N, and the gain rule per ``gain_patience`` K
    (``gain-<min_delta>-<K>``), each sorted by its setting."""
    out = []
    pat = sorted((n for n in rows if n.startswith("patience-")), key=lambda n: int(n[9:]))
    out.append((pat, "s--", "patience N (Keras/HF/Lightning)", lambda n: n[9:]))
    gains = [n.split("-") for n in rows if n.startswith("gain-") and n.count("-") == 2]
    styles = {"0": ("o:", "gain rule alone (min_delta)"),
              "3": ("o-", "gain rule, best stood 3 epochs")}
    for k in sorted({g[2] for g in gains}, key=int):
        style, label = styles.get(k, ("^-", f"gain rule, best stood {k} epochs"))
        names = sorted(("-".join(g) for g in gains if g[2] == k),
                       key=lambda n: float(n.split("-")[1]))
        out.append((names, style, label, lambda n: n.split("-")[1]))
    return out


def single(data: dict, out: Path) -> None:
    ceil = data["real"].get("hindsight", {})
    panels = [(f"{t}", rows, ceil.get(t))
              for t, rows in sorted(data["real"]["per_task"].items())]
    panels.append(("real families pooled", data["real"]["pooled"], ceil.get("pooled")))
    if "lcbench" in data:
        panels.append(("LCBench held out, pooled", data["lcbench"]["pooled"],
                       data["lcbench"].get("hindsight", {}).get("pooled")))
    nr, nc = _grid(len(panels))
    fig, axes = plt.subplots(nr, nc, figsize=(4.2 * nc, 3.4 * nr), squeeze=False)
    for ax, (title, rows, top) in zip(axes.flat, panels, strict=False):
        if top:
            ax.plot([x for x, _ in top], [y for _, y in top], "-", color="0.6", lw=1,
                    label="hindsight ceiling (any rule)")
        for names, style, label, tag in _lines(rows):
            xs = [rows[n]["mean_regret"] for n in names]
            ys = [rows[n]["epochs_saved_pct"] for n in names]
            ax.plot(xs, ys, style, ms=4, label=label)
            for n, x, y in zip(names, xs, ys, strict=True):
                ax.annotate(tag(n), (x, y), fontsize=6, xytext=(2, 2),
                            textcoords="offset points")
        d = rows["default"]
        ax.plot([d["mean_regret"]], [d["epochs_saved_pct"]], "r*", ms=12, label="default")
        ax.set_title(title, fontsize=9)
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlabel("mean regret (points)", fontsize=8)
        ax.set_ylabel("epochs saved %", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("One run alone: epochs saved against points lost (up and left is better)")
    fig.tight_layout()
    fig.savefig(out / "stopping_tradeoff.png", dpi=110)
    plt.close(fig)


def search(data: dict, out: Path) -> None:
    panels = [(t, rows) for t, rows in sorted(data["real"]["per_task"].items())]
    panels.append(("real families, mean", data["real"]["mean"]))
    if "lcbench" in data:
        panels.append(("LCBench held out, mean", data["lcbench"]["mean"]))
    nr, nc = _grid(len(panels))
    fig, axes = plt.subplots(nr, nc, figsize=(4.2 * nc, 3.4 * nr), squeeze=False)
    marks = {"default": "r*", "previous": "ro", "keep-top-0": "rs", "keep-top-0.25": "yX",
             "incumbent": "m^", "median": "bs",
             "asha": "gD", "hyperband": "g>", "patient": "cv", "wilcoxon": "kP"}
    hollow = {"previous": "previous default", "keep-top-0": "default without keep_top"}
    for ax, (title, rows) in zip(axes.flat, panels, strict=False):
        for rule, mark in marks.items():
            if rule in rows:
                ax.plot([rows[rule]["mean_regret"]], [rows[rule]["epochs_saved_pct"]], mark,
                        ms=9 if rule == "default" else 6,
                        mfc="none" if rule in hollow else None, label=hollow.get(rule, rule))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("mean regret (points)", fontsize=8)
        ax.set_ylabel("epochs saved %", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("A search: epochs saved against points lost (up and left is better)")
    fig.tight_layout()
    fig.savefig(out / "search_tradeoff.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("single")
    ap.add_argument("search", nargs="?")
    ap.add_argument("--output", default=str(Path(__file__).resolve().parent.parent / "docs"))
    args = ap.parse_args()
    out = Path(args.output)
    single(json.loads(Path(args.single).read_text()), out)
    if args.search:
        search(json.loads(Path(args.search).read_text()), out)
    print(f"wrote {out}/stopping_tradeoff.png" + (" and search_tradeoff.png" if args.search
                                                   else ""))


if __name__ == "__main__":
    main()
