"""The gateway: tidings' REST API over FastAPI (docs/api.md, docs/decisions/0013).

Pure parts (keys.py, intake.py, problems.py) and thin adapters (keystore.py: Postgres;
the AckProducer: Kafka); app.py wires them into routes, streams/stages/gateway.py serves it.
"""

from streams.http.gateway.app import AcceptedEvent, EventsAccepted, create_app
from streams.http.gateway.auth import Key, api_key
from streams.http.gateway.directory_api import ChangeAccepted, directory_router
from streams.http.gateway.history_api import (
    HistoryPage,
    NotificationHistory,
    StatusRow,
    history_router,
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
from streams.http.gateway.problems import PROBLEM_JSON, Problem

__all__ = [
    "BATCH",
    "PROBLEM_JSON",
    "SCOPES",
    "STRUCTURED",
    "Accepted",
    "AcceptedEvent",
    "ApiKey",
    "ApiKeyStore",
    "ChangeAccepted",
    "EventsAccepted",
    "HistoryPage",
    "IssuedKey",
    "Key",
    "NotificationHistory",
    "Problem",
    "StatusRow",
    "api_key",
    "check_scopes",
    "create_app",
    "create_key",
    "directory_router",
    "events_from_request",
    "history_router",
    "issue_key",
    "list_keys",
    "parse_key",
    "revoke_key",
    "secret_digest",
    "verify",
]
