"""report.html of `medattn track`: one self-contained page (no network, pictures inline as base64 PNG).

The page holds the visits (date, scan, registration), the summary table of growth.csv, and per lesion its
volume-over-time plot and an axial slice with its contour at every visit.
"""

from __future__ import annotations

import base64
import html

_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 20px; font-size: 13px; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; }
th { background: #eee; }
td.text, th.text { text-align: left; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px; vertical-align: middle; }
.lesion { border-top: 2px solid #ccc; padding-top: 8px; margin-top: 16px; }
.visits { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-end; }
figure { margin: 0; text-align: center; font-size: 12px; }
figure img { display: block; background: #000; }
.note { font-size: 12px; color: #555; }
"""


def _image(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'


def _cell(value: object) -> str:
    if value is None or value == "":
        return "<td></td>"
    if isinstance(value, float):
        return f"<td>{value:.4g}</td>" if abs(value) < 1e5 else f"<td>{value:.0f}</td>"
    text = html.escape(str(value))
    return f'<td class="text">{text}</td>' if isinstance(value, str) else f"<td>{text}</td>"


def _table(columns: list[str], rows: list[list[object]], css_id: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f'<table id="{css_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _swatch(color: tuple[int, int, int]) -> str:
    return f'<span class="swatch" style="background: rgb{tuple(color)}"></span>'


def report_html(
    report: dict,
    colors: dict[int, tuple[int, int, int]],
    plots: dict[int, bytes],
    slices: dict[int, list[tuple[str, str, bytes]]],
) -> str:
    """The page's HTML text.

    Args:
        report: report.json's content (visits, lesions, growth, settings).
        colors: lesion id -> its colour.
        plots: lesion id -> PNG of its volume over time.
        slices: lesion id -> [(date, status, PNG of its axial slice)] per visit it has a row at.
    """
    visits = [
        [
            v["date"],
            v["days"],
            v["case"],
            v["date_source"],
            v["registration"]["metric"] if v["days"] else "baseline",
        ]
        for v in report["visits"]
    ]
    growth = report["growth"]
    summary_rows = []
    for row in growth:
        summary_rows.append(
            [
                row["lesion"],
                row["category"],
                row["first_date"],
                row["last_date"],
                row["volume_first_ml"],
                row["volume_last_ml"],
                row["change_percent"],
                row["doubling_time_days"],
            ]
        )
    summary = _table(
        [
            "lesion",
            "category",
            "first",
            "last",
            "first (mL)",
            "last (mL)",
            "change %",
            "doubling time (days)",
        ],
        summary_rows,
        "summary",
    )
    # The lesion column gets its colour swatch.
    for row in growth:
        lesion = row["lesion"]
        summary = summary.replace(
            f"<tr><td>{lesion}</td>", f"<tr><td>{_swatch(colors[lesion])}{lesion}</td>", 1
        )
    sections = []
    for row in growth:
        lesion = row["lesion"]
        pictures = "".join(
            f"<figure>{_image(png, f'lesion {lesion} on {date}')}<figcaption>{html.escape(date)}: "
            f"{html.escape(status)}</figcaption></figure>"
            for date, status, png in slices.get(lesion, [])
        )
        sections.append(
            f'<div class="lesion" id="lesion-{lesion}"><h3>{_swatch(colors[lesion])}lesion {lesion}: '
            f"{html.escape(row['category'])}</h3>"
            f'<div class="visits">{_image(plots[lesion], f"volume of lesion {lesion}")}{pictures}</div></div>'
        )
    settings = report["settings"]
    lesions_found = "".join(sections) or "<p>No lesion at any visit.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>medattn track report</title>
<style>{_STYLE}</style></head><body>
<h1>Follow-up report</h1>
<p class="note">{len(report["visits"])} visits, baseline {html.escape(report["visits"][0]["date"])}; label
{html.escape(str(settings["label"]))}; segmentation from {html.escape(settings["source"])}. Volumes on each
visit's own grid; centroids in the baseline's RAS mm. Categories: progression at
+{settings["progression_percent"]:g} % from the smallest volume, partial response at
-{settings["response_percent"]:g} % from the first, complete
response when it vanished. medattn {html.escape(report["versions"]["medattn"])}.</p>
<h2>Summary</h2>{summary}
<h2>Visits</h2>{_table(["date", "days", "scan", "date from", "registration metric (MI)"], visits, "visits")}
<h2>Lesions</h2>{lesions_found}
</body></html>
"""
