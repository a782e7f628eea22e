"""The progress callback every long-running piece of cipherseg reports through.

Protocols, executors, estimators and benchmarks call ``progress(stage, done, total)`` as work
advances: ``stage`` names the step (a short key such as ``"encrypt"`` or a sentence),
``done`` of ``total`` units of that stage are finished. The CLI draws a bar per stage
(:class:`cipherseg.commands.progress.StageProgress`); the platform records the fraction on
the job.

>>> seen = []
>>> def report(stage: str, done: int, total: int) -> None:
...     seen.append(f"{stage} {done}/{total}")
>>> progress: Progress = report
>>> progress("encrypt", 3, 4)
>>> seen
['encrypt 3/4']
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: units finished so far in a stage."""

__all__ = ["Progress"]
