"""parity.html: one self-contained file (inline CSS and SVG, no scripts, no network).

A formats x models matrix coloured by status with the worst max abs error in each cell, an error
distribution plot per format, and a detail section per check.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from modelparity.checks.compare import HISTOGRAM_EDGES
from modelparity.report import cell_status, display_status

_COLOUR = {"passed": "#c8ecc8", "failed": "#f4b4b4", "error": "#f4b4b4", "skipped": "#e4e4e4",
           "xfailed": "#f6e3a8", "xpassed": "#f4b4b4", "vacuous": "#e6eec0", "not-judged": "#d9dcef"}
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 7px;text-align:left}
th{background:#f2f2f2}td.cell{font-family:monospace;text-align:center}
td.cell a{color:inherit;text-decoration:none;display:block}
details{margin:.3em 0;border:1px solid #ddd;padding:.2em .6em}summary{cursor:pointer}
pre{white-space:pre-wrap;background:#fafafa;padding:.5em;font-size:12px}
.meta td{font-family:monospace;font-size:12px}
"""


def render_html(report: Mapping[str, Any]) -> str:
    checks = report["checks"]
    models = sorted({c["model"] for c in checks})
    formats = list(dict.fromkeys(c["format"] for c in checks))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>modelparity parity report"
             f"</title><style>{CSS}</style></head><body><h1>modelparity parity report</h1>",
             _summary(report), "<h2>Matrix (worst max abs error over batches · its multiple of the "
             "reference's noise floor, ×N)</h2>", _NOISE_NOTE,
             _matrix(checks, models, formats), _notes(checks), "<h2>Error distribution per format</h2>",
             _histogram_svg(checks, formats), "<h2>Checks</h2>",
             *(_detail(c) for c in checks), "</body></html>"]
    return "\n".join(parts)


_NOISE_NOTE = ("<p>×N: the format's error as a multiple of the reference's own noise (torch float32 "
               "against float64 on the same inputs, and across thread counts). Near 1: the format adds "
               "no more error than float32 itself; thousands: it adds its own (FP16, INT8, or a bug). "
               "A tolerance is never tighter than 10 × the floor; where one asked for less, the check "
               "says so. 'ran otherwise': the runtime reports a device or precision other than the "
               "format declares, and the check failed on it.</p>")


def _summary(report: Mapping[str, Any]) -> str:
    machine, session = report["machine"], report["session"]
    rows = [("generated", report["generated"]),
            ("summary", ", ".join(f"{k} {v}" for k, v in report["summary"].items() if v)),
            ("cpu", f"{machine['cpu_model']} ({machine['cpu_count']} cores) flags "
                    f"{' '.join(machine['cpu_flags'])}"),
            ("tools", ", ".join(f"{k} {v}" for k, v in report["tools"].items())),
            ("opsets", str(session.get("opsets"))),
            ("duration", f"{session.get('duration_seconds', 0):.1f} s"),
            ("tolerances", "; ".join(
                f"{k}: {p['scale_atol']:g} x scale + rtol {p['rtol']:g}, cosine >= {p['min_cosine']:g}, "
                f"SNR >= {p['min_snr_db']:g} dB, |bias| <= {p['max_bias']:g} x scale, |gain - 1| <= "
                f"{p['max_gain_error']:g}" for k, p in report["tolerance_profiles"].items()))]
    return "<table class='meta'>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>"
                                            for k, v in rows) + "</table>"


