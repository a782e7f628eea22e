"""One node per organisation: protocol 4.2 (joint k-means) across machines.

Who runs what::

    node A (mall A's platform)      node B            node C
      owner party (its own DB)        owner party       owner party
            │  outgoing HTTPS only: join, post, long-poll its mailboxes
            ├──────────────┬───────────────┘
            ▼              ▼
    manager service   ──post/long-poll──▶   compute centre service
    (cipherseg manager serve;                (cipherseg centre serve --protocol joint;
     holds the manager's key share)           public material only)

Who relays what: every party's messages go to the service of their recipient. A node posts
its key share and encrypted contributions to the centre and its key confirmation, partial
decryptions and picked records to the manager; it fetches what each service's party sends
it by long-polling its mailbox there (``GET …/mailbox?after=N``: a message stays until the
next poll acknowledges it, so a lost reply is fetched again). The manager service posts to
the centre and long-polls its own mailbox on the centre. Nodes accept no connections; the
centre knows no one's address.

Modules: :mod:`~.wire` (paths, limits, errors), :mod:`~.terms` (what the nodes agreed),
:mod:`~.board` (a service's sessions and mailboxes), :mod:`~.http_app` (the HTTP front both
services share: tokens, limits, routes), :mod:`~.centre_service`, :mod:`~.manager_service`,
:mod:`~.client` and :mod:`~.owner` (a node's party driven over HTTP), :mod:`~.serve`.

Protocol 4.5 (vertical k-means, issue 20) runs on the same services: :mod:`~.hosts` puts
each protocol's host behind the one HTTP front (a session belongs to the protocol it was
opened with), :mod:`~.vertical_terms`, :mod:`~.vertical_manager`, :mod:`~.vertical_centre`
(which also relays the holders' PSI lists, since nodes accept no connections) and
:mod:`~.vertical_holder` (a holder driven over HTTP: the platform's ``vertical_node`` job and
``cipherseg vertical join``).

Failure: every participant must keep polling (its pollers run beside its computation); a
node silent for ``contact_timeout`` seconds, a refused message, a node's abort or an
unreachable centre ends the session on both services, and every other node's next poll gets
``410 JointAborted`` with the reason. The model only reaches the nodes in the protocol's
last message, so a session that fails releases nothing.
"""
