#!/usr/bin/env python3
"""Latency percentile curves of several contenders as one SVG, from fikra-loadgen results.

x is the percentile on a "nines" axis (-log10(1 - q): 0 = p0, 1 = p90, 2 = p99, 3 = p99.9, ...;
the maximum is drawn one step past the last finite point), y is latency on a log axis. Standard
library only.

    plot_latency.py --out curves.svg [--title TEXT] gateway=gateway.json nginx=nginx.json ...

Each JSON file is one fikra-loadgen output line; its `latency_curve` holds `[quantile, µs]` pairs.
"""

import argparse
import json
import math

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
WIDTH, HEIGHT = 760, 460
LEFT, RIGHT, TOP, BOTTOM = 80, 150, 50, 60


def nines(quantile, max_x):
    """Position of a quantile on the nines axis; the maximum (q = 1) sits at `max_x`."""
    if quantile >= 1.0:
        return max_x
    return -math.log10(1.0 - quantile)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--title", default="Latency percentiles")
    parser.add_argument("series", nargs="+", help="label=file.json")
    args = parser.parse_args()

    series = []
    for item in args.series:
        label, _, path = item.partition("=")
        with open(path) as handle:
            curve = json.load(handle).get("latency_curve") or []
        if curve:
            series.append((label, [(q, max(1, us)) for q, us in curve]))
    if not series:
        raise SystemExit("plot_latency: no latency_curve in the inputs")

    finite = [nines(q, 0) for _, curve in series for q, _ in curve if q < 1.0]
    max_x = math.ceil(round(max(finite), 6)) + 1
    lows = [us for _, curve in series for _, us in curve]
    y_low = 10 ** math.floor(math.log10(min(lows)))
    y_high = 10 ** math.ceil(math.log10(max(lows) * 1.01))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x):
        return LEFT + plot_w * x / max_x

    def sy(us):
        span = math.log10(y_high) - math.log10(y_low)
        return TOP + plot_h * (1 - (math.log10(us) - math.log10(y_low)) / span)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="24" text-anchor="middle" font-size="15">{args.title}</text>',
    ]
    # Vertical grid: one line per nine, the last one is the maximum.
    for x in range(max_x + 1):
        label = "max" if x == max_x else ("p0" if x == 0 else "p" + f"{100 * (1 - 10 ** -x):.{max(0, x - 2)}f}")
        parts.append(f'<line x1="{sx(x):.1f}" y1="{TOP}" x2="{sx(x):.1f}" y2="{TOP + plot_h}" stroke="#ddd"/>')
        parts.append(f'<text x="{sx(x):.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">{label}</text>')
    # Horizontal grid: decades, with 2 and 5 in between.
    decade = y_low
    while decade <= y_high:
        for step in (1, 2, 5):
            value = decade * step
            if y_low <= value <= y_high:
                y = sy(value)
                parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="{"#ccc" if step == 1 else "#eee"}"/>')
                text = f"{value / 1000:g} ms" if value >= 1000 else f"{value:g} µs"
                parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{text}</text>')
        decade *= 10
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    parts.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 18}" text-anchor="middle">percentile</text>')
    parts.append(
        f'<text x="18" y="{TOP + plot_h / 2}" text-anchor="middle" transform="rotate(-90 18 {TOP + plot_h / 2})">latency (log)</text>'
    )
    for index, (label, curve) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        points = " ".join(f"{sx(nines(q, max_x)):.1f},{sy(us):.1f}" for q, us in curve)
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for q, us in curve:
            parts.append(f'<circle cx="{sx(nines(q, max_x)):.1f}" cy="{sy(us):.1f}" r="2.5" fill="{colour}"/>')
        y = TOP + 16 + 20 * index
        parts.append(f'<line x1="{LEFT + plot_w + 14}" y1="{y}" x2="{LEFT + plot_w + 38}" y2="{y}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{LEFT + plot_w + 44}" y="{y + 4}">{label}</text>')
    parts.append("</svg>")
    with open(args.out, "w") as handle:
        handle.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
