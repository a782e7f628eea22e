"""Test harnesses shipped with cipherseg: used by its tests, its benchmarks and for trying it.

Nothing here is part of the product's runtime: the web platform, the protocols and the CLI's
product commands never import it (an import-linter contract says so).

* :mod:`cipherseg.testing.ports` — free loopback ports for the servers a test starts;
* :mod:`cipherseg.testing.kannel` — a real Kannel (bearerbox + smsbox) on loopback with its
  fake SMSC, and a client of the fake SMSC's line protocol;
* :mod:`cipherseg.testing.loadtest` — many concurrent users against a running platform.
"""
