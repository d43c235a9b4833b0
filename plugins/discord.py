"""``discord``: a Discord webhook; each grouped notification is one message (a content line and
one embed: the strategy's snapshot, the alerts sorted by severity, a footer), within Discord's
limits, with mentions disabled.

The ``webhook`` notifier with ``format: discord`` fixed: the same limits, retries (429 with
``retry_after`` in the body or the header), and the URL kept secret (it carries the webhook token).
"""

from __future__ import annotations

from perpwatch.api.hookspecs import hookimpl

from ._notify import TIMEOUT_OPTION, notifier_schema
from .slack import URL_OPTION
from .webhook import WebhookNotifier


class DiscordNotifier(WebhookNotifier):
    """Sends each grouped notification to a Discord channel through a webhook."""

    name = "discord"
    fixed_format = "discord"
    options_schema = notifier_schema(
        {
            **{"url": {**URL_OPTION, "description": "The channel's webhook URL (secret)."}},
            "timeout": TIMEOUT_OPTION,
        },
        required=["url"],
    )


@hookimpl
def register_notifiers(register) -> None:
    register(DiscordNotifier)
