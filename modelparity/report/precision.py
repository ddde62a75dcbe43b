"""precision.html: the drift table (model x format: accuracy, change in points, top-1/top-5 agreement,
changed predictions), a plot of accuracy (or agreement, without labels) against precision per model,
and the diverging-node view of each traced check. Self-contained: inline CSS and SVG only."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from modelparity.report.html import CSS, divergence_table

COLOURS = {"passed": "#c8ecc8", "failed": "#f4b4b4", "xfailed": "#f6e3a8", "xpassed": "#f4b4b4",
           "skipped": "#e4e4e4"}
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def _first_output(record: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next(iter(record.get("outputs", {}).values()), None)


def _metric(drift: Mapping[str, Any]) -> tuple[float, float, str]:
    """(value, FP32's value, name): accuracy on a labelled set, else top-1 agreement with FP32."""
    if drift.get("accuracy") is not None:
        return drift["accuracy"], drift["accuracy_reference"], "accuracy"
    return drift["agreement"], 1.0, "top-1 agreement with FP32"


def _row(record: Mapping[str, Any]) -> str:
    drift = _first_output(record)
    cells = ["", "", "", "", "", ""]
    if drift is not None:
        accuracy = (f"{drift['accuracy']:.2%} (FP32 {drift['accuracy_reference']:.2%})"
                    if drift.get("accuracy") is not None else "no labels")
        delta = (f"{drift['accuracy_delta_points']:+.2f}" if drift.get("accuracy_delta_points") is not None
                 else "")
        cells = [accuracy, delta, f"{drift['agreement']:.2%}", f"{drift['top5_agreement']:.2%}",
                 f"{drift['changed']}/{drift['samples']}",
                 ", ".join(f"{a}&rarr;{b} &times;{n}" for a, b, n in drift["confusion"][:5])]
    status = record.get("status", "")
    return (f"<tr style='background:{COLOURS.get(status, '#fff')}'><td>{escape(record['model'])}</td>"
            f"<td>{escape(record['format'])}</td><td>{escape(str(record.get('precision', '')))}</td>"
            f"<td>{escape(status)}</td>" + "".join(f"<td>{c if i == 5 else escape(c)}</td>"
                                                    for i, c in enumerate(cells)) + "</tr>")


def accuracy_plot(model: str, records: Sequence[Mapping[str, Any]]) -> str:
    """One SVG: precision on x (fp32, fp16, bf16, int8), accuracy or agreement on y, a dot per format."""
    points = [(r, _metric(d)) for r in records if (d := _first_output(r)) is not None]
    if not points:
        return ""
    name = points[0][1][2]
    reference = points[0][1][1]
    values = [v for _, (v, _, _) in points] + [reference]
    low = max(0.0, min(values) - 0.02)
    width, height, left, top, bottom = 460, 200, 60, 20, 30
    plot_h = height - top - bottom

    def y(value: float) -> float:
        return top + plot_h * (1 - (value - low) / max(1.0 - low, 1e-9))

    def x(precision: str) -> float:
        return left + 40 + PRECISIONS.index(precision) * 100

    svg = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-size='11' "
           f"font-family='sans-serif'><text x='{left}' y='12'>{escape(model)}: {escape(name)}</text>"]
    for tick in (low, (low + 1) / 2, 1.0):
        svg.append(f"<line x1='{left}' x2='{width - 10}' y1='{y(tick):.1f}' y2='{y(tick):.1f}' "
                   f"stroke='#ddd'/><text x='4' y='{y(tick) + 4:.1f}'>{tick:.1%}</text>")
    for precision in PRECISIONS:
        svg.append(f"<text x='{x(precision) - 12}' y='{height - 8}'>{precision}</text>")
    svg.append(f"<circle cx='{x('fp32')}' cy='{y(reference):.1f}' r='5' fill='#333'>"
               f"<title>torch eager FP32: {reference:.2%}</title></circle>")
    offsets: dict[str, int] = defaultdict(int)
    for record, (value, _, _) in points:
        precision = str(record.get("precision"))
        if precision not in PRECISIONS:
            continue
        dx = (offsets[precision] % 7 - 3) * 6
        offsets[precision] += 1
        colour = "#2a7" if record.get("status") == "passed" else "#d33"
        svg.append(f"<circle cx='{x(precision) + dx}' cy='{y(value):.1f}' r='4' fill='{colour}' "
                   f"fill-opacity='0.75'><title>{escape(record['format'])}: {value:.2%} "
                   f"({escape(str(record.get('status')))})</title></circle>")
    svg.append("</svg>")
    return "".join(svg)


def precision_html(records: Sequence[Mapping[str, Any]]) -> str:
    by_model: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        by_model[record["model"]].append(record)
    plots = "".join(accuracy_plot(model, group) for model, group in sorted(by_model.items()))
    traced = "".join(
        f"<details><summary>{escape(r['test_id'])}</summary>{divergence_table(r['divergence'])}</details>"
        for r in records if isinstance(r.get("divergence"), Mapping))
    problems = "".join(f"<h3>{escape(r['test_id'])}</h3><pre>{escape(r['message'])}</pre>"
                       for r in records if r.get("message"))
    return ("<!doctype html><html><head><meta charset='utf-8'><title>modelparity precision drift</title>"
            f"<style>{CSS}</style></head><body><h1>Precision drift against torch eager FP32</h1>"
            "<h2>Drift table</h2><table><tr><th>model</th><th>format</th><th>precision</th><th>check</th>"
            "<th>accuracy</th><th>&Delta; points</th><th>top-1 agreement</th><th>top-5 agreement</th>"
            "<th>changed predictions</th><th>changed (FP32&rarr;format)</th></tr>"
            + "".join(_row(r) for r in records) + "</table>"
            "<h2>Accuracy (or agreement) against precision</h2><p>Dark: torch eager FP32; green: a format "
            "that passed its gate, red: one that did not.</p>" + plots
            + "<h2>Problems</h2>" + (problems or "<p>none</p>")
            + "<h2>Diverging nodes (ONNX formats traced: FP16 always, others when they fail)</h2>"
            + (traced or "<p>none traced</p>") + "</body></html>")
