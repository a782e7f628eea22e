"""Protocol 4.5's manager on the manager service (beside protocol 4.2's:
:class:`~.hosts.Hosts`). Holder nodes join with :class:`~.vertical_terms.VerticalTerms`
(``{"terms": {"protocol": "kmeans-vertical", ...}}``); when every named node has joined, the
service builds a :class:`~cipherseg.protocols.vertical.manager.VerticalManager` (its CKKS
secret key never leaves this process), opens the session on the centre service naming the
holders in order, and sends its Setup. Joining, relaying, contact checks and failures are
protocol 4.2's (:class:`~.manager_service.JointManagerHost`): a holder that stops polling
for ``contact_timeout`` seconds ends the session for everyone, with the reason, and nothing
is released (the labels and centroids go to the holders only in the last message).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cipherseg.nodes.manager_service import JointManagerHost
from cipherseg.nodes.vertical_terms import VerticalTerms
from cipherseg.protocols.party import Party
from cipherseg.protocols.vertical import messages as vm
from cipherseg.protocols.vertical.manager import VerticalManager


class VerticalManagerHost(JointManagerHost):
    """The vertical manager's sessions."""

    title = "cipherseg vertical manager"
    protocol = vm.PROTOCOL

    def terms_from(self, document: Any) -> VerticalTerms:
        return VerticalTerms.from_json(document)

    def party_name(self, terms: Any, node: str) -> str:
        return vm.holder_name(terms.party_id(node))

    def centre_document(self, terms: Any) -> dict[str, Any]:
        return {"protocol": vm.PROTOCOL, "session": terms.session, "nodes": list(terms.nodes)}

    def build(self, terms: Any) -> Party:
        assert isinstance(terms, VerticalTerms)
        given = terms.init == "given"
        return VerticalManager(
            terms.holder_features, terms.n_clusters, init=terms.init,
            init_centres=(np.array(terms.init_centres).reshape(terms.n_clusters,
                                                               terms.n_features)
                          if given else None),
            max_iter=terms.max_iter, tol=terms.tol, session_id=terms.session)
