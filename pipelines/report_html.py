"""HTML of the review report: one self-contained page (inline CSS, a few lines of inline JS, relative images).

This module only renders; :mod:`pipelines.report` gathers the content. Every piece of text that reaches the page
goes through :func:`html.escape` (video ids, paths and error messages come from user data), and images are
referenced by the relative paths the caller chose, so the folder can be copied or zipped and opened offline.

Example:
    >>> page = ReportPage(title="Review <1>", summary=[("method", "luss_ae")])
    >>> "Review &lt;1&gt;" in render_page(page)
    True
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

__all__ = ["CurveView", "EventView", "ReportPage", "format_clock", "render_page"]


@dataclass(frozen=True)
class EventView:
    """One event as shown: a table row, and a card with its thumbnail strip when ``detailed``."""

    rank: int  # 1 = highest peak score
    video_id: str
    dataset: str
    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    peak_score: float
    peak_frame: int
    peak_time: float
    mean_score: float
    detailed: bool = False
    strip: str | None = None  # relative path of the thumbnail strip PNG
    strip_frames: tuple[int, ...] = ()
    note: str = ""  # why there is no strip, or what the overlay shows


@dataclass(frozen=True)
class CurveView:
    """One video's score curve figure."""

    video_id: str
    dataset: str
    image: str  # relative path of the PNG
    caption: str = ""


@dataclass(frozen=True)
class ReportPage:
    """Everything the page shows, already turned into strings and relative paths."""

    title: str
    summary: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    threshold: list[tuple[str, str]] = field(default_factory=list)
    metrics: list[tuple[str, str, str]] = field(default_factory=list)  # (name, value, definition)
    events: list[EventView] = field(default_factory=list)
    curves: list[CurveView] = field(default_factory=list)
    events_csv: str | None = None
    generated: str = ""


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:16px 24px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:4px 0 2px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
.muted{color:#666;font-size:12px}.note{background:#fff6e0;border-left:3px solid #e0a800;padding:4px 8px;margin:4px 0}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 9px;border-bottom:1px solid #eee;text-align:left}
table.kv th{color:#555;font-weight:600;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.sortable th{cursor:pointer;user-select:none;background:#f4f4f6}table.sortable th:hover{background:#e8e8ee}
th[data-dir=asc]::after{content:" \\25B2"}th[data-dir=desc]::after{content:" \\25BC"}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 10px;margin:10px 0}.card h3{font-size:14px;margin:0 0 4px}
.card img,.curve img{max-width:100%;height:auto;display:block;margin-top:4px}.curve{margin:10px 0 18px}
"""

# Click a header to sort by that column (numbers by data-v, text otherwise); click again to reverse.
_JS = """
document.querySelectorAll("table.sortable th").forEach(function (th, col) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0], asc = th.dataset.dir !== "asc";
    th.closest("tr").querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = asc ? "asc" : "desc";
    var key = function (row) { var c = row.cells[col]; var v = c.dataset.v;
      return v === undefined ? c.textContent.toLowerCase() : parseFloat(v); };
    Array.from(body.rows).sort(function (a, b) { var x = key(a), y = key(b);
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); }).forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def format_clock(seconds: float) -> str:
    """``m:ss.s`` (or ``h:mm:ss.s``) for a time in seconds.

    Example:
        >>> format_clock(75.25), format_clock(3725.0)
        ('1:15.2', '1:02:05.0')
    """
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(seconds, 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes}:{secs:04.1f}"


