"""`cipherseg score …`, `cipherseg eval bank`, `cipherseg bench score`.

* ``score train`` fits the owner's propensity model (preprocessing Pipeline + logistic
  regression) on a Bank Marketing file and saves it;
* ``score run`` scores a Bank Marketing CSV with that model on encrypted features and writes
  the campaign segment (top-N or score ≥ threshold) as customer ids;
* ``eval bank`` runs the whole evaluation (JSON + markdown table + plots);
* ``bench score`` measures customers scored per second, encrypted vs plaintext.

The Bank Marketing directory comes from ``--data-dir``, else ``CIPHERSEG_BANK_DATA_DIR``, else
``../shared/data/bank-marketing`` next to the checkout or the working directory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cipherseg.commands.progress import console

DATA_ENV = "CIPHERSEG_BANK_DATA_DIR"
MODEL_FORMAT = "cipherseg-scoring-model"
MODEL_VERSION = 1

score_app = typer.Typer(help="Encrypted propensity scoring and campaign targeting.",
                        no_args_is_help=True)
eval_app = typer.Typer(help="Evaluations against published results.", no_args_is_help=True)


def _data_dir(given: Path | None) -> Path:
    if given is not None:
        return given
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[3]
    for candidate in (checkout.parent / "shared" / "data" / "bank-marketing",
                      Path.cwd().parent / "shared" / "data" / "bank-marketing",
                      Path.cwd() / "data" / "bank-marketing"):
        if candidate.is_dir():
            return candidate
    console.print(f"[red]error:[/red] no Bank Marketing directory found; pass --data-dir or set "
                  f"{DATA_ENV}")
    raise typer.Exit(code=2)


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(code=2)


def _progress() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console)


DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", file_okay=False, help=f"Bank Marketing directory (env {DATA_ENV}).")]


# --- score -----------------------------------------------------------------------------------

@score_app.command("train")
def score_train(
    model_path: Annotated[Path, typer.Option("--model", help="Where to save the model.")],
    data_dir: DataDir = None,
    variant: Annotated[str, typer.Option(help="bank-full or bank-additional-full.")]
    = "bank-additional-full",
    with_duration: Annotated[bool, typer.Option(
        help="Use call duration (leaks the label: known only after the call).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the train/test split.")] = 0,
) -> None:
    """Fit the owner's model (Pipeline: one-hot + standardise + logistic regression)."""
    import joblib

    from cipherseg.analytics.bank import load_bank, make_logistic_pipeline, split_bank
    from cipherseg.analytics.metrics import classification_metrics
    from cipherseg.errors import CipherSegError

    try:
        data = load_bank(_data_dir(data_dir), variant, with_duration=with_duration)
        train, test = split_bank(data, seed=seed)
        model = make_logistic_pipeline(train).fit(train.features, train.target)
    except CipherSegError as exc:
        raise _fail(exc) from exc
    metrics = classification_metrics(test.target, model.decision_function(test.features))
    model_path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump({"format": MODEL_FORMAT, "version": MODEL_VERSION, "variant": variant,
                 "with_duration": with_duration, "pipeline": model}, model_path)
    console.print(f"trained on {train.n_customers:,} customers; held-out test: "
                  f"precision {metrics['precision']:.3f}, recall {metrics['recall']:.3f}, "
                  f"ROC AUC {metrics['roc_auc']:.3f}")
    if with_duration:
        console.print("[yellow]warning:[/yellow] this model uses call duration, which is only "
                      "known after the call: do not use it to choose whom to call")
    console.print(f"wrote {model_path} (a pickle: load only models you made)")


def _load_model(path: Path) -> dict[str, Any]:
    import joblib

    from cipherseg.errors import ValidationError

    try:
        bundle = joblib.load(path)
    except Exception as exc:  # joblib/pickle raise many types on a bad file
        raise ValidationError(f"cannot load model {path}: {exc}") from exc
    if not isinstance(bundle, dict) or bundle.get("format") != MODEL_FORMAT:
        raise ValidationError(f"{path} is not a cipherseg scoring model (use `score train`)")
    if bundle.get("version") != MODEL_VERSION:
        raise ValidationError(f"{path} has model format version {bundle.get('version')}; this "
                              f"build reads version {MODEL_VERSION}")
    return bundle


