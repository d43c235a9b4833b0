"""``slack``: a Slack incoming webhook; each grouped notification is one message (header, the
strategy's snapshot, the alerts sorted by severity, a footer), in Block Kit with a text fallback.

The ``webhook`` notifier with ``format: slack`` fixed: the same limits, retries (429 with
``Retry-After``), and the URL kept secret (Slack's webhook URLs carry their credential in the path).
"""

from __future__ import annotations

from perpwatch.api.hookspecs import hookimpl

from ._notify import TIMEOUT_OPTION, notifier_schema
from .webhook import WebhookNotifier

URL_OPTION = {
    "type": "string",
    "pattern": "^https?://",
    "x-secret": True,
    "description": "The incoming-webhook URL (secret: shown as scheme://host/***).",
}


class SlackNotifier(WebhookNotifier):
    """Sends each grouped notification to a Slack channel through an incoming webhook."""

    name = "slack"
    fixed_format = "slack"
    options_schema = notifier_schema({"url": URL_OPTION, "timeout": TIMEOUT_OPTION}, required=["url"])


@hookimpl
def register_notifiers(register) -> None:
    register(SlackNotifier)
