"""Is the Hugging Face hub reachable? Answered in seconds, so offline runs fail fast instead of retrying."""

from __future__ import annotations

import functools
import os
import socket
import threading
from urllib.parse import urlparse

_TRUE = {"1", "true", "yes", "on"}
PROBE_TIMEOUT_S = 3.0


def offline_env() -> str | None:
    """The environment variable that declares offline mode, if one does."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return name
    return None


def _endpoint() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)


@functools.lru_cache(maxsize=1)
def _probe(timeout: float) -> str | None:
    """None when a TCP connection to the hub opens within ``timeout`` (DNS included), else the reason."""
    host, port = _endpoint()
    result: list[str | None] = [f"no answer from {host}:{port} within {timeout:g} s"]

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result[0] = None
        except OSError as exc:
            result[0] = f"cannot reach {host}:{port} ({exc.__class__.__name__}: {exc})"

    thread = threading.Thread(target=connect, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    return result[0]


def hub_unreachable_reason(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub cannot be used now (offline env var or failed probe), or None when it can."""
    env = offline_env()
    if env:
        return f"{env} is set"
    return _probe(timeout)
