"""JSON webhooks: POST with an HMAC-SHA256 signature of the body, retried with backoff.

The receiver recomputes HMAC-SHA256(secret, raw body) and compares it with the
`X-Tapwatch-Signature: sha256=<hex>` header, so it can trust who sent the alert.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from tapwatch import __version__

SIGNATURE_HEADER = "X-Tapwatch-Signature"
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class WebhookError(OSError):
    """The webhook refused or never took the message, after every attempt."""


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does (and what the tests do): constant-time comparison."""
    return hmac.compare_digest(sign(secret, body), header)


def post(config: dict[str, Any], document: dict[str, Any], *,
         sleep: Callable[[float], None] = time.sleep, timeout: float = 10.0) -> int:
    """POST `document` to config["url"]; returns the HTTP status. Retries transient failures
    (connection errors, 408/425/429/5xx) `retries` times with doubling backoff."""
    url = str(config["url"])
    if not url.startswith(("http://", "https://")):
        raise WebhookError(f"webhook url must be http:// or https://, not {url[:64]!r}")
    body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")
    headers = {"Content-Type": "application/json", "User-Agent": f"tapwatch/{__version__}"}
    if config.get("secret"):
        headers[SIGNATURE_HEADER] = sign(str(config["secret"]), body)
    for k, v in (config.get("headers") or {}).items():
        headers[str(k)] = str(v)
    attempts = 1 + max(0, int(config.get("retries", 3)))
    delay = float(config.get("backoff", 1.0))
    last = ""
    for attempt in range(attempts):
        if attempt:
            sleep(delay)
            delay *= 2
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code} {e.reason}"
            if e.code not in RETRY_STATUSES:
                break
        except (urllib.error.URLError, OSError) as e:
            last = str(getattr(e, "reason", e))
    raise WebhookError(f"webhook {url}: {last} (after {attempt + 1} attempt{'s' if attempt else ''})")