def _matrix(checks: list[Mapping[str, Any]], models: list[str], formats: list[str]) -> str:
    cells: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for check in checks:
        cells[check["format"], check["model"]].append(check)
    head = ("<tr><th>format</th><th>profile</th><th>file opset</th>"
            + "".join(f"<th>{escape(m)}</th>" for m in models))
    rows = [head + "</tr>"]
    for fmt in formats:
        profile = next(c["precision_profile"] for c in checks if c["format"] == fmt)
        opsets = sorted({c["opset"]["actual"] for c in checks if c["format"] == fmt and "opset" in c})
        row = (f"<tr><th>{escape(fmt)}</th><td>{escape(profile)}</td>"
               f"<td>{escape(', '.join(map(str, opsets)))}</td>")
        for model in models:
            group = cells.get((fmt, model), [])
            if not group:
                row += "<td></td>"
                continue
            status = cell_status(group)
            worst = next(c for c in group if display_status(c) == status)
            errors = [c["worst_abs"] for c in group if "worst_abs" in c]
            ratios = [c["noise_ratio"] for c in group if "noise_ratio" in c]
            text = f"{max(errors):.2g}" if errors else status
            text += f" · {status}" if errors and status in ("vacuous", "not-judged") else ""
            text += f" · {max(ratios):.3g}×N" if ratios else ""
            text += " · ran otherwise" if any(c.get("execution", {}).get("mismatches") for c in group) else ""
            title = escape(worst.get("message", "")[:300], quote=True)
            row += (f"<td class='cell' style='background:{_COLOUR[status]}' title='{title}'>"
                    f"<a href='#{_anchor(worst)}'>{escape(text)}</a></td>")
        rows.append(row + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _notes(checks: list[Mapping[str, Any]]) -> str:
    """What converters did that the numbers alone do not show (opset kept, nothing fused...)."""
    notes: dict[str, set[str]] = defaultdict(set)
    for check in checks:
        for note in check.get("notes", []):
            notes[note].add(check["model"])
    if not notes:
        return ""
    items = "".join(f"<li>{escape(note)} ({escape(', '.join(sorted(models)))})</li>"
                    for note, models in sorted(notes.items()))
    return f"<h3>Conversion notes</h3><ul>{items}</ul>"


def _histogram_svg(checks: list[Mapping[str, Any]], formats: list[str]) -> str:
    """Share of output elements per decade of absolute error, one row per format (darker = more)."""
    bins = len(HISTOGRAM_EDGES) - 1
    totals = {f: [0] * bins for f in formats}
    for check in checks:
        for output in check.get("comparison", {}).get("outputs", []):
            for i, count in enumerate(output.get("abs_error_histogram", [])):
                totals[check["format"]][i] += count
    label_width, cell, height = 260, 36, 18
    width = label_width + cell * bins
    svg = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' "
           f"height='{height * (len(formats) + 2)}' font-size='11' font-family='monospace'>"]
    labels = ["0"] + [f"1e{e}" for e in range(-9, 2)]
    for i, label in enumerate(labels):
        svg.append(f"<text x='{label_width + i * cell + 2}' y='12'>{'<' if i else ''}{label}</text>")
    for row, fmt in enumerate(formats):
        y = height * (row + 1)
        svg.append(f"<text x='0' y='{y + 13}'>{escape(fmt)}</text>")
        total = sum(totals[fmt]) or 1
        for i, count in enumerate(totals[fmt]):
            share = count / total
            shade = int(255 - 215 * share ** 0.5)
            svg.append(f"<rect x='{label_width + i * cell}' y='{y}' width='{cell - 1}' "
                       f"height='{height - 2}' fill='rgb({shade},{shade},255)'>"
                       f"<title>{escape(fmt)}: {share:.1%} of elements</title></rect>")
    svg.append("</svg>")
    return "".join(svg) + ("<p>Columns: absolute error below the decade shown (first column: exactly "
                           "0). Shade: share of all output elements of that format.</p>")


def _anchor(check: Mapping[str, Any]) -> str:
    return "c-" + "".join(ch if ch.isalnum() else "-" for ch in check["test_id"])