@score_app.command("run")
def score_run(
    customers: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                              help="Bank Marketing-format CSV (.csv or .gz).")],
    model_path: Annotated[Path, typer.Option("--model", exists=True, dir_okay=False,
                                             help="Model from `cipherseg score train`.")],
    out: Annotated[Path, typer.Option(help="Segment CSV: rank, customer_id.")],
    top: Annotated[int | None, typer.Option(min=1, help="Target the N best-scored.")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="Target customers with score ≥ T (score = log-odds; 0 ⇔ probability 0.5).")]
    = None,
    min_segment_size: Annotated[int, typer.Option(min=1, help="Smallest segment released.")]
    = 50,
    encrypt_model: Annotated[bool, typer.Option(
        help="Hide the model from the compute centre too.")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write a run report.")]
    = None,
) -> None:
    """Score customers on encrypted features and write the campaign segment."""
    import numpy as np

    from cipherseg.analytics.bank import read_bank_csv
    from cipherseg.analytics.scoring import EncryptedScorer, select_above, select_top_n
    from cipherseg.errors import CipherSegError

    if (top is None) == (threshold is None):
        console.print("[red]error:[/red] give exactly one of --top N or --threshold T")
        raise typer.Exit(code=2)
    try:
        bundle = _load_model(model_path)
        data = read_bank_csv(customers, variant=bundle["variant"],
                             with_duration=bundle["with_duration"])
        scorer = EncryptedScorer(bundle["pipeline"], encrypt_model=encrypt_model)
        t0 = time.perf_counter()
        with _progress() as progress:
            task = progress.add_task("scoring encrypted customer blocks", total=None)

            def tick(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            scores = scorer.score(data.features, progress=tick)
        seconds = time.perf_counter() - t0
        ids = data.customer_ids
        segment = (select_top_n(scores, ids, top) if top is not None
                   else select_above(scores, ids, float(threshold or 0.0)))
        view = segment.merchant_view(min_segment_size)
    except CipherSegError as exc:
        raise _fail(exc) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as fh:
        fh.write("rank,customer_id\n")
        for rank, cid in enumerate(segment.customer_ids, start=1):
            fh.write(f"{rank},{cid}\n")
    run = scorer.last_run_
    console.print(f"scored {len(scores):,} customers on encrypted features in {seconds:.2f} s "
                  f"({len(scores) / seconds:,.0f}/s; {run.bytes_to_centre / 1e6:.1f} MB to the "
                  f"centre, {run.bytes_to_owner / 1e6:.1f} MB back)")
    console.print(f"segment {view['name']!r}: {view['size']:,} customers ({view['rule']}); "
                  f"wrote {out}")
    if json_path is not None:
        positives = int(np.sum(data.target[np.isin(ids, segment.customer_ids)]))
        report = {"customers": len(scores), "seconds": seconds, "merchant_view": view,
                  "bytes_to_centre": run.bytes_to_centre, "bytes_to_owner": run.bytes_to_owner,
                  "encrypt_model": encrypt_model,
                  "subscribed_in_segment_if_labelled": positives}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2))
        console.print(f"wrote {json_path}")


# --- eval --------------------------------------------------------------------------------------

