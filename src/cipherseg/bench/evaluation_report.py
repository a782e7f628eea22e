"""Outputs of the Bank Marketing evaluation: the markdown table, the plots, the files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def markdown_table(results: dict[str, Any]) -> str:
    """One table per variant (methods × metrics) plus the comparison with the published figures.

    Examples
    --------
    >>> markdown_table({"variants": {}, "comparison": []}).splitlines()[0]
    '# Bank Marketing evaluation'
    """
    cols = ("precision", "recall", "f1", "precision_weighted", "recall_weighted",
            "f1_weighted", "accuracy", "roc_auc")
    head = ("| method | P (pos) | R (pos) | F1 (pos) | P (wtd) | R (wtd) | F1 (wtd) | accuracy "
            "| ROC AUC |")
    lines = ["# Bank Marketing evaluation", ""]
    for key, res in results["variants"].items():
        lines += [f"## {key}", "",
                  f"{res['n_train']} training / {res['n_test']} test customers, "
                  f"{res['n_encoded_features']} encoded features, test positive rate "
                  f"{res['positive_rate_test']:.3f}.", "", head,
                  "|---" * (len(cols) + 1) + "|"]
        methods = res["methods"]
        labels = {"plaintext": "plaintext LR", "encrypted": "encrypted scoring (CKKS)",
                  "encrypted_sigmoid": "encrypted model + cubic sigmoid (CKKS)",
                  "segments": "encrypted k-means segments", "federated": "FedAvg",
                  "gradient_boosting": "reference: gradient boosting (plaintext)"}
        for name, label in labels.items():
            if name in methods:
                m = methods[name]
                lines.append(f"| {label} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + " |")
        for eps, d in methods["dp"]["by_epsilon"].items():
            m = d["mean"]
            lines.append(f"| DP LR ε={eps} (mean of {d['seeds']}) | "
                         + " | ".join(f"{m[c]:.4f}" for c in cols) + " |")
        enc = methods["encrypted"]
        if "segments" not in methods:
            lines += ["", "Encrypted k-means segments: not run on this variant (targeting "
                      "segments are built before the call, so never from its duration)."]
        lines += ["", f"Encrypted vs plaintext over {enc['customers']} customers: max |score "
                  f"difference| {enc['max_abs_score_error']:.2e}, max metric difference "
                  f"{enc['max_metric_difference']:.2e}, {enc['prediction_flips']} flipped "
                  f"predictions; {enc['customers_per_second']:.0f} customers/s end to end.", ""]
    if results.get("comparison"):
        lines += ["## Closest to the published 0.93 / 0.91 / 0.95 (plaintext) and "
                  "0.92 / 0.90 / 0.94 (encrypted)", "",
                  "| variant | model | metrics | precision | recall | ROC AUC | max gap |",
                  "|---|---|---|---|---|---|---|"]
        for row in results["comparison"][:8]:
            lines.append(f"| {row['variant']} | {row['model']} | {row['metrics']} | "
                         f"{row['precision']:.3f} | {row['recall']:.3f} | {row['roc_auc']:.3f} "
                         f"| {row['max_abs_gap']:.3f} |")
    return "\n".join(lines) + "\n"


def plot_results(results: dict[str, Any], out_dir: Path, stem: str = "bank") -> list[Path]:
    """ROC curves and metrics-against-ε plots (PNG, Agg backend); returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    keys = list(results["variants"])
    ncols = min(2, len(keys))
    nrows = -(-len(keys) // ncols)
    paths = []

    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 5 * nrows), squeeze=False)
    for ax, key in zip(axes.ravel(), keys, strict=False):
        res = results["variants"][key]
        for name, pts in res["roc"].items():
            auc = (res["methods"][name]["roc_auc"] if name in res["methods"] else
                   res["methods"]["dp"]["by_epsilon"][name.removeprefix("dp_eps_")]["mean"][
                       "roc_auc"])
            style = "--" if name == "encrypted" else "-"
            ax.plot(pts["fpr"], pts["tpr"], style, lw=1.2,
                    label=f"{name.replace('dp_eps_', 'DP ε=')} (AUC {auc:.3f})")
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        ax.set(title=key, xlabel="false positive rate", ylabel="true positive rate")
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    roc_path = out_dir / f"{stem}_roc.png"
    fig.savefig(roc_path, dpi=110)
    plt.close(fig)
    paths.append(roc_path)

    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 4.5 * nrows), squeeze=False)
    for ax, key in zip(axes.ravel(), keys, strict=False):
        res = results["variants"][key]
        dp = res["methods"]["dp"]["by_epsilon"]
        eps = [d["epsilon"] for d in dp.values()]
        for metric, colour in (("roc_auc", "C0"), ("f1", "C1"), ("precision_weighted", "C2"),
                               ("recall", "C3")):
            mean = np.array([d["mean"][metric] for d in dp.values()])
            std = np.array([d["std"][metric] for d in dp.values()])
            ax.errorbar(eps, mean, yerr=std, marker="o", ms=3, color=colour, capsize=2,
                        label=f"DP {metric}")
            ax.axhline(res["methods"]["plaintext"][metric], color=colour, ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set(title=f"{key} (dashed: plaintext)", xlabel="ε", ylabel="metric", ylim=(0, 1))
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    eps_path = out_dir / f"{stem}_dp_epsilon.png"
    fig.savefig(eps_path, dpi=110)
    plt.close(fig)
    paths.append(eps_path)
    return paths


def write_outputs(results: dict[str, Any], json_path: Path) -> dict[str, Path]:
    """Write the JSON, the markdown table (same stem, ``.md``) and the plots next to it."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    md_path = json_path.with_suffix(".md")
    md_path.write_text(markdown_table(results))
    roc_path, eps_path = plot_results(results, json_path.parent, json_path.stem)
    return {"json": json_path, "markdown": md_path, "roc": roc_path, "dp_epsilon": eps_path}
