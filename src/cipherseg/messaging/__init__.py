"""Messaging: SMS templates, delivery rules, gateways (outbox, Kannel) and the sending engine.

A leaf package: it imports :mod:`cipherseg.pii` and nothing of the platform, and takes its
configuration as arguments. The platform adds the tables of
:mod:`cipherseg.messaging.schema` to its own metadata; the library alone uses
:func:`~cipherseg.messaging.schema.standalone_tables`.

Phone numbers stay sealed (vault ciphertexts) through queueing, rules and rendering; only a
gateway adapter opens them, at the hand-off, with the opener it was constructed with.

>>> from cipherseg.messaging import count_sms, SmsTemplate
>>> count_sms(SmsTemplate("您好{{ first_name }}，{{ opt_out }}").render(
...     first_name="王", opt_out="回复TD退订")).encoding
'UCS-2'
"""

from __future__ import annotations

from cipherseg.messaging.engine import (
    AudienceSummary,
    EngineConfig,
    RateLimiter,
    RunStats,
    SendingEngine,
    enqueue_campaign,
    evaluate_audience,
    summarise_audience,
)
from cipherseg.messaging.gateway import (
    Gateway,
    GatewayError,
    OutboundSms,
    PhoneOpener,
    SealedPhone,
    SendResult,
    SendStatus,
    vault_opener,
)
from cipherseg.messaging.outbox import OutboxGateway
from cipherseg.messaging.recipients import (
    Recipient,
    RecipientSource,
    StaticRecipients,
    phone_key,
    seal_recipient,
)
from cipherseg.messaging.rules import (
    OPT_OUT_KEYWORDS,
    DeliveryPolicy,
    FrequencyCap,
    QuietHours,
    RetryPolicy,
    is_opt_out,
    matched_keyword,
)
from cipherseg.messaging.schema import (
    MessagingTables,
    define_tables,
    memory_engine,
    standalone_tables,
)
from cipherseg.messaging.sms import SmsCount, count_sms, is_gsm7
from cipherseg.messaging.store import (
    Campaign,
    CampaignReport,
    CampaignSegment,
    MessageStore,
    SegmentReport,
    SqlMessageStore,
)
from cipherseg.messaging.templates import PLACEHOLDERS, Preview, SmsTemplate, validate_template

__all__ = [
    "OPT_OUT_KEYWORDS",
    "PLACEHOLDERS",
    "AudienceSummary",
    "Campaign",
    "CampaignReport",
    "CampaignSegment",
    "DeliveryPolicy",
    "EngineConfig",
    "FrequencyCap",
    "Gateway",
    "GatewayError",
    "MessageStore",
    "MessagingTables",
    "OutboundSms",
    "OutboxGateway",
    "PhoneOpener",
    "Preview",
    "QuietHours",
    "RateLimiter",
    "Recipient",
    "RecipientSource",
    "RetryPolicy",
    "RunStats",
    "SealedPhone",
    "SegmentReport",
    "SendResult",
    "SendStatus",
    "SendingEngine",
    "SmsCount",
    "SmsTemplate",
    "SqlMessageStore",
    "StaticRecipients",
    "count_sms",
    "define_tables",
    "enqueue_campaign",
    "evaluate_audience",
    "is_gsm7",
    "is_opt_out",
    "matched_keyword",
    "memory_engine",
    "phone_key",
    "seal_recipient",
    "standalone_tables",
    "summarise_audience",
    "validate_template",
    "vault_opener",
]
