"""The push channels: mobile push (`push`: FCM, APNs) and Web Push (`webpush`), and dead tokens.

- `fcm`: `FcmProvider`, Firebase Cloud Messaging HTTP v1 with a service account (`ServiceAccount`);
- `apns`: `ApnsProvider`, Apple Push Notification service over HTTP/2 with a .p8 key;
- `webpush`: `WebPushProvider`, RFC 8291 encryption and RFC 8292 (VAPID) authentication;
- `deadtoken`: what all three do with an address that will never work again (`DeadToken`,
  the `DeadTokenHook` the directory plugs in, `DeadTokenError`);
- `deadtoken_store`: the default hook, `PostgresDeadTokens` (table `dead_tokens`).
"""

from processors.channels.push.apns import APNS_PRODUCTION, APNS_SANDBOX, ApnsProvider
from processors.channels.push.deadtoken import DeadToken, DeadTokenError, DeadTokenHook, report_dead
from processors.channels.push.deadtoken_store import PostgresDeadTokens
from processors.channels.push.fcm import FCM_API, FCM_SCOPE, FcmProvider, ServiceAccount
from processors.channels.push.webpush import (
    MAX_PAYLOAD,
    Subscription,
    WebPushProvider,
    b64url,
    parse_subscription,
)

__all__ = [
    "APNS_PRODUCTION",
    "APNS_SANDBOX",
    "FCM_API",
    "FCM_SCOPE",
    "MAX_PAYLOAD",
    "ApnsProvider",
    "DeadToken",
    "DeadTokenError",
    "DeadTokenHook",
    "FcmProvider",
    "PostgresDeadTokens",
    "ServiceAccount",
    "Subscription",
    "WebPushProvider",
    "b64url",
    "parse_subscription",
    "report_dead",
]
