"""Form and chat tools' own web hooks: one adapter per tool (connectors/webhooks/base.py the interface)."""

from __future__ import annotations

from connectors.webhooks.base import WebhookAdapter
from connectors.webhooks.chatwoot import ChatwootAdapter
from connectors.webhooks.hubspot import HubSpotAdapter
from connectors.webhooks.intercom import IntercomAdapter
from connectors.webhooks.typeform import TypeformAdapter
from connectors.webhooks.webflow import WebflowAdapter

ADAPTERS: dict[str, WebhookAdapter] = {
    adapter.tool: adapter
    for adapter in (
        TypeformAdapter(),
        WebflowAdapter(),
        HubSpotAdapter(),
        IntercomAdapter(),
        ChatwootAdapter(),
    )
}


def adapter_for_source(source: str) -> WebhookAdapter | None:
    """The adapter of a stored record's source, 'hook:{tool}:{name}', or None for any other source."""
    parts = source.split(":", 2)
    if len(parts) == 3 and parts[0] == "hook":
        return ADAPTERS.get(parts[1])
    return None
