"""The cipherseg web platform (FastAPI + Jinja2 + htmx): see ``docs/platform.md``.

Import :func:`cipherseg.platform.app.create_app` to build the app. This package's
``__init__`` imports nothing, so the compute-centre process
(:mod:`cipherseg.hosting.centre_process`) loads no key-holding or PII code.
"""
