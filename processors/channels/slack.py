"""Slack incoming webhooks: fallback `text` plus Block Kit `blocks`, POSTed as JSON.

The webhook URL is the recipient's address (`address`; default `n.recipient`): it is a secret,
keep it in the recipient directory, never in templates. Only hosts in `allowed_hosts`
(default hooks.slack.com) are accepted, and the SSRF guard applies on top.
Slack answers 200 `ok`; errors are plain-text codes (`invalid_blocks`, `channel_not_found`,
`no_service` …) and 429 carries Retry-After.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import yarl

from processors.exceptions import PermanentSendError
from processors.http import SafeHttp, check_status
from processors.provider import expect_content
from schemas.content import Content, SlackContent
from schemas.notification import Notification

__all__ = ["MAX_BLOCKS", "MAX_TEXT", "SlackProvider", "slack_payload"]

MAX_BLOCKS = 50  # Slack's limit per message
MAX_TEXT = 40_000  # characters of `text` Slack keeps (it truncates beyond)


def slack_payload(content: SlackContent) -> dict[str, object]:
    """The JSON body for an incoming webhook; PermanentSendError when Slack would refuse it."""
    if not content.text.strip():
        raise PermanentSendError(
            "slack message has empty text (Slack needs it as the notification fallback): "
            "fix the template",
            code="invalid_payload",
        )
    if len(content.blocks) > MAX_BLOCKS:
        raise PermanentSendError(
            f"slack message has {len(content.blocks)} blocks, Slack allows {MAX_BLOCKS}: "
            "shorten the template",
            code="invalid_blocks",
        )
    payload: dict[str, object] = {"text": content.text[:MAX_TEXT]}
    if content.blocks:
        payload["blocks"] = content.blocks
    return payload


def _host(url: str) -> str:
    try:
        return yarl.URL(url).host or ""
    except ValueError:
        return ""


class SlackProvider:
    """One Slack workspace app's incoming webhooks."""

    channel = "slack"

    def __init__(
        self,
        *,
        name: str = "slack",
        http: SafeHttp | None = None,
        allowed_hosts: Iterable[str] | None = ("hooks.slack.com",),
        address: Callable[[Notification], str] = lambda n: n.recipient,
    ) -> None:
        self.name = name
        self._http = http or SafeHttp()
        self._allowed = None if allowed_hosts is None else frozenset(allowed_hosts)
        self._address = address

    async def send(self, n: Notification, content: Content) -> str:
        """POST the message; returns the notification id (Slack gives no message id)."""
        payload = slack_payload(expect_content(content, SlackContent, self.name))
        url = self._address(n)
        host = _host(url) if url.startswith(("http://", "https://")) else ""
        if self._allowed is not None and host not in self._allowed:
            raise PermanentSendError(
                f"slack webhook host {host!r} is not one of {sorted(self._allowed)}: the "
                "recipient's address must be a Slack incoming-webhook URL",
                code="invalid_url",
            )
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        resp = await self._http.request(
            "POST", url, headers={"content-type": "application/json"}, content=body
        )
        check_status(resp, f"slack {self.name} POST")
        return n.id

    async def close(self) -> None:
        """Close pooled connections."""
        await self._http.close()
