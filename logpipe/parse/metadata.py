"""Metadata announcements: one datagram in, one :class:`Announcement` out. Sans-IO.

Contract (spec, "Metadata announcement"):
- A datagram is one JSON object. Identifying keys are ``ip``, ``hostname`` and
  ``container_id``; without an ``ip`` key the datagram's source address is the ip, and
  ``"ip": ""`` means the entry has no ip.
- Every key but ``op``, ``ttl_s`` and ``ts`` is a label, identifiers included. Label values
  are strings (numbers and booleans are turned into their JSON text); anything nested, too
  many labels or labels too large make the datagram malformed.
- ``{"op": "remove", ...identifiers}`` removes.
- With a secret, the datagram is ``{"payload": "<announcement JSON>", "hmac": "<hex>"}``,
  HMAC-SHA256 over the payload's UTF-8 bytes, and the announcement must carry ``ts``
  (unix seconds) within ``replay_window_s`` of ``now``.

``decode`` never raises anything but :class:`AnnouncementError`, whose ``result`` is the
metric label it is counted under (``malformed``, ``bad_hmac``, ``replayed``).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec

from .body import scalar_text

__all__ = ["Announcement", "AnnouncementError", "AnnouncementDecoder", "IDENTIFIERS", "sign"]

IDENTIFIERS = ("ip", "hostname", "container_id")
_NOT_LABELS = frozenset(("op", "ttl_s", "ts"))


class AnnouncementError(Exception):
    def __init__(self, result: str, reason: str) -> None:
        super().__init__(reason)
        self.result = result


class Announcement(msgspec.Struct, frozen=True):
    op: str  # "announce" or "remove"
    ip: str | None
    hostname: str | None
    container_id: str | None
    ttl_s: int | None
    labels: dict[str, str]


class _Signed(msgspec.Struct, forbid_unknown_fields=True):
    payload: str
    hmac: str


def sign(payload: str, secret: bytes) -> str:
    return hmac.new(secret, payload.encode("utf-8"), hashlib.sha256).hexdigest()


class AnnouncementDecoder:
    def __init__(
        self,
        secret: bytes | None = None,
        replay_window_s: float = 60.0,
        max_labels: int = 64,
        max_key_bytes: int = 128,
        max_value_bytes: int = 1024,
    ) -> None:
        self._secret = secret
        self._window = replay_window_s
        self._max_labels = max_labels
        self._max_key = max_key_bytes
        self._max_value = max_value_bytes
        self._object = msgspec.json.Decoder(dict)
        self._signed = msgspec.json.Decoder(_Signed)

    def decode(self, data: bytes, source_ip: str | None, now: float) -> Announcement:
        if self._secret is not None:
            try:
                signed = self._signed.decode(data)
            except msgspec.DecodeError:
                raise AnnouncementError("malformed", "expected a signed announcement") from None
            expected = sign(signed.payload, self._secret)
            if not hmac.compare_digest(expected, signed.hmac.lower()):
                raise AnnouncementError("bad_hmac", "HMAC does not match")
            data = signed.payload.encode("utf-8")
        try:
            obj = self._object.decode(data)
        except msgspec.DecodeError:
            raise AnnouncementError("malformed", "not a JSON object") from None
        if self._secret is not None:
            ts = obj.get("ts")
            if not isinstance(ts, (int, float)) or isinstance(ts, bool):
                raise AnnouncementError("malformed", "signed announcement without a numeric ts")
            if abs(now - ts) > self._window:
                raise AnnouncementError("replayed", "ts outside the replay window")
        return self._build(obj, source_ip)

    def _build(self, obj: dict[str, Any], source_ip: str | None) -> Announcement:
        op = obj.get("op", "announce")
        if op not in ("announce", "remove"):
            raise AnnouncementError("malformed", f"unknown op {op!r}")
        ttl = obj.get("ttl_s")
        if ttl is not None and (type(ttl) is not int or ttl < 1):
            raise AnnouncementError("malformed", "ttl_s must be a positive integer")
        if len(obj) > self._max_labels + 3:
            raise AnnouncementError("malformed", "too many labels")
        labels: dict[str, str] = {}
        for key, value in obj.items():
            if key in _NOT_LABELS:
                continue
            text = scalar_text(value)
            if text is None:
                raise AnnouncementError("malformed", f"label {key!r} is not a string")
            if not key or len(key.encode()) > self._max_key or len(text.encode()) > self._max_value:
                raise AnnouncementError("malformed", f"label {key[:32]!r} is empty or too large")
            labels[key] = text
        if "ip" not in obj:
            ip = source_ip
            if ip is not None:
                labels["ip"] = ip
        else:
            ip = labels.get("ip") or None
            if ip is None:
                labels.pop("ip", None)
        hostname = labels.get("hostname") or None
        container_id = labels.get("container_id") or None
        if ip is None and hostname is None and container_id is None:
            raise AnnouncementError("malformed", "no identifier (ip, hostname, container_id)")
        return Announcement(op, ip, hostname, container_id, ttl, labels)
