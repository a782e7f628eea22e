"""`cipherseg attack vhe` and `cipherseg bench seed-experiments` (the original system's VHE).

Both print :data:`~cipherseg.schemes.vhe.VHE_INSECURE_WARNING` first: every command that
uses ``vhe`` must (call :func:`warn_vhe`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

attack_app = typer.Typer(help="Attacks on schemes cipherseg refuses to trust.",
                         no_args_is_help=True)


def warn_vhe(console: Any = None) -> None:
    """Print the VHE warning (red, boxed) on ``console`` (default: the CLI console)."""
    from rich.panel import Panel

    from cipherseg.schemes.vhe import VHE_INSECURE_WARNING

    if console is None:
        from cipherseg.commands.progress import console as default_console

        console = default_console
    console.print(Panel(VHE_INSECURE_WARNING, style="bold red", title="vhe"))


def attack_vhe(
    customers: Annotated[int, typer.Option(min=1, max=1_000_000,
                                           help="Victim's customers to encrypt.")] = 1000,
    scenario: Annotated[str, typer.Option(
        help="public-key: a third party encrypts with the owner's published key; seed-mode: "
             "the compute centre of the seed-mode k-means attacks what it is sent.")
    ] = "seed-mode",
    secret_dim: Annotated[int, typer.Option(min=1, max=64, help="m, columns of T.")] = 1,
    show: Annotated[int, typer.Option(min=0, help="Rows to print.")] = 8,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Recover VHE plaintexts from public material only (Bogos, Gaspoz & Vaudenay, 2018).

    The victim's side runs first and hands over bytes; the attacker then works from those
    bytes alone and prints what it recovered next to the originals.
    """
    import numpy as np
    from rich.table import Table

    from cipherseg.commands.progress import console
    from cipherseg.schemes.vhe import VHEContext, VHEParams
    from cipherseg.schemes.vhe_attack import (
        decrypt_with,
        recover_key_from_encryption_key,
        recover_key_from_linear_transform_keys,
    )

    warn_vhe(console)
    if scenario not in ("public-key", "seed-mode"):
        raise typer.BadParameter("scenario must be public-key or seed-mode")
    rng = np.random.default_rng(seed)
    # RFM-like features, encoded as the original: integers ×10^2.
    feats = np.column_stack([rng.integers(1, 366, customers) * 100,
                             rng.poisson(6, customers) * 100,
                             np.rint(rng.lognormal(6, 1, customers) * 100)]).astype(np.int64)
    feats = np.minimum(feats, 2**31 - 1)

    # ---- victim side: key generation, encryption, publication (bytes only leave) ---------
    t = time.perf_counter()
    if scenario == "public-key":
        params = VHEParams.for_workload(3, int(np.abs(feats).max()).bit_length() + 1,
                                        secret_dim=secret_dim)
        from cipherseg.schemes.vhe_keys import VHESecretKey

        owner = VHESecretKey.generate(params, rng=seed + 1)
        ctx = VHEContext(params)
        public = [ctx.key_to_bytes(owner.encryption_key())]
        sender = VHEContext(VHEParams.from_json(params.to_json()))
        cts = sender.ciphertexts_to_bytes(
            sender.public_encrypt(sender.key_from_bytes(public[0]), feats))
        what = "the owner's public encryption key (key-switching matrix from I)"
    else:
        from cipherseg.protocols.messages import Message
        from cipherseg.protocols.party import PartyLink
        from cipherseg.protocols.seed.centre import SeedComputeCentre
        from cipherseg.protocols.seed.messages import SeedUpload
        from cipherseg.protocols.seed.owner import SeedDataOwner
        from cipherseg.protocols.seed.params import seed_params
        from cipherseg.transport.inprocess import InProcessTransport

        params = seed_params(customers, 3, int(np.abs(feats).max()), secret_dim=secret_dim)
        seen: list[bytes] = []
        centre = PartyLink(SeedComputeCentre(), sender="owner")

        def handler(data: bytes) -> bytes:
            seen.append(data)
            return centre.request_bytes(data)

        k = min(4, customers)
        SeedDataOwner(params, rng=seed + 1).run(feats, feats[:k].astype(float),
                                                InProcessTransport(handler), max_iter=3, tol=0.0)
        upload = next(m for m in map(Message.from_bytes, seen) if isinstance(m, SeedUpload))
        public, cts = list(upload.feature_keys), upload.ciphertexts
        what = (f"the {len(public)} per-feature linear-transformation keys the seed-mode centre "
                "receives")
    victim_s = time.perf_counter() - t
    console.print(f"victim: {customers:,} customers encrypted, q = 2^{params.ciphertext_bits}, "
                  f"w = {params.w}, m = {params.secret_dim}, noise bound {params.noise_bound} "
                  f"({victim_s:.2f} s)")
    console.print(f"attacker holds: the public parameters, {what} "
                  f"({sum(len(b) for b in public) / 1e3:.1f} kB) and the ciphertexts "
                  f"({len(cts) / 1e6:.2f} MB). No secret key.")

    # ---- attacker side: bytes in, plaintexts out --------------------------------------------
    t = time.perf_counter()
    p = VHEParams.from_json(params.to_json())
    actx = VHEContext(p)
    keys = [actx.key_from_bytes(b) for b in public]
    if scenario == "public-key":
        stolen = recover_key_from_encryption_key(p, keys[0])
    else:
        stolen, _ = recover_key_from_linear_transform_keys(p, keys)
    key_s = time.perf_counter() - t
    t = time.perf_counter()
    recovered = np.asarray(decrypt_with(p, stolen, actx.ciphertexts_from_bytes(cts)))
    dec_s = time.perf_counter() - t

    table = Table(title="recovered vs original (integers ×10^2: recency days, visits, spend)")
    for col in ("customer", "recovered", "original", "equal"):
        table.add_column(col)
    for i in range(min(show, customers)):
        table.add_row(str(i), str(recovered[i].tolist()), str(feats[i].tolist()),
                      "yes" if np.array_equal(recovered[i], feats[i]) else "NO")
    console.print(table)
    exact = bool(np.array_equal(recovered.astype(np.int64), feats))
    console.print(f"secret key recovered in {key_s:.3f} s (lattice dimension "
                  f"{stolen.lattice_dim}); {customers:,} plaintexts decrypted in {dec_s:.3f} s")
    console.print(f"[bold]{'ALL' if exact else 'NOT all'} {customers:,} customers recovered "
                  f"exactly[/bold]")
    if not exact:
        raise typer.Exit(code=1)


