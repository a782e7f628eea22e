"""Protocol-specific services: a protocol's party hosted as a process or behind HTTP.

The transports (:mod:`cipherseg.transport`) are generic: they carry any party's messages
(the contract of :mod:`cipherseg.protocols.party`). What is particular to one protocol's
deployment lives here:

======================= ==================================================================
``centre_process``      protocol 4.1's compute centre in its own OS process (no secret key,
                        no ``CIPHERSEG_*`` environment), over the generic process pipes
``centre_http``         ``cipherseg centre serve``: the HTTP(S) service in front of that
                        process — tokens per owner, sessions bound to their owner, limits
======================= ==================================================================

Neither module may import key-holding code (import-linter custody contract).
"""
