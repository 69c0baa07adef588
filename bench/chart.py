#!/usr/bin/env python3
"""Draw the side-by-side benchmark results as one SVG: a panel per scenario, a bar per server.

usage: chart.py CHART.json OUT.svg

CHART.json is what `mktable.py RESULTS.jsonl --chart-json TITLE` writes (compare.sh does it):
{"title": str, "panels": [{"label", "kind", "unit", "better": "higher"|"lower",
"values": {server: number | [before, peak, settled] | null}, "notes": {server: str}}]}.
Needs matplotlib (bench/requirements.txt; compare.sh installs it into bench/.venv). The SVG is
reproducible: the same input gives the same bytes.
"""
import json
import math
import sys

import matplotlib
import matplotlib.ticker

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

OURS = "ferret-ws"
OURS_COLOUR = "#2457c5"
OTHER_COLOUR = "#9aa3b5"
SERIES = ("before", "peak", "settled")
SERIES_COLOURS = ("#c9cfdb", "#9aa3b5", "#5b6475")
SERIES_OURS = ("#b8c9ee", "#6f8fdb", "#2457c5")


def fmt(v):
    if v is None:
        return "–"
    if v >= 1_000_000:
        return "{:.2f}M".format(v / 1e6)
    if v >= 100_000:
        return "{:,.0f}k".format(v / 1000)
    if v >= 100:
        return "{:,.0f}".format(v)
    return "{:.3g}".format(v)


def tick(v, _pos=None):
    if v >= 1_000_000:
        return "{:g}M".format(v / 1e6)
    if v >= 1000:
        return "{:g}k".format(v / 1000)
    return "{:g}".format(v)


def panel(ax, p, servers):
    values = p["values"]
    names = [s for s in servers if s in values]
    y = list(range(len(names)))[::-1]  # first server on top
    grouped = any(isinstance(values[n], list) for n in names)
    top = 0.0
    if grouped:
        h = 0.26
        for k, series in enumerate(SERIES):
            for yi, n in zip(y, names):
                v = values[n][k] if isinstance(values[n], list) else None
                if v is None:
                    continue
                colours = SERIES_OURS if n == OURS else SERIES_COLOURS
                pos = yi + (1 - k) * h
                ax.barh(pos, v, height=h * 0.95, color=colours[k],
                        label=series if n == names[-1] else None)
                ax.text(v, pos, " " + fmt(v), va="center", fontsize=7)
                top = max(top, v)
        ax.legend(loc="lower right", fontsize=7, frameon=False)
    else:
        for yi, n in zip(y, names):
            v = values[n]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                ax.text(0, yi, " no result", va="center", fontsize=7, color="#b3261e")
                continue
            ax.barh(yi, v, height=0.6, color=OURS_COLOUR if n == OURS else OTHER_COLOUR)
            ax.text(v, yi, " " + fmt(v), va="center", fontsize=7.5,
                    fontweight="bold" if n == OURS else "normal")
            top = max(top, v)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    for label in ax.get_yticklabels():
        if label.get_text() == OURS:
            label.set_fontweight("bold")
    ax.set_xlim(0, (top or 1) * 1.25)
    ax.tick_params(axis="x", labelsize=7)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(tick))
    ax.set_title(p["label"], fontsize=9, loc="left", fontweight="bold")
    arrow = "→ more is better" if p.get("better") == "higher" else "← less is better"
    ax.set_xlabel("{}   {}".format(p.get("unit", ""), arrow), fontsize=7.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    data = json.load(open(sys.argv[1], encoding="utf-8"))
    panels = [p for p in data["panels"] if any(v is not None for v in p["values"].values())]
    servers = []
    for p in panels:
        for s in p["values"]:
            if s not in servers:
                servers.append(s)
    if OURS in servers:
        servers.remove(OURS)
        servers.insert(0, OURS)
    plt.rcParams.update({
        "svg.hashsalt": "ferret-ws-bench",  # stable ids: the same input gives the same file
        "svg.fonttype": "none",             # text stays text
        "font.family": "DejaVu Sans",
    })
    cols = 2
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(11, 2.3 * rows + 0.7), squeeze=False)
    for ax, p in zip(axes.flat, panels):
        panel(ax, p, servers)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(data.get("title", ""), fontsize=10, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(sys.argv[2], format="svg", metadata={"Date": None})


if __name__ == "__main__":
    main()
