"""latency.html from pytest-benchmark's JSON: one self-contained file (inline CSS and SVG).

Per model: a bar chart of the median latency per format with p90/p99 whiskers for each batch size,
a table with what ran (provider, precision actually used, threads) and memory, and, where more
than one batch was timed, throughput (items per second) against batch size.

Any saved pytest-benchmark run can be rendered again:
    python -m modelparity.report.latency .benchmarks/.../0001_nightly.json reports/latency.html
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from modelparity.report.html import CSS

_BAR = "#7aa7d8"
_LINES = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf")


def write_latency_html(benchmark_json: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(benchmark_json))


def render(benchmark_json: Mapping[str, Any]) -> str:
    benchmarks = benchmark_json.get("benchmarks", [])
    loads = [b["extra_info"] for b in benchmarks if "load" in b.get("extra_info", {})]
    rows = [_row(b) for b in benchmarks if "load" not in b.get("extra_info", {})]
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_model[row["model"]].append(row)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>modelparity latency report"
             f"</title><style>{CSS}</style></head><body><h1>modelparity latency report</h1>",
             _summary(benchmark_json, rows)]
    for model, group in sorted(by_model.items()):
        parts.append(f"<h2>{escape(model)}</h2>")
        for batch in sorted({r["batch"] for r in group}):
            at_batch = sorted((r for r in group if r["batch"] == batch), key=lambda r: r["median"])
            parts += [f"<h3>batch {batch}: median latency, whiskers to p90 and p99</h3>",
                      _bars_svg(at_batch), _table(at_batch)]
        parts.append(_throughput(group))
    if loads:
        parts.append(_load_table(loads))
    if not rows and not loads:
        parts.append("<p>No benchmarks were run (use --benchmark-only, not --benchmark-disable).</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _row(benchmark: Mapping[str, Any]) -> dict[str, Any]:
    """One benchmark, flattened; benchmarks that are not the harness's keep their name and group."""
    stats, extra = benchmark["stats"], benchmark.get("extra_info", {})
    return {
        "model": extra.get("model", benchmark.get("group") or "other"),
        "format": extra.get("format", benchmark["name"]), "batch": int(extra.get("batch", 1)),
        "median": stats["median"], "p90": extra.get("p90", stats["max"]),
        "p99": extra.get("p99", stats["max"]), "rounds": stats["rounds"], "extra": extra,
    }


def _gpu_text(gpu: Mapping[str, Any]) -> str:
    if not gpu.get("gpus"):
        return "none"
    return (f"{', '.join(gpu['gpus'])}; driver {gpu.get('driver')}; CUDA {gpu.get('torch_cuda_build')}; "
            f"cuDNN {gpu.get('cudnn')}; TensorRT {gpu.get('tensorrt')}")


def _summary(benchmark_json: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    machine = benchmark_json.get("machine_info", {})
    ours = machine.get("modelparity", {})
    commit = benchmark_json.get("commit_info", {})
    facts = [("generated", benchmark_json.get("datetime", "")),
             ("cpu", f"{ours.get('cpu_model', machine.get('cpu', {}).get('brand_raw', '?'))} "
                     f"({ours.get('cpu_count', '?')} cores) flags {' '.join(ours.get('cpu_flags', []))}"),
             ("gpu", _gpu_text(ours.get("gpu", {}))),
             ("tools", ", ".join(f"{k} {v}" for k, v in ours.get("tools", {}).items())),
             ("commit", f"{commit.get('id', '?')}{' (dirty)' if commit.get('dirty') else ''}"),
             ("benchmarks", str(len(rows)))]
    return "<table class='meta'>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>"
                                            for k, v in facts) + "</table>"


def _ms(seconds: float) -> str:
    milliseconds = seconds * 1000
    return f"{milliseconds:.3g}" if milliseconds < 100 else f"{milliseconds:.0f}"


def _bars_svg(rows: Sequence[Mapping[str, Any]]) -> str:
    label_width, plot_width, row_height = 330, 420, 18
    scale = max(r["p99"] for r in rows) or 1.0
    height = row_height * len(rows) + 24
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{label_width + plot_width + 150}' "
             f"height='{height}' font-size='11' font-family='monospace'>"]
    for index, row in enumerate(rows):
        y = index * row_height + 4
        mid = y + row_height / 2 - 2

        def x(seconds: float) -> float:
            return label_width + plot_width * seconds / scale
        parts += [
            f"<text x='{label_width - 6}' y='{mid + 4}' text-anchor='end'>{escape(row['format'])}</text>",
            f"<rect x='{label_width}' y='{y}' width='{x(row['median']) - label_width:.1f}' "
            f"height='{row_height - 6}' fill='{_BAR}'/>",
            f"<line x1='{x(row['median']):.1f}' x2='{x(row['p99']):.1f}' y1='{mid}' y2='{mid}' "
            "stroke='#333'/>",
            f"<line x1='{x(row['p90']):.1f}' x2='{x(row['p90']):.1f}' y1='{mid - 4}' y2='{mid + 4}' "
            "stroke='#333'/>",
            f"<line x1='{x(row['p99']):.1f}' x2='{x(row['p99']):.1f}' y1='{mid - 6}' y2='{mid + 6}' "
            "stroke='#333'/>",
            f"<text x='{x(row['p99']) + 6:.1f}' y='{mid + 4}'>{_ms(row['median'])} ms "
            f"(p99 {_ms(row['p99'])})</text>"]
    axis_y = height - 6
    parts.append(f"<text x='{label_width}' y='{axis_y}'>0</text><text x='{label_width + plot_width}' "
                 f"y='{axis_y}' text-anchor='end'>{_ms(scale)} ms</text></svg>")
    return "".join(parts)


