"""How each form or chat tool signs a delivery, from its public documentation: the sender's side.

The tests sign fixtures with it as the tool would, and bench/bench_hooks.py signs its load with it.
The verifying side is connectors/webhooks/; keeping the two apart means a mistake in one is caught by
the other, not copied into both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime


def tool_headers(
    tool: str, *, url: str, body: bytes, secret: str, at: datetime, delivery: str | None = None
) -> dict[str, str]:
    """The headers `tool` sends with `body` to `url` (HubSpot signs the full URL) at `at`."""
    key = secret.encode()
    if tool == "typeform":
        digest = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
        return {"Typeform-Signature": f"sha256={digest}"}
    if tool == "webflow":
        ms = str(int(at.timestamp() * 1000))
        return {
            "x-webflow-timestamp": ms,
            "x-webflow-signature": hmac.new(key, ms.encode() + b":" + body, hashlib.sha256).hexdigest(),
        }
    if tool == "hubspot":
        ms = str(int(at.timestamp() * 1000))
        message = b"POST" + url.encode() + body + ms.encode()
        return {
            "X-HubSpot-Request-Timestamp": ms,
            "X-HubSpot-Signature-v3": base64.b64encode(
                hmac.new(key, message, hashlib.sha256).digest()
            ).decode(),
        }
    if tool == "intercom":
        return {"X-Hub-Signature": "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest()}
    if tool == "chatwoot":
        seconds = str(int(at.timestamp()))
        return {
            "X-Chatwoot-Timestamp": seconds,
            "X-Chatwoot-Signature": "sha256="
            + hmac.new(key, seconds.encode() + b"." + body, hashlib.sha256).hexdigest(),
            "X-Chatwoot-Delivery": delivery or hashlib.sha256(body).hexdigest()[:20],
        }
    raise ValueError(f"no signing recipe for {tool!r}")
