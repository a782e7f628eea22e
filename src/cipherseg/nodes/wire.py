"""What the joint services and their clients agree on: paths, headers, limits, refusals.

Every route of both services (``cipherseg centre serve --protocol joint``,
``cipherseg manager serve``) is under ``/v1/joint``; :mod:`cipherseg.nodes` describes them.
A refusal is JSON ``{"error": <name>, "detail": <sentence>}``; a session that ended on a
failure answers ``410`` with ``error = "JointAborted"`` and the reason, on every route.
"""

from __future__ import annotations

import re

from cipherseg.errors import TransportError

PREFIX = "/v1/joint"
SESSIONS = f"{PREFIX}/sessions"
STATUS = f"{PREFIX}/status"
CONTENT_TYPE = "application/octet-stream"
SEQ_HEADER = "X-Cipherseg-Seq"
SENDER_HEADER = "X-Cipherseg-Sender"
STATE_HEADER = "X-Cipherseg-State"

SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
MAX_JSON_BYTES = 64 * 1024  # joins, openings and aborts: small documents
MAX_REASON_CHARS = 500
MAX_POLL_WAIT = 30.0
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024**2  # protocol 4.2's largest message is ~1 MB


class JointAborted(TransportError):
    """The joint session ended without a result; the reason says who or what ended it."""


class JointFinished(TransportError):
    """The session is over on that service: nothing more will come from it."""


def clean_reason(text: str) -> str:
    """A reason as others will read it: one line, printable, bounded."""
    flat = " ".join(str(text).split())
    flat = "".join(ch for ch in flat if ch.isprintable())
    return flat[:MAX_REASON_CHARS] or "no reason given"