def _detail(check: Mapping[str, Any]) -> str:
    chain = " → ".join(step["id"] for step in check.get("chain", []))
    lines = [f"<details id='{_anchor(check)}'><summary style='background:{_COLOUR[check['status']]}'>"
             f"{escape(check['test_id'])}: {escape(check['status'])}</summary>",
             f"<p>chain: torch → {escape(chain)}; profile {escape(check['precision_profile'])}; "
             f"batch {check['batch']}</p>"]
    execution = check.get("execution")
    if execution:
        declared = execution["declared"]
        lines.append(f"<p>declared {escape(declared['device'])} / {escape(declared['precision'])}; ran "
                     f"{escape(execution['ran'])}"
                     + "".join(f"<br><b>{escape(m)}</b>" for m in execution["mismatches"]) + "</p>")
    if check.get("repro"):
        lines.append(f"<p>inputs: {escape(check['inputs_file'])}; reproduce: <code>{escape(check['repro'])}"
                     "</code></p>")
    if check.get("message"):
        lines.append(f"<pre>{escape(check['message'])}</pre>")
    logs = [(step["node"], step["log"]) for step in check.get("build", []) if step.get("log")]
    if logs:  # converters print a lot; their logs stay in the store next to each artifact
        lines.append("<p>conversion logs: " + ", ".join(
            f"<a href='{escape(Path(log).as_uri())}'>{escape(node)}</a>" for node, log in logs) + "</p>")
    for output in check.get("comparison", {}).get("outputs", []):
        tol = output["tolerance"]
        stats = {k: output.get(k) for k in ("max_abs", "max_abs_index", "max_rel", "mean_abs",
                                            "p99_abs", "cosine", "snr_db", "out_of_tolerance", "elements",
                                            "required_atol", "top1_agreement", "top5_agreement",
                                            "noise_floor", "noise_text")}
        share = f", up to {tol['max_mismatch']:.2%} outside" if tol.get("max_mismatch") else ""
        lines.append(f"<p>output <b>{escape(output['name'])}</b>: tolerance atol {tol['atol']:g}, "
                     f"rtol {tol['rtol']:g}{share} ({escape('; '.join(tol['layers']))})</p><table>"
                     + "".join(f"<tr><th>{k}</th><td>{escape(_fmt(v))}</td></tr>" for k, v in stats.items())
                     + "</table>")
    if isinstance(check.get("divergence"), Mapping):
        lines.append(divergence_table(check["divergence"]))
    elif check.get("divergence"):
        lines.append(f"<p>diverging node: {escape(check['divergence'])}</p>")
    for key in ("facts", "reference_facts", "noise_floor", "below_noise_floor", "build", "error", "warnings"):
        if check.get(key):
            lines.append(f"<p>{key}</p><pre>{escape(_pretty(check[key]))}</pre>")
    return "".join(lines) + "</details>"


def divergence_table(divergence: Mapping[str, Any], after: int = 3) -> str:
    """The diverging-node view: every tensor both graphs share, in topological order, up to a few past
    the first one out of tolerance (highlighted), with its error and its range."""
    trail = divergence.get("trail", [])
    first = next((i for i, e in enumerate(trail) if not e["within"]), len(trail))
    head = (f"first diverging node: <b>{escape(str(divergence['node']))}</b> "
            f"({escape(str(divergence['op_type']))})" if divergence.get("node")
            else "no diverging node: every shared tensor within tolerance")
    rows = "".join(
        f"<tr style='background:{'#f4b4b4' if not e['within'] else '#fff'}'><td>{escape(e['name'])}</td>"
        f"<td>{e['max_abs']:.3g}</td><td>{e['reference_range']:.3g}</td>"
        f"<td>{e['max_abs'] / max(e['reference_range'], 1e-30):.2%}</td><td>{e['nonfinite']}</td></tr>"
        for e in trail[: first + 1 + after])
    return (f"<p>{head}; {divergence.get('compared', 0)} tensors compared by name</p><table><tr><th>tensor"
            "</th><th>max |err|</th><th>reference range</th><th>err / range</th><th>Inf/NaN (new)</th>"
            f"</tr>{rows}</table>")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _pretty(value: Any) -> str:
    import json

    return json.dumps(value, indent=1, default=str)
