"""The gateway: tidings' REST API over FastAPI (docs/api.md, docs/decisions/0013).

Pure parts (keys.py, intake.py, problems.py) and thin adapters (keystore.py: Postgres;
the AckProducer: Kafka); app.py wires them into routes, streams/stages/gateway.py serves it.
"""

from streams.http.gateway.app import AcceptedEvent, EventsAccepted, GatewayDeps, create_app
from streams.http.gateway.auth import Key, api_key
from streams.http.gateway.directory_api import ChangeAccepted, directory_router
from streams.http.gateway.history_api import (
    HistoryPage,
    NotificationHistory,
    StatusRow,
    history_router,
)
from streams.http.gateway.inbox_api import (
    BULK_MAX,
    InboxActions,
    InboxChanged,
    InboxCounts,
    InboxEntry,
    InboxPage,
    inbox_entry,
    inbox_router,
)
from streams.http.gateway.intake import BATCH, STRUCTURED, Accepted, events_from_request
from streams.http.gateway.keys import (
    SCOPES,
    ApiKey,
    IssuedKey,
    check_scopes,
    issue_key,
    parse_key,
    secret_digest,
    verify,
)
from streams.http.gateway.keystore import ApiKeyStore, create_key, list_keys, revoke_key
from streams.http.gateway.notify_api import TriggerAccepted, notify_router
from streams.http.gateway.problems import PROBLEM_JSON, Problem
from streams.http.gateway.produce import produce_acked
from streams.http.gateway.realtime import CATCH_UP, PRESENCE_TTL_S, Realtime, room_of
from streams.http.gateway.socket_manager import IndexedRedisManager
from streams.http.gateway.tokens import (
    RecipientIdentity,
    sign_recipient_token,
    verify_recipient_token,
)

__all__ = [
    "BATCH",
    "BULK_MAX",
    "CATCH_UP",
    "PRESENCE_TTL_S",
    "PROBLEM_JSON",
    "SCOPES",
    "STRUCTURED",
    "Accepted",
    "AcceptedEvent",
    "ApiKey",
    "ApiKeyStore",
    "ChangeAccepted",
    "EventsAccepted",
    "GatewayDeps",
    "HistoryPage",
    "InboxActions",
    "InboxChanged",
    "InboxCounts",
    "InboxEntry",
    "InboxPage",
    "IndexedRedisManager",
    "IssuedKey",
    "Key",
    "NotificationHistory",
    "Problem",
    "Realtime",
    "RecipientIdentity",
    "StatusRow",
    "TriggerAccepted",
    "api_key",
    "check_scopes",
    "create_app",
    "create_key",
    "directory_router",
    "events_from_request",
    "history_router",
    "inbox_entry",
    "inbox_router",
    "issue_key",
    "list_keys",
    "notify_router",
    "parse_key",
    "produce_acked",
    "revoke_key",
    "room_of",
    "secret_digest",
    "sign_recipient_token",
    "verify",
    "verify_recipient_token",
]
