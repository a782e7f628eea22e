"""What each role may see of a finished segmentation.

* The **owner** sees every segment: size, share, profile (its own data).
* A **merchant** sees only segments of at least ``min_size`` customers with their profiles;
  smaller ones are merged into "other" (size shown only if the merged group itself reaches
  ``min_size``; never a profile). Shares are of the customers shown, so the total — and with
  it the size of a hidden remainder — cannot be worked out.
* The **operator** sees the same names and sizes, without profiles.

>>> from types import SimpleNamespace as S
>>> segs = [S(name="A", size=120, centroid={"monetary": 9.0}, position=0),
...         S(name="B", size=80, centroid={}, position=1),
...         S(name="C", size=7, centroid={}, position=2)]
>>> [(v.name, v.size_label) for v in release_view(segs, min_size=50)]
[('A', '120'), ('B', '80'), ('other', 'fewer than 50')]
>>> [(v.name, v.size_label) for v in release_view(segs, min_size=80)]
[('A', '120'), ('B', '80'), ('other', 'fewer than 80')]
>>> [(v.name, v.size_label) for v in release_view(segs, min_size=5)]
[('A', '120'), ('B', '80'), ('C', '7')]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class _SegmentLike(Protocol):
    name: str
    size: int
    centroid: dict[str, float]
    position: int


@dataclass(frozen=True)
class SegmentView:
    """One row of a segment table."""

    name: str
    size: int | None
    size_label: str
    share: float
    profile: dict[str, float] | None
    position: int | None


def owner_view(segments: Sequence[_SegmentLike]) -> list[SegmentView]:
    """Every segment, largest first."""
    total = sum(s.size for s in segments) or 1
    return [SegmentView(s.name, s.size, str(s.size), s.size / total, dict(s.centroid),
                        s.position)
            for s in sorted(segments, key=lambda s: (-s.size, s.position))]


def release_view(segments: Sequence[_SegmentLike], *, min_size: int,
                 with_profiles: bool = True) -> list[SegmentView]:
    """Segments a merchant (or, without profiles, the operator) may see."""
    big = sorted((s for s in segments if s.size >= min_size), key=lambda s: (-s.size,
                                                                             s.position))
    small_total = sum(s.size for s in segments if s.size < min_size)
    shown_total = sum(s.size for s in big) + (small_total if small_total >= min_size else 0)
    denom = shown_total or 1
    out = [SegmentView(s.name, s.size, str(s.size), s.size / denom,
                       dict(s.centroid) if with_profiles else None, s.position) for s in big]
    if small_total >= min_size:
        out.append(SegmentView("other", small_total, str(small_total), small_total / denom,
                               None, None))
    elif small_total > 0 and big:
        out.append(SegmentView("other", None, f"fewer than {min_size}", 0.0, None, None))
    return out


def views_as_dicts(views: Sequence[SegmentView]) -> list[dict[str, Any]]:
    """JSON-ready form of a view (the API)."""
    return [{"name": v.name, "size": v.size, "size_label": v.size_label,
             "share": round(v.share, 6), "profile": v.profile} for v in views]