def bench_seed_experiments(
    out: Annotated[Path, typer.Option("--out", help="Directory for JSON and PNGs.")] = Path(
        "bench/results/seed"),
    quick: Annotated[bool, typer.Option("--quick", help="Small sweep (< 2 minutes).")] = False,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """The original paper's experiments for vhe (seed mode) and ckks (protocol 4.1).

    Encryption and clustering time against plaintext bits, ciphertext bits, customers
    (1k → 100k) and k (2..10), with scikit-learn timed in the same run.
    """
    from rich.table import Table

    from cipherseg.bench.seed_experiments import run_seed_experiments
    from cipherseg.commands.progress import StageProgress, console

    warn_vhe(console)
    with StageProgress() as progress:
        def callback(stage: str, done: int, total: int) -> None:
            progress.callback("experiments", done, total)

        report = run_seed_experiments(out, quick=quick, seed=seed, progress=callback)
    table = Table(title=f"seed experiments ({'quick' if quick else 'full'}), seconds")
    for col in ("experiment", "x", "vhe enc", "vhe cluster", "ckks enc", "ckks cluster",
                "sklearn", "ARI vhe/ckks"):
        table.add_column(col)
    for name, rows in report["experiments"].items():
        for r in rows:
            x = {"plaintext_bits": r["plaintext_bits"], "customers": r["customers"],
                 "clusters": r["k"]}.get(name)
            if name == "ciphertext_bits":
                x = (r.get("vhe") or r.get("ckks") or {}).get("ciphertext_bits")

            def cell(s: str, key: str, row: dict[str, Any] = r) -> str:
                return f"{row[s][key]:.3f}" if s in row else "-"

            ari = "/".join(f"{r[s]['ari_vs_sklearn']:.3f}" for s in ("vhe", "ckks") if s in r)
            table.add_row(name, str(x), cell("vhe", "encrypt_s"), cell("vhe", "cluster_s"),
                          cell("ckks", "encrypt_s"), cell("ckks", "cluster_s"),
                          cell("sklearn", "cluster_s"), ari)
    console.print(table)
    console.print(f"wrote {out / 'seed_experiments.json'} and "
                  + ", ".join(Path(p).name for p in report["plots"])
                  + f" in {report['seconds_total']:.0f} s")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Attach this module's commands (`attack vhe`, `bench seed-experiments`)."""
    attack_app.command("vhe")(attack_vhe)
    app.add_typer(attack_app, name="attack")
    bench_app.command("seed-experiments")(bench_seed_experiments)