@eval_app.command("bank")
def eval_bank(
    json_path: Annotated[Path, typer.Option("--json", help="Result JSON; the .md table and "
                                            "PNG plots go next to it.")]
    = Path("bench/results/bank_eval.json"),
    data_dir: DataDir = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and of every method.")] = 0,
    owners: Annotated[int, typer.Option(min=2, max=6, help="Simulated owners for FedAvg.")]
    = 4,
    secure_aggregation: Annotated[bool, typer.Option(
        help="FedAvg sums under the threshold scheme.")] = True,
    dp_seeds: Annotated[int, typer.Option(min=1, help="DP runs averaged per ε.")] = 3,
    segments: Annotated[int, typer.Option(min=2, help="k of the encrypted k-means.")] = 8,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes for k-means.")] = 1,
) -> None:
    """Bank Marketing: plaintext vs encrypted scoring vs segments vs FedAvg vs DP."""
    from cipherseg.bench.evaluation import EvalConfig, planned_steps, run_bank_evaluation
    from cipherseg.bench.evaluation_report import write_outputs
    from cipherseg.errors import CipherSegError

    config = EvalConfig(data_dir=_data_dir(data_dir), seed=seed, n_owners=owners,
                        secure_aggregation=secure_aggregation, dp_seeds=dp_seeds,
                        n_segments=segments, n_jobs=workers)
    try:
        with _progress() as progress:
            task = progress.add_task("evaluating", total=planned_steps(config))

            def say(stage: str, done: int, total: int) -> None:
                progress.update(task, completed=done, total=total, description=stage[:70])

            results = run_bank_evaluation(config, progress=say)
    except CipherSegError as exc:
        raise _fail(exc) from exc
    paths = write_outputs(results, json_path)
    for key, res in results["variants"].items():
        p, e = res["methods"]["plaintext"], res["methods"]["encrypted"]
        console.print(f"{key}: plaintext P/R/AUC {p['precision']:.3f}/{p['recall']:.3f}/"
                      f"{p['roc_auc']:.3f} (weighted P/R {p['precision_weighted']:.3f}/"
                      f"{p['recall_weighted']:.3f}); encrypted max |Δscore| "
                      f"{e['max_abs_score_error']:.1e}, max |Δmetric| "
                      f"{e['max_metric_difference']:.1e}")
    console.print(f"finished in {results['seconds_total']:.0f} s; wrote "
                  + ", ".join(str(p) for p in paths.values()))


# --- bench -------------------------------------------------------------------------------------

def bench_score(
    json_path: Annotated[Path, typer.Option("--json")] = Path("bench/results/scoring.json"),
    customers: Annotated[str, typer.Option(help="Comma-separated batch sizes.")]
    = "4096,16384,41188",
    data_dir: DataDir = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Customers scored per second: encrypted vs plaintext (JSON + PNG)."""
    from cipherseg.bench.scoring import plot_scoring_bench, run_scoring_bench
    from cipherseg.errors import CipherSegError

    try:
        sizes = [int(s) for s in customers.split(",") if s.strip()]
    except ValueError as exc:
        raise _fail(ValueError(f"--customers must be comma-separated integers: {exc}")) from exc
    try:
        with _progress() as progress:
            task = progress.add_task("benchmark", total=3 * len(sizes))

            def say(stage: str, done: int, total: int) -> None:
                progress.update(task, completed=done, total=total, description=stage)

            results = run_scoring_bench(_data_dir(data_dir), sizes, seed=seed, progress=say)
            progress.update(task, completed=3 * len(sizes), description="done")
    except CipherSegError as exc:
        raise _fail(exc) from exc
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    png = plot_scoring_bench(results, json_path.with_suffix(".png"))
    for r in results["results"]:
        e, h = r["encrypted"], r["encrypted_model_hidden"]
        console.print(f"{r['customers']:>7,} customers: plaintext "
                      f"{r['plaintext_customers_per_second']:,.0f}/s, encrypted "
                      f"{e['customers_per_second']:,.0f}/s ({e['slowdown_vs_plaintext']:.0f}× "
                      f"slower), model hidden too {h['customers_per_second']:,.0f}/s")
    console.print(f"wrote {json_path} and {png}")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach this module's commands."""
    app.add_typer(score_app, name="score")
    app.add_typer(eval_app, name="eval")
    bench_app.command("score")(bench_score)