def _num(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if math.isfinite(value) else str(value)


def _kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _metrics(page: ReportPage) -> str:
    if not page.metrics:
        return '<p class="muted">No metrics: the scored videos have no frame labels (pass a labelled store).</p>'
    body = "".join(
        f'<tr><th>{_e(name)}</th><td class="num">{_e(value)}</td><td class="muted">{_e(defn)}</td></tr>'
        for name, value, defn in page.metrics
    )
    return f'<table class="kv">{body}</table>'


def _events_table(events: list[EventView]) -> str:
    if not events:
        return '<p class="muted">No event reached the threshold.</p>'
    head = "".join(
        f"<th>{h}</th>"
        for h in ("#", "video", "dataset", "start", "end", "duration (s)", "peak score", "peak at", "mean score")
    )
    rows = []
    for ev in events:
        rank = f'<a href="#event-{ev.rank}">{ev.rank}</a>' if ev.detailed else str(ev.rank)
        cells = [
            f'<td class="num" data-v="{ev.rank}">{rank}</td>',
            f"<td>{_e(ev.video_id)}</td>",
            f"<td>{_e(ev.dataset)}</td>",
            f'<td class="num" data-v="{ev.start_time!r}">{_e(format_clock(ev.start_time))}</td>',
            f'<td class="num" data-v="{ev.end_time!r}">{_e(format_clock(ev.end_time))}</td>',
            f'<td class="num" data-v="{ev.end_time - ev.start_time!r}">{ev.end_time - ev.start_time:.2f}</td>',
            f'<td class="num" data-v="{ev.peak_score!r}">{_e(_num(ev.peak_score))}</td>',
            f'<td class="num" data-v="{ev.peak_time!r}">{_e(format_clock(ev.peak_time))}</td>',
            f'<td class="num" data-v="{ev.mean_score!r}">{_e(_num(ev.mean_score))}</td>',
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="sortable" id="events"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _card(ev: EventView) -> str:
    title = (
        f"#{ev.rank} {_e(ev.video_id)} ({_e(ev.dataset)}), {_e(format_clock(ev.start_time))} to "
        f"{_e(format_clock(ev.end_time))}, peak {_e(_num(ev.peak_score))} at {_e(format_clock(ev.peak_time))}"
    )
    frames = ", ".join(f"{f}{' (peak)' if f == ev.peak_frame else ''}" for f in ev.strip_frames)
    parts = [f'<div class="card" id="event-{ev.rank}"><h3>{title}</h3>']
    parts.append(f'<div class="muted">frames {ev.start_frame}-{ev.end_frame}; strip shows {_e(frames or "-")}</div>')
    if ev.strip:
        parts.append(f'<img src="{_e(ev.strip)}" alt="frames around the peak of event {ev.rank}">')
    if ev.note:
        parts.append(f'<div class="note">{_e(ev.note)}</div>')
    return "".join(parts) + "</div>"


def _curve(curve: CurveView) -> str:
    return (
        f'<div class="curve"><b>{_e(curve.video_id)}</b> <span class="muted">{_e(curve.dataset)}'
        f" {_e(curve.caption)}</span>"
        f'<img src="{_e(curve.image)}" alt="score curve of {_e(curve.video_id)}"></div>'
    )


def render_page(page: ReportPage) -> str:
    """The report as one HTML document (UTF-8, no external resources)."""
    detailed = [ev for ev in page.events if ev.detailed]
    csv = f' <a href="{_e(page.events_csv)}">events.csv</a>' if page.events_csv else ""
    sections = [
        f"<h1>{_e(page.title)}</h1><div class=\"muted\">{_e(page.generated)}</div>",
        "".join(f'<div class="note">{_e(n)}</div>' for n in page.notes),
        "<h2>Run</h2>" + _kv_table(page.summary),
        "<h2>Metrics</h2>" + _metrics(page),
        "<h2>Threshold</h2>" + _kv_table(page.threshold),
        f"<h2>Events ({len(page.events)})</h2><p class=\"muted\">Click a column to sort.{csv}</p>"
        + _events_table(page.events),
        f"<h2>Top {len(detailed)} events</h2>" + "".join(_card(ev) for ev in detailed),
        "<h2>Score curves</h2>"
        + (
            '<p class="muted">Blue: score; dashed: threshold; orange: detected events; red: labelled anomalies.</p>'
            + "".join(_curve(c) for c in page.curves)
            if page.curves
            else '<p class="muted">No scored videos.</p>'
        ),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(page.title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(sections)
        + f"\n<script>{_JS}</script>\n</body></html>\n"
    )
