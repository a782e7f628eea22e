"""Protocol 4.5's compute centre on the centre service (beside protocol 4.2's:
:class:`~.hosts.Hosts`): one :class:`~cipherseg.protocols.vertical.centre.VerticalCentre` per
session, opened by the manager service naming the holder nodes in holder order
(``{"protocol": "kmeans-vertical", "session": id, "nodes": [...]}``).

Nodes accept no connections, so the holders' PSI lists, which go from holder to holder, are
relayed here: a ``PsiBlinded`` a holder posts is put in the mailbox of the next holder of
the ring (computed here from its origin and hop, and checked against who posted it). The
centre learns nothing from them it could use: each list is the holder's hashed identifiers
raised to secret scalars it does not know (the next holder sees exactly the same lists in
the library's run, and the centre already sees the final tags). Every other message goes to
the centre party itself. Public material only (the import-linter custody contract).
"""

from __future__ import annotations

from cipherseg.errors import ProtocolError
from cipherseg.nodes.centre_service import JointCentreHost
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import Outgoing, Party
from cipherseg.protocols.vertical import messages as vm
from cipherseg.protocols.vertical.centre import VerticalCentre


class RelayingCentre:
    """The centre party, plus the PSI relay between holders ``1 … m``."""

    name = vm.CENTRE

    def __init__(self, n_holders: int) -> None:
        self.centre = VerticalCentre()
        self.ring = tuple(range(1, n_holders + 1))

    @property
    def closed(self) -> bool:
        return self.centre.closed

    def handle(self, sender: str, message: Message) -> Outgoing:
        if not isinstance(message, vm.PsiBlinded):
            return self.centre.handle(sender, message)
        size = len(self.ring)
        if message.origin not in self.ring or not 1 <= message.hop <= size:
            raise ProtocolError(f"centre: a PSI list of holder {message.origin} at hop "
                                f"{message.hop} has no place in this ring")
        at = self.ring.index(message.origin)
        expected = vm.holder_name(self.ring[(at + message.hop - 1) % size])
        if sender != expected:
            raise ProtocolError(f"centre: the PSI list of holder {message.origin} at hop "
                                f"{message.hop} must come from {expected}, not {sender}")
        return [(vm.holder_name(self.ring[(at + message.hop) % size]), message)]


class VerticalCentreHost(JointCentreHost):
    """The vertical centre's sessions (the 4.2 host's sessions, mailboxes and sweeping)."""

    title = "cipherseg vertical compute centre"
    protocol = vm.PROTOCOL
    manager_party = vm.MANAGER

    def party_names(self, nodes: list[str]) -> dict[str, str]:
        return {n: vm.holder_name(i) for i, n in enumerate(nodes, start=1)}

    def build(self, nodes: list[str]) -> Party:
        if len(nodes) < 2:
            raise ProtocolError("a vertical session needs two or more holder nodes")
        return RelayingCentre(len(nodes))
