"""A batch: the records a buffer hands to a sink together.

It sits below buffers and sinks, so that both can name it without a sink importing a buffer."""

from __future__ import annotations

__all__ = ["Batch", "split_ndjson"]


class Batch:
    """Records handed to a sink together. ``id`` is stable for the records it covers (the
    disk buffer derives it from their position, so it survives restarts), which lets a sink
    make retries idempotent. ``created`` is the monotonic time its oldest record arrived.

    A batch holds either the records or NDJSON blobs of them (``lines``, see
    ``Buffer.push_lines``); each form is derived from the other on first use, so a sink
    asks for the one it sends: ``records`` (a list) or ``ndjson()`` (one bytes)."""

    __slots__ = ("id", "_records", "_lines", "count", "nbytes", "created", "token")

    def __init__(self, batch_id: str, records: list[bytes] | None, nbytes: int, created: float, token: object = None,
                 lines: list[bytes] | None = None, count: int | None = None) -> None:
        self.id = batch_id
        self._records = records
        self._lines = lines
        self.count = len(records) if records is not None else count  # type: ignore[assignment]
        self.nbytes = nbytes
        self.created = created
        self.token = token  # the buffer's own bookkeeping for ack()

    def __len__(self) -> int:
        return self.count

    @property
    def records(self) -> list[bytes]:
        if self._records is None:
            self._records = split_ndjson(b"".join(self._lines))  # type: ignore[arg-type]
        return self._records

    def ndjson(self) -> bytes:
        """The records as one body, each followed by a newline."""
        pieces = self.ndjson_pieces()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def ndjson_pieces(self) -> list[bytes]:
        """``ndjson()`` in the pieces the buffer holds, for a sender that writes them one
        after another instead of joining them into one more copy of the batch."""
        if self._lines is not None:
            return self._lines
        return [b"\n".join([*self._records, b""])]  # type: ignore[list-item]

    def split(self) -> tuple[Batch, Batch]:
        """Two halves, for isolating a record the sink rejects; ids stay derivable."""
        records = self.records
        mid = len(records) // 2
        left, right = records[:mid], records[mid:]
        return (
            Batch(self.id + ".0", left, sum(map(len, left)) + len(left), self.created),
            Batch(self.id + ".1", right, sum(map(len, right)) + len(right), self.created),
        )


def split_ndjson(lines: bytes) -> list[bytes]:
    """NDJSON (each record followed by a newline; JSON escapes newlines inside) -> records."""
    records = lines.split(b"\n")
    records.pop()  # after the last newline
    return records
