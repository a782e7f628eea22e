"""The holdout of a campaign: customers randomly kept out so that its effect can be measured.

When a campaign is queued, every customer who could be sent to is assigned, independently
and with probability ``share``, to the **holdout** (gets nothing) or to the **treated**
group (gets the message). The draw is a keyed hash of the segment and the customer under a
random seed recorded with the campaign: it is as good as random to anyone without the seed,
the same customer in the same campaign always lands in the same group (queueing twice
changes nothing), and with the seed anyone can reproduce the whole assignment
(:meth:`HoldoutPlan.arm`). Comparing the two groups' later purchases measures the
campaign's effect (:mod:`cipherseg.analytics.lift`).

>>> plan = HoldoutPlan(0.1, "00" * 16)
>>> plan.arm("12:0", "4711") == plan.arm("12:0", "4711")
True
>>> share = sum(plan.arm("s", str(i)) == "holdout" for i in range(20_000)) / 20_000
>>> 0.09 < share < 0.11
True
>>> HoldoutPlan(0.0, "00" * 16).arm("s", "1")
'treated'
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from cipherseg.errors import ParameterError

Arm = Literal["treated", "holdout"]
#: Largest share that may be held out (most of the audience must get the message).
MAX_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class HoldoutPlan:
    """Hold out ``share`` of each segment's sendable customers, drawn with ``seed`` (hex)."""

    share: float
    seed: str

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= MAX_SHARE:
            raise ParameterError(f"the holdout share must be between 0 and {MAX_SHARE}, got "
                                 f"{self.share}")
        try:
            key = bytes.fromhex(self.seed)
        except ValueError:
            key = b""
        if len(key) < 16:
            raise ParameterError("the holdout seed must be at least 16 bytes in hex")

    @classmethod
    def draw(cls, share: float) -> HoldoutPlan:
        """A plan with a fresh random seed (from the operating system)."""
        return cls(share, secrets.token_hex(16))

    def arm(self, segment_key: str, customer_ref: str) -> Arm:
        """The group of one customer of one segment."""
        if self.share <= 0.0:
            return "treated"
        digest = hmac.new(bytes.fromhex(self.seed),
                          f"holdout/{segment_key}/{customer_ref}".encode(),
                          hashlib.sha256).digest()
        uniform = int.from_bytes(digest[:8], "big") / 2**64
        return "holdout" if uniform < self.share else "treated"

    def as_dict(self) -> dict[str, Any]:
        """The plan as recorded with the campaign."""
        return {"share": self.share, "seed": self.seed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HoldoutPlan:
        """A recorded plan."""
        return cls(float(data["share"]), str(data["seed"]))
