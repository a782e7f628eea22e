"""Test harnesses shipped with cipherseg: used by its tests, its benchmarks and for trying it.

Nothing here is part of the product's runtime: no product package (analytics, engine,
messaging, parties, pii, platform, protocols, schemes, transport) imports it or
:mod:`cipherseg.bench` — an import-linter contract says so; the CLI's ``bench`` commands do.

* :mod:`cipherseg.testing.ports` — free loopback ports for the servers a test starts;
* :mod:`cipherseg.testing.kannel` — a real Kannel (bearerbox + smsbox) on loopback with its
  fake SMSC, and a client of the fake SMSC's line protocol;
* :mod:`cipherseg.testing.loadtest` — many concurrent users against a running platform
  (``cipherseg bench platform``);
* :mod:`cipherseg.testing.centre_service` — ``cipherseg centre serve`` in a child process.
"""