def _native(extra: Mapping[str, Any]) -> str:
    """Latency a runner measured inside its own program (the LibTorch C++ runner), if it did."""
    native = extra.get("native_latency")
    return f"{native['p50_ms']:.3f} / {native['p99_ms']:.3f}" if native else ""


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    head = ("format", "provider", "precision", "threads", "median ms", "p90 ms", "p99 ms", "rounds",
            "items/s", "first call ms", "load peak MiB", "run peak MiB", "timed",
            "in-program p50 / p99 ms")
    body = []
    for row in rows:
        extra = row["extra"]
        memory = extra.get("memory") or {}
        precision = extra.get("precision", "?")
        if extra.get("precision_source") == "artifact":
            precision += " (artifact)"
        cells = (row["format"], extra.get("provider", "?"), precision, extra.get("threads", "?"),
                 _ms(row["median"]), _ms(row["p90"]), _ms(row["p99"]), row["rounds"],
                 extra.get("items_per_second", ""), _ms(extra["first_call_seconds"])
                 if "first_call_seconds" in extra else "", memory.get("load_peak_mib", ""),
                 memory.get("run_peak_mib", ""), extra.get("timed", ""), _native(extra))
        body.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>")
    return ("<table class='meta'><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"
            + "".join(body) + "</table>")


def _load_table(loads: Sequence[Mapping[str, Any]]) -> str:
    """The HTTP services under concurrent load (fixtures/load.py): one row per model and format."""
    head = ("model", "format", "clients", "seconds", "requests", "failed", "requests/s", "p50 ms",
            "p90 ms", "p99 ms", "max ms", "statuses")
    body = []
    for extra in sorted(loads, key=lambda e: (e["model"], e["format"])):
        load = extra["load"]
        cells = (extra["model"], extra["format"], load["clients"], load["seconds"], load["requests"],
                 load["failed"], load["throughput_rps"], load["p50_ms"], load["p90_ms"], load["p99_ms"],
                 load["max_ms"], ", ".join(f"{k}: {v}" for k, v in load["statuses"].items()))
        body.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>")
    return ("<h2>HTTP services under load (concurrent clients posting batch-1 .npz to /v1/infer)</h2>"
            "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(body)
            + "</table>")


def _throughput(rows: Sequence[Mapping[str, Any]]) -> str:
    """Items per second against batch size, one line per format timed at two batches or more."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        series[row["format"]].append((row["batch"], row["batch"] / row["median"]))
    series = {f: sorted(points) for f, points in series.items() if len(points) > 1}
    if not series:
        return ""
    batches = sorted({b for points in series.values() for b, _ in points})
    top = max(v for points in series.values() for _, v in points)
    left, width, height, legend = 60, 420, 240, 340

    def x(batch: int) -> float:
        return left + width * (batches.index(batch) / max(len(batches) - 1, 1))

    def y(value: float) -> float:
        return 10 + height * (1 - value / top)
    parts = [f"<h3>throughput (items per second) against batch size</h3><svg "
             f"xmlns='http://www.w3.org/2000/svg' width='{left + width + legend}' "
             f"height='{max(height + 40, 14 * len(series) + 20)}' font-size='11' font-family='monospace'>",
             f"<line x1='{left}' x2='{left}' y1='10' y2='{height + 10}' stroke='#333'/>",
             f"<line x1='{left}' x2='{left + width}' y1='{height + 10}' y2='{height + 10}' stroke='#333'/>",
             f"<text x='{left - 4}' y='16' text-anchor='end'>{top:.0f}</text>",
             f"<text x='{left - 4}' y='{height + 10}' text-anchor='end'>0</text>"]
    parts += [f"<text x='{x(b):.1f}' y='{height + 26}' text-anchor='middle'>b{b}</text>" for b in batches]
    for index, (fmt, points) in enumerate(sorted(series.items())):
        colour = _LINES[index % len(_LINES)]
        path = " ".join(f"{x(b):.1f},{y(v):.1f}" for b, v in points)
        parts += [f"<polyline points='{path}' fill='none' stroke='{colour}'/>",
                  f"<text x='{left + width + 12}' y='{14 * index + 16}' fill='{colour}'>"
                  f"{escape(fmt)} ({points[-1][1]:.0f}/s)</text>"]
    parts.append("</svg>")
    return "".join(parts)


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m modelparity.report.latency BENCHMARK.json OUT.html", file=sys.stderr)
        return 2
    source = Path(argv[0])
    try:
        data = json.loads(source.read_text())
    except (OSError, json.JSONDecodeError) as error:
        print(f"{source}: cannot read pytest-benchmark JSON: {error}", file=sys.stderr)
        return 2
    write_latency_html(data, Path(argv[1]))
    print(f"wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
