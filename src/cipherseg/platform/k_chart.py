"""The "choose k" chart as inline SVG, rendered on the server (no JavaScript).

Two panels over k: the inertia (sum of squared distances to the segment means, on the
owner's standardised features; lower is tighter, and it always falls as k grows: look for
the elbow) and the mean silhouette (higher is better separated). The recommended k is
marked in both. Presentation attributes only (the Content-Security-Policy forbids inline
``style``).

>>> svg = choose_k_chart({"ks": [2, 3, 4], "inertia": [90.0, 60.0, 50.0],
...                       "silhouette": [0.41, 0.47, 0.39], "recommended": 3})
>>> svg.startswith("<svg") and svg.count("<polyline") == 2 and "recommended: k = 3" in svg
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

_W, _H = 640, 240
_PANEL_W = 300
_L, _T, _B = 52, 28, 40
_LINE = "#1f5fbf"
_MARK = "#b42318"


def _panel(x0: int, title: str, ks: Sequence[int], values: Sequence[float | None],
           recommended: int, fmt: str) -> list[str]:
    pts = [(k, v) for k, v in zip(ks, values, strict=True) if v is not None]
    out = [f'<text x="{x0 + _PANEL_W / 2:.0f}" y="16" text-anchor="middle" '
           f'font-size="13" font-weight="bold">{escape(title)}</text>']
    if not pts:
        return out
    lo, hi = min(v for _, v in pts), max(v for _, v in pts)
    if hi == lo:
        lo, hi = lo - 1.0, hi + 1.0
    pad = (hi - lo) * 0.1
    lo, hi = lo - pad, hi + pad
    kmin, kmax = min(ks), max(ks)
    plot_w, plot_h = _PANEL_W - _L - 8, _H - _T - _B

    def xy(k: int, v: float) -> tuple[float, float]:
        fx = 0.5 if kmax == kmin else (k - kmin) / (kmax - kmin)
        return x0 + _L + fx * plot_w, _T + (1 - (v - lo) / (hi - lo)) * plot_h

    out.append(f'<rect x="{x0 + _L}" y="{_T}" width="{plot_w}" height="{plot_h}" fill="none" '
               'stroke="#c9ced6"/>')
    for frac in (0.0, 0.5, 1.0):
        v = lo + (hi - lo) * frac
        _, y = xy(kmin, v)
        out.append(f'<text x="{x0 + _L - 4}" y="{y + 4:.1f}" text-anchor="end" '
                   f'font-size="10">{fmt.format(v)}</text>')
    for k in ks:
        x, _ = xy(k, lo)
        out.append(f'<text x="{x:.1f}" y="{_T + plot_h + 14}" text-anchor="middle" '
                   f'font-size="11">{k}</text>')
    out.append(f'<text x="{x0 + _L + plot_w / 2:.0f}" y="{_H - 8}" text-anchor="middle" '
               'font-size="11">k (segments)</text>')
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(k, v) for k, v in pts))
    out.append(f'<polyline points="{line}" fill="none" stroke="{_LINE}" stroke-width="2"/>')
    for k, v in pts:
        x, y = xy(k, v)
        chosen = k == recommended
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{5 if chosen else 3}" '
                   f'fill="{_MARK if chosen else _LINE}"><title>k = {k}: '
                   f'{fmt.format(v)}</title></circle>')
    return out


def choose_k_chart(choice: Mapping[str, Any]) -> str:
    """An SVG document for a job's ``choose_k`` result."""
    ks = [int(k) for k in choice["ks"]]
    rec = int(choice["recommended"])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H + 18}" '
             'width="100%" role="img" aria-labelledby="k-chart-title" class="chart">',
             '<title id="k-chart-title">Inertia and silhouette for each number of segments; '
             f'recommended: k = {rec}</title>']
    parts += _panel(0, "Inertia (lower = tighter)", ks,
                    choice["inertia"], rec, "{:.0f}")
    parts += _panel(_W - _PANEL_W, "Silhouette (higher = better)", ks,
                    choice["silhouette"], rec, "{:.2f}")
    parts.append(f'<text x="{_W / 2:.0f}" y="{_H + 12}" text-anchor="middle" font-size="12" '
                 f'fill="{_MARK}">● recommended: k = {rec}</text></svg>')
    return "".join(parts)
