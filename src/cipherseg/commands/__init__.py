"""CLI commands, one module per area; each exposes ``register(app, bench_app)``.

Modules import their heavy dependencies inside the command functions so that
``cipherseg --help`` stays fast.
"""
