"""Delivered-over-time chart as inline SVG, rendered on the server (no JavaScript).

One step line per segment (cumulative messages delivered) and one for the whole campaign;
the x axis runs from the first delivery to the last, the y axis from 0 to the most
delivered. Colours and strokes are SVG presentation attributes, which the platform's
Content-Security-Policy allows (no inline ``style``).

>>> from datetime import datetime, timedelta, UTC
>>> t0 = datetime(2026, 5, 4, 4, 0, tzinfo=UTC)
>>> svg = delivered_chart({"Loyal": [t0, t0 + timedelta(seconds=30)],
...                        "New": [t0 + timedelta(seconds=10)]})
>>> svg.startswith("<svg") and svg.count("<polyline") == 3 and "Loyal (2)" in svg
True
>>> "No message has been delivered yet" in delivered_chart({"A": []})
True
>>> svg = lift_chart([("Loyal", 0.25, 0.20, 0.05, 0.01, 0.09)])
>>> svg.count("<rect") >= 2 and "+5.0 pp" in svg
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from zoneinfo import ZoneInfo

PALETTE = ("#1f5fbf", "#157347", "#a15c07", "#7a3ea8", "#b42318", "#0e7490", "#4d7c0f")
TOTAL_COLOUR = "#1d2330"
_W, _H = 640, 260
_L, _R, _T, _B = 56, 16, 16, 44
_MAX_POINTS = 300


def _steps(times: Sequence[datetime], t0: float, span: float) -> list[tuple[float, int]]:
    """(x fraction, cumulative count) points, thinned to at most ``_MAX_POINTS``."""
    n = len(times)
    stride = max(1, n // _MAX_POINTS)
    pts = [((t.timestamp() - t0) / span, i + 1) for i, t in enumerate(times)
           if i % stride == 0 or i == n - 1]
    return pts


def _clock(ts: float, span: float, tz: ZoneInfo) -> str:
    moment = datetime.fromtimestamp(ts, tz)
    if span < 10:
        return moment.strftime("%H:%M:%S.%f")[:-5]
    return moment.strftime("%H:%M:%S" if span < 3 * 3600 else "%d %b %H:%M")


def delivered_chart(series: Mapping[str, Sequence[datetime]], *,
                    title: str = "Messages delivered over time", timezone: str = "UTC") -> str:
    """An SVG document (a string) for ``{segment name: delivery times}``; times on the axis
    in ``timezone``."""
    tz = ZoneInfo(timezone)
    every = sorted(t for times in series.values() for t in times)
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" '
            f'width="100%" role="img" aria-labelledby="chart-title" class="chart">'
            f'<title id="chart-title">{escape(title)}</title>')
    if not every:
        return (head + f'<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle" '
                'fill="#667085" font-size="14">No message has been delivered yet.</text></svg>')
    t0, t1 = every[0].timestamp(), every[-1].timestamp()
    span = max(t1 - t0, 1.0)
    top = len(every)
    pw, ph = _W - _L - _R, _H - _T - _B

    def xy(fx: float, count: int) -> str:
        return f"{_L + fx * pw:.1f},{_T + ph - count / top * ph:.1f}"

    parts = [head]
    # axes, grid and labels
    parts.append(f'<line x1="{_L}" y1="{_T + ph}" x2="{_L + pw}" y2="{_T + ph}" '
                 'stroke="#c9ced6"/>')
    parts.append(f'<line x1="{_L}" y1="{_T}" x2="{_L}" y2="{_T + ph}" stroke="#c9ced6"/>')
    for frac in (0.0, 0.5, 1.0):
        y = _T + ph - frac * ph
        parts.append(f'<text x="{_L - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
                     f'fill="#667085">{round(frac * top)}</text>')
        if frac:
            parts.append(f'<line x1="{_L}" y1="{y:.1f}" x2="{_L + pw}" y2="{y:.1f}" '
                         'stroke="#eef2f6"/>')
    for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        parts.append(f'<text x="{_L + frac * pw:.1f}" y="{_T + ph + 16}" text-anchor="{anchor}"'
                     f' font-size="11" fill="#667085">{_clock(t0 + frac * span, span, tz)}</text>')
    # one line per segment, then the total
    lines: list[tuple[str, str, Sequence[datetime]]] = [
        (name, PALETTE[i % len(PALETTE)], sorted(times))
        for i, (name, times) in enumerate(series.items())]
    if len(lines) > 1:
        lines.append(("All segments", TOTAL_COLOUR, every))
    legend_x = _L
    for name, colour, times in lines:
        if times:
            pts = _steps(times, t0, span)
            path, prev = [xy(0.0, 0)], 0
            for fx, count in pts:
                path.append(xy(fx, prev))
                path.append(xy(fx, count))
                prev = count
            path.append(xy(1.0, prev))
            width = "2.5" if colour == TOTAL_COLOUR else "2"
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="{width}" '
                         f'points="{" ".join(path)}"><title>{escape(name)}: {len(times)} '
                         'delivered</title></polyline>')
        label = f"{name} ({len(times)})"
        parts.append(f'<rect x="{legend_x}" y="{_H - 14}" width="10" height="10" '
                     f'fill="{colour}"/><text x="{legend_x + 14}" y="{_H - 5}" font-size="11" '
                     f'fill="#1d2330">{escape(label)}</text>')
        legend_x += 24 + 7 * len(label)
    parts.append("</svg>")
    return "".join(parts)


_LIFT_ROW = 64


def lift_chart(rows: list[tuple[str, float, float, float, float, float]], *,
               title: str = "Conversion: got the message vs held out") -> str:
    """Per segment ``(name, treated rate, holdout rate, lift, low, high)``: two bars for
    the rates and the lift with its 95 % interval (percentage points) beside them."""
    height = _T + _LIFT_ROW * max(len(rows), 1) + 28
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {height}" '
            f'width="100%" role="img" aria-labelledby="lift-title" class="chart">'
            f'<title id="lift-title">{escape(title)}</title>')
    if not rows:
        return (head + f'<text x="{_W / 2}" y="{height / 2}" text-anchor="middle" '
                'fill="#667085" font-size="14">No segment to show.</text></svg>')
    name_w, bar_w = 150, 230
    top_rate = max(max(r[1], r[2]) for r in rows) or 1.0
    span = max(max(abs(r[4]), abs(r[5])) for r in rows) or 0.01
    ci_x0, ci_w = name_w + bar_w + 40, _W - (name_w + bar_w + 40) - _R
    zero = ci_x0 + ci_w / 2
    parts = [head]
    parts.append(f'<line x1="{zero:.1f}" y1="{_T - 4}" x2="{zero:.1f}" '
                 f'y2="{_T + _LIFT_ROW * len(rows)}" stroke="#c9ced6"/>')
    parts.append(f'<text x="{zero:.1f}" y="{_T + _LIFT_ROW * len(rows) + 16}" '
                 'text-anchor="middle" font-size="11" fill="#667085">0 pp (no effect)</text>')
    for i, (name, treated, holdout, lift, low, high) in enumerate(rows):
        y = _T + i * _LIFT_ROW
        parts.append(f'<text x="0" y="{y + 26}" font-size="12" fill="#1d2330">'
                     f'{escape(name[:22])}</text>')
        for j, (rate, colour, label) in enumerate(((treated, PALETTE[0], "message"),
                                                   (holdout, "#98a2b3", "held out"))):
            w = rate / top_rate * (bar_w - 60)
            parts.append(f'<rect x="{name_w}" y="{y + 6 + j * 22}" width="{w:.1f}" '
                         f'height="16" fill="{colour}"><title>{label}: {rate:.1%}'
                         '</title></rect>')
            parts.append(f'<text x="{name_w + w + 4:.1f}" y="{y + 18 + j * 22}" '
                         f'font-size="11" fill="#1d2330">{rate:.1%} {label}</text>')

        def x(v: float) -> float:
            return zero + v / span * (ci_w / 2 - 8)

        colour = "#157347" if low > 0 else "#b42318" if high < 0 else "#1d2330"
        parts.append(f'<line x1="{x(low):.1f}" y1="{y + 22}" x2="{x(high):.1f}" '
                     f'y2="{y + 22}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<circle cx="{x(lift):.1f}" cy="{y + 22}" r="4" fill="{colour}">'
                     f'<title>{lift * 100:+.1f} pp (95 % CI {low * 100:+.1f} to '
                     f'{high * 100:+.1f})</title></circle>')
        parts.append(f'<text x="{x(lift):.1f}" y="{y + 44}" text-anchor="middle" '
                     f'font-size="11" fill="{colour}">{lift * 100:+.1f} pp '
                     f'[{low * 100:+.1f}, {high * 100:+.1f}]</text>')
    parts.append("</svg>")
    return "".join(parts)
