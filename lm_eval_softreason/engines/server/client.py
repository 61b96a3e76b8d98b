"""HTTP to one or several ``vllm serve`` endpoints: affinity, concurrency, retries, failover.

A request carries a key (the token ids of the prompt it continues). The key picks one slot (a
replica, and a rank of a data-parallel replica) by its hash, so all rows of a prompt meet its
prefix cache and reruns pick the same slot; a slot whose replica is gone passes to the next
live one in a fixed order. At most ``num_concurrent`` requests are in flight (one shared
thread pool). Knob names follow lm-eval's ``TemplateAPI``: ``base_url``, ``num_concurrent``,
``max_retries``, ``timeout``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urlsplit

import requests

from lm_eval_softreason.engines.base import EngineUnavailable
from lm_eval_softreason.errors import ConfigError, UserError

log = logging.getLogger(__name__)

RANK_HEADER = "X-data-parallel-rank"  # vLLM routes the request to this data-parallel rank


class ServerRequestError(UserError):
    """The server refused a request (HTTP 4xx): retrying would not help."""


class _ReplicaDown(Exception):
    """A replica did not answer after every retry."""


def parse_base_urls(value: str | Sequence[str]) -> list[str]:
    """The ``/v1`` roots of the endpoints named by ``base_url``: one URL, several separated by
    ``|`` or whitespace, or a list. Each may end in ``/v1``, ``/v1/completions`` or nothing."""
    items = value.replace("|", " ").split() if isinstance(value, str) else list(value)
    if not items:
        raise ConfigError("model_arg base_url is empty; allowed: http(s)://HOST:PORT[/v1], "
                          "several separated by '|'")
    roots = []
    for url in items:
        parts = urlsplit(str(url).strip())
        path = parts.path.rstrip("/")
        path = path.removesuffix("/completions")
        if parts.scheme not in ("http", "https") or not parts.hostname or path not in ("", "/v1"):
            raise ConfigError(f"model_arg base_url={url!r} is not an endpoint; allowed: "
                              "http(s)://HOST:PORT, optionally ending in /v1 or /v1/completions "
                              "(several separated by '|')")
        try:
            parts.port
        except ValueError as exc:
            raise ConfigError(f"model_arg base_url={url!r}: {exc}") from exc
        roots.append(f"{parts.scheme}://{parts.netloc}/v1")
    if len(set(roots)) != len(roots):
        raise ConfigError(f"model_arg base_url names an endpoint twice: {roots}")
    return roots


@dataclass(frozen=True)
class Slot:
    replica: int
    rank: int | None  # data-parallel rank pinned with RANK_HEADER, None for a plain server


class ServerClient:
    """Posts JSON to the replicas; thread-safe. ``data_parallel_size`` is the number of ranks
    each replica serves (``vllm serve --data-parallel-size``): requests get a rank header."""

    def __init__(self, base_urls: Sequence[str], *, num_concurrent: int = 64,
                 max_retries: int = 3, timeout: float = 300.0,
                 data_parallel_size: int = 1) -> None:
        for name, value, low in (("num_concurrent", num_concurrent, 1),
                                 ("max_retries", max_retries, 0),
                                 ("data_parallel_size", data_parallel_size, 1)):
            if int(value) < low:
                raise ConfigError(f"model_arg {name}={value}; allowed: an integer >= {low}")
        if not float(timeout) > 0:
            raise ConfigError(f"model_arg timeout={timeout}; allowed: seconds > 0")
        self.urls = list(base_urls)
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        ranks = [None] if int(data_parallel_size) == 1 else list(range(int(data_parallel_size)))
        self.slots = [Slot(r, k) for r in range(len(self.urls)) for k in ranks]
        self.dead: set[int] = set()
        self.pool = ThreadPoolExecutor(int(num_concurrent), thread_name_prefix="softreason-http")
        self._local = threading.local()
        self._lock = threading.Lock()
        self.stats: dict[str, Any] = {"requests": 0, "bytes_sent": 0, "bytes_received": 0,
                                      "retries": 0, "by_replica": [0] * len(self.urls)}

    def get(self, replica: int, path: str) -> dict[str, Any]:
        """One GET to one replica, no retry (start-up checks)."""
        r = self._session().get(self.urls[replica] + path, timeout=self.timeout)
        _raise_for_status(r, self.urls[replica] + path)
        return r.json()

    def post_many(self, path: str, bodies: Sequence[dict[str, Any]],
                  keys: Sequence[bytes]) -> list[dict[str, Any]]:
        """POST every body (concurrently, through the shared pool); responses in order."""
        futures = [self.pool.submit(self.post, path, b, k) for b, k in zip(bodies, keys)]
        return [f.result() for f in futures]

    def post(self, path: str, body: dict[str, Any], key: bytes) -> dict[str, Any]:
        """POST to the key's slot; on a replica that stays down, to the next live slot."""
        data = _json_bytes(body)
        while True:
            slot = self.slot_for(key)
            try:
                return self._post_with_retries(slot, path, data)
            except _ReplicaDown as exc:
                with self._lock:
                    if slot.replica not in self.dead:
                        self.dead.add(slot.replica)
                        log.warning("replica %s is down (%s); its questions move to the others",
                                    self.urls[slot.replica], exc)

    def post_to(self, replica: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to one replica, with retries but no failover (start-up checks)."""
        slot = next(s for s in self.slots if s.replica == replica)
        try:
            return self._post_with_retries(slot, path, _json_bytes(body))
        except _ReplicaDown as exc:
            raise EngineUnavailable(f"{self.urls[replica]} does not answer: {exc}") from exc

    def slot_for(self, key: bytes) -> Slot:
        """The key's slot among the live ones: a fixed hash order, so reruns agree."""
        live = [s for s in self.slots if s.replica not in self.dead]
        if not live:
            raise EngineUnavailable(
                f"every vllm serve endpoint is down ({', '.join(self.urls)})")
        return live[int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % len(live)]

    def _post_with_retries(self, slot: Slot, path: str, data: bytes) -> dict[str, Any]:
        url = self.urls[slot.replica] + path
        headers = {"Content-Type": "application/json"}
        if slot.rank is not None:
            headers[RANK_HEADER] = str(slot.rank)
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                with self._lock:
                    self.stats["retries"] += 1
                time.sleep(min(10.0, 0.5 * 2 ** (attempt - 1)))  # lm-eval's 0.5-10 s backoff
            try:
                r = self._session().post(url, data=data, headers=headers, timeout=self.timeout)
            except requests.RequestException as exc:  # refused, reset, timed out
                last = exc
                continue
            if r.status_code >= 500:
                last = RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
                continue
            _raise_for_status(r, url)
            with self._lock:
                self.stats["requests"] += 1
                self.stats["by_replica"][slot.replica] += 1
                self.stats["bytes_sent"] += len(data)
                self.stats["bytes_received"] += len(r.content)
            return r.json()
        raise _ReplicaDown(f"{type(last).__name__}: {last}")

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _raise_for_status(r: requests.Response, url: str) -> None:
    if r.status_code < 400:
        return
    try:
        message = r.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = r.text[:500]
    raise ServerRequestError(f"{url} answered HTTP {r.status_code}: {message}")


def _json_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
