"""Interleaved before/after runs of one `cipherseg bench` command from two source trees.

    python scripts/bench_before_after.py BEFORE_TREE AFTER_TREE OUT.json --pairs 5 -- \
        bench kmeans --customers 100000 --k 4 --workers 2

Each pair runs both trees (the order alternates), each with this interpreter and
``PYTHONPATH=<tree>/src``, so the same environment measures both; the command's own JSON
(``--json``, added here) and the CPU seconds of its process are recorded per run. Used for
refactorings that must not cost time (docs/benchmarks.md). Compare the ratios of a pair.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("out")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = [c for c in args.command if c != "--"]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.pairs):
            order = ("before", "after") if pair % 2 == 0 else ("after", "before")
            for label in order:
                tree = Path(getattr(args, label)).resolve()
                out = Path(tmp) / f"{label}-{pair}.json"
                env = dict(os.environ, PYTHONPATH=str(tree / "src"))
                load = os.getloadavg()[0]
                usage = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "cipherseg", *command, "--json", str(out)],
                               env=env, cwd=tree, check=True, stdout=subprocess.DEVNULL)
                wall = time.perf_counter() - start
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
                runs.append({"label": label, "pair": pair, "load_before": load,
                             "process_wall_s": wall, "process_cpu_s": cpu,
                             "result": json.loads(out.read_text())})
                print(f"{label} {pair}: {wall:.1f} s wall, {cpu:.1f} s CPU, load {load:.1f}",
                      flush=True)
    Path(args.out).write_text(json.dumps({"command": command, "runs": runs}, indent=1))
    cpu_ratios = [next(r["process_cpu_s"] for r in runs if r["pair"] == p
                       and r["label"] == "after")
                  / next(r["process_cpu_s"] for r in runs if r["pair"] == p
                         and r["label"] == "before") for p in range(args.pairs)]
    print(f"median CPU ratio after/before: {statistics.median(cpu_ratios):.3f}")


if __name__ == "__main__":
    main()
