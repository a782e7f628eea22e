"""``--engine/--workers/--scheduler`` for commands that run the encrypted protocol.

The compute centre's block work runs on the chosen engine (a local process pool, a local Dask
cluster of ``--workers`` processes, or the Dask cluster at ``--scheduler``); the data owner's
block work always runs in local processes (its secret key stays on its machine). Block
progress of both parties feeds the command's progress bars.

>>> pair = party_executors("local", 1, None)
>>> pair.centre.n_workers
1
>>> pair.close()
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cipherseg.engine.factory import ENGINES, PartyExecutors, make_executors
from cipherseg.errors import CipherSegError

EngineOption = Annotated[str, typer.Option(
    help="Where the compute centre's ciphertext blocks run: local (process pool) or dask.")]
SchedulerOption = Annotated[str | None, typer.Option(
    help="Dask scheduler address (tcp://host:8786) for --engine dask; default: a local "
         "cluster of --workers processes.")]

_LABELS = {
    "centre:load": "centre: loading ciphertext blocks onto workers",
    "centre:masked": "centre: masked record (k-means++)",
    "centre:d2": "centre: scaled D² blocks (k-means++)",
    "centre:scores": "centre: encrypted score blocks",
    "centre:sums": "centre: encrypted per-cluster sum blocks",
    "owner:encrypt": "owner: encrypting blocks",
    "owner:assign": "owner: decrypting scores, assigning, encrypting one-hots",
    "owner:min_scores": "owner: minimum scores (k-means++)",
    "owner:decrypt": "owner: decrypting D² (k-means++)",
}


def party_executors(engine: str, workers: int | None, scheduler: str | None) -> PartyExecutors:
    """Executors for the owner and the centre, or a clean CLI error."""
    if engine not in ENGINES:
        raise typer.BadParameter(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    try:
        return make_executors(engine, workers, scheduler)
    except CipherSegError as exc:
        raise typer.BadParameter(str(exc)) from exc


def attach_block_progress(executors: PartyExecutors, progress: Any) -> None:
    """Send each party's finished blocks per stage to ``progress`` (a ``StageProgress``)."""
    for party, ex in (("owner", executors.owner), ("centre", executors.centre)):
        def report(stage: str, done: int, total: int, party: str = party) -> None:
            key = f"{party}:{stage}"
            progress.stage(key, _LABELS.get(key, key), total)
            progress.callback(key, done, total)

        ex.set_progress(report)
