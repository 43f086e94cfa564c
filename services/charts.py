"""Utilisation series drawn as one standalone SVG document, with nothing but the standard library, so the
API can hand a chart to a browser (or a mail, or a CLI that saves it) without a plotting stack.

One panel per series, stacked in the order given; a text panel per metric that has no series. The x range
is the one asked for, not the data's extent, so panels of the same answer line up and an idle stretch shows
as empty rather than being cropped away.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from models.base import as_utc
from models.monitoring import Series, SeriesAnswer

WIDTH = 960
PLOT_LEFT = 96  # room for the widest y label, "1000 KB/s"
PLOT_RIGHT = WIDTH - 40  # half the widest time label, "12-01 14:00", centred on the last tick
HEADER_HEIGHT = 72
PANEL_HEIGHT = 210
PLOT_TOP_IN_PANEL = 30  # below the panel's heading
PLOT_HEIGHT = 140
NOTE_HEIGHT = 28
Y_TICK_TARGET = 5
X_TICK_MAX = 8
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")

# Network rates are quoted in decimal units, as link speeds are.
BYTE_UNITS = (("GB/s", 1e9), ("MB/s", 1e6), ("KB/s", 1e3), ("B/s", 1.0))
# Round wall-clock steps a reader expects on a time axis; beyond a week, whole days.
TIME_STEPS_SECONDS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)
# Characters XML 1.0 forbids even escaped: a name or reason carrying one must not break the document.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def render_chart(answer: SeriesAnswer, time_zone: ZoneInfo, title: str) -> str:
    start, end = as_utc(answer.start), as_utc(answer.end)
    show_date = start.astimezone(time_zone).date() != end.astimezone(time_zone).date()
    time_ticks = _time_ticks(start, end, time_zone)
    body: list[str] = [_header(answer, start, end, time_zone, title)]
    top = HEADER_HEIGHT
    for index, series in enumerate(answer.series):
        body.append(
            _series_panel(
                series,
                answer,
                start,
                end,
                time_zone,
                time_ticks,
                show_date,
                top,
                COLOURS[index % len(COLOURS)],
            )
        )
        top += PANEL_HEIGHT
    for metric, reason in answer.unavailable.items():
        body.append(_text(PLOT_LEFT, top + 18, f"{metric}: unavailable — {reason}", size=13, fill="#a33"))
        top += NOTE_HEIGHT
    if not answer.series and not answer.unavailable:
        body.append(_text(PLOT_LEFT, top + 18, "no series in this answer", size=13, fill="#666"))
        top += NOTE_HEIGHT
    height = top + 12
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">\n'
        f"<title>{_safe(title)}</title>\n"
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>\n'
        + "\n".join(body)
        + "\n</svg>\n"
    )


def _header(answer: SeriesAnswer, start: datetime, end: datetime, time_zone: ZoneInfo, title: str) -> str:
    def full(moment: datetime) -> str:
        return moment.astimezone(time_zone).strftime("%Y-%m-%d %H:%M")

    where = f"{answer.workload_id} · pod {answer.pod}"
    context = f"{where} · {full(start)} – {full(end)} · step {answer.step_seconds} s"
    return "\n".join(
        (
            _text(PLOT_LEFT, 26, title, size=18, weight="bold"),
            _text(PLOT_LEFT, 46, context, size=12, fill="#444"),
            _text(PLOT_LEFT, 62, f"times in {time_zone.key}", size=12, fill="#444"),
        )
    )


def _series_panel(
    series: Series,
    answer: SeriesAnswer,
    start: datetime,
    end: datetime,
    time_zone: ZoneInfo,
    time_ticks: list[datetime],
    show_date: bool,
    top: int,
    colour: str,
) -> str:
    plot_top, plot_bottom = top + PLOT_TOP_IN_PANEL, top + PLOT_TOP_IN_PANEL + PLOT_HEIGHT
    span = max((end - start).total_seconds(), 1.0)  # a zero-length range must not divide by zero

    def x_of(moment: datetime) -> float:
        return PLOT_LEFT + (moment - start).total_seconds() / span * (PLOT_RIGHT - PLOT_LEFT)

    # Samples outside the asked range would draw outside the plot; a NaN has no place on any axis.
    points = sorted(
        (as_utc(at), value)
        for at, value in series.points
        if start <= as_utc(at) <= end and math.isfinite(value)
    )
    axis_top, unit, divisor, step = _value_axis(series.unit, max((value for _, value in points), default=0.0))

    def y_of(value: float) -> float:
        return plot_bottom - min(max(value, 0.0), axis_top) / axis_top * PLOT_HEIGHT

    parts = [
        _text(PLOT_LEFT, top + 18, f"{series.name} ({series.unit})", size=14, weight="bold"),
        f'<rect x="{PLOT_LEFT}" y="{plot_top}" width="{PLOT_RIGHT - PLOT_LEFT}" height="{PLOT_HEIGHT}" '
        'fill="none" stroke="#999999"/>',
    ]
    for tick_index in range(round(axis_top / step) + 1):
        value = tick_index * step
        y = y_of(value)
        parts.append(_line(PLOT_LEFT, y, PLOT_RIGHT, y))
        parts.append(_text(PLOT_LEFT - 6, y + 4, f"{value / divisor:g} {unit}", size=11, anchor="end"))
    for moment in time_ticks:
        x = x_of(moment)
        label = moment.astimezone(time_zone).strftime("%m-%d %H:%M" if show_date else "%H:%M")
        parts.append(_line(x, plot_top, x, plot_bottom))
        parts.append(_text(x, plot_bottom + 16, label, size=11, anchor="middle"))
    path_data = " ".join(_subpaths(points, answer.step_seconds, x_of, y_of))
    parts.append(
        f'<path class="series" d="{path_data}" fill="none" stroke="{colour}" stroke-width="1.5" '
        'stroke-linejoin="round" stroke-linecap="round"/>'
    )
    if not points:
        middle_x, middle_y = (PLOT_LEFT + PLOT_RIGHT) / 2, plot_top + PLOT_HEIGHT / 2
        parts.append(
            _text(middle_x, middle_y, "no samples in this range", size=13, fill="#666", anchor="middle")
        )
    return "\n".join(parts)


def _subpaths(
    points: list[tuple[datetime, float]],
    step_seconds: int,
    x_of: Callable[[datetime], float],
    y_of: Callable[[float], float],
) -> Iterable[str]:
    """A silence longer than two steps is missing data, not a straight ramp between its ends: it starts a
    new subpath. A lone sample becomes a zero-length segment, which round caps draw as a dot."""
    gap_seconds = 2 * step_seconds
    previous: datetime | None = None
    lone = False
    for at, value in points:
        coords = f"{x_of(at):.1f} {y_of(value):.1f}"
        starts_new = previous is None or (step_seconds > 0 and (at - previous).total_seconds() > gap_seconds)
        if starts_new:
            if lone:
                yield "h0"
            yield f"M {coords}"
        else:
            yield f"L {coords}"
        lone, previous = starts_new, at
    if lone:
        yield "h0"


def _value_axis(unit: str, peak: float) -> tuple[float, str, float, float]:
    """(axis top, unit shown, divisor into that unit, tick step), all but the unit in the series' own unit.

    Percentages keep 0–100 so panels compare at a glance; only a vCPU burst above its request stretches it.
    """
    if unit == "%":
        top, step = _nice_axis(max(peak, 100.0))
        return top, unit, 1.0, step
    if unit == "B/s":
        shown, divisor = next(((name, size) for name, size in BYTE_UNITS if peak >= size), BYTE_UNITS[-1])
        top, step = _nice_axis(peak / divisor)
        return top * divisor, shown, divisor, step * divisor
    top, step = _nice_axis(peak)
    return top, unit, 1.0, step


def _nice_axis(peak: float) -> tuple[float, float]:
    """The smallest top at or above the peak that is a whole number of 1, 2 or 5 × 10ⁿ steps."""
    if peak <= 0:
        return 1.0, 0.2  # an idle series still needs an axis
    rough = peak / Y_TICK_TARGET
    magnitude = 10 ** math.floor(math.log10(rough))
    step = next(factor * magnitude for factor in (1, 2, 5, 10) if factor * magnitude >= rough)
    return math.ceil(peak / step - 1e-9) * step, step


def _time_ticks(start: datetime, end: datetime, time_zone: ZoneInfo) -> list[datetime]:
    """Ticks on round local times (aligned to the start's local midnight), counted in real seconds so they
    stay evenly spaced across a DST change; after one, their labels are off the round hour by the shift."""
    span = (end - start).total_seconds()
    if span <= 0:
        return [start]
    step = next(
        (s for s in TIME_STEPS_SECONDS if span / s <= X_TICK_MAX),
        math.ceil(span / X_TICK_MAX / 86400) * 86400,
    )
    local_midnight = start.astimezone(time_zone).replace(hour=0, minute=0, second=0, microsecond=0)
    origin = local_midnight.timestamp()
    first = origin + math.ceil((start.timestamp() - origin) / step) * step
    count = int((end.timestamp() - first) // step) + 1
    return [datetime.fromtimestamp(first + index * step, tz=start.tzinfo) for index in range(max(count, 0))]


def _line(x1: float, y1: float, x2: float, y2: float) -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#e4e4e4"/>'


def _text(
    x: float,
    y: float,
    content: str,
    size: int,
    fill: str = "#222",
    weight: str = "normal",
    anchor: str = "start",
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" font-weight="{weight}" '
        f'text-anchor="{anchor}">{_safe(content)}</text>'
    )


def _safe(text: str) -> str:
    return escape(_NOT_XML_CHAR.sub("\ufffd", text))
