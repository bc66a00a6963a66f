"""What a config needs from the machine it runs on, checked before anything starts: files it
reads (secrets, certificates, keys), environment variables it names, and a writable
``data_dir``. ``logpipe validate`` reports the same problems ``logpipe run`` would stop on,
each naming the key and the path, so "validate says ok, run fails" does not happen for them.

The walk is generic over the config tree: a key ending in ``_file`` or naming a TLS file
(``cert``, ``key``, ``client_ca``, ``tls_ca``, ``tls_cert``, ``tls_key``) must name a
readable file, a key ending in ``_env`` a set environment variable."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import msgspec

from ..config import Config

__all__ = ["StartError", "environment_problems", "lock_data_dir"]


class StartError(OSError):
    """The daemon cannot start here; the message names the key and the path."""

_FILE_KEYS = frozenset(("cert", "key", "client_ca", "tls_ca", "tls_cert", "tls_key"))


def environment_problems(config: Config) -> list[str]:
    problems = list(_walk(config, ()))
    problems += _data_dir_problems(config.daemon.data_dir)
    return problems


def _walk(value: Any, path: tuple[str, ...]) -> Any:
    if isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            item = getattr(value, name)
            at = path + (name,)
            if isinstance(item, str) and (name in _FILE_KEYS or name.endswith("_file")):
                problem = _unreadable(item)
                if problem:
                    yield f"{'.'.join(at)}: cannot read {item}: {problem}"
            elif isinstance(item, str) and name.endswith("_env") and item not in os.environ:
                yield f"{'.'.join(at)}: environment variable {item} is not set"
            else:
                yield from _walk(item, at)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, path + (str(key),))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, path + (str(i),))


def _unreadable(path: str) -> str | None:
    try:
        with open(path, "rb"):
            return None
    except OSError as e:
        return e.strerror or str(e)


def _data_dir_problems(data_dir: str) -> list[str]:
    """The directory, or the nearest existing parent it would be created in, is writable."""
    probe = os.path.abspath(data_dir)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return [f"daemon.data_dir: {probe} is not a directory"]
    try:  # a real write: access() says yes to root on a read-only filesystem
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        what = "" if probe == os.path.abspath(data_dir) else f" (to create {data_dir} in)"
        return [f"daemon.data_dir: {probe}{what} is not writable (uid {os.getuid()}): {e.strerror or e}"]
    return []


def lock_data_dir(data_dir: str) -> int:
    """An exclusive lock on ``data_dir`` for the life of the process (the returned
    descriptor): a second daemon with the same data_dir would share its disk buffers and
    metadata snapshot, so it refuses to start, naming the directory and the holder."""
    import fcntl

    path = os.path.join(data_dir, "logpipe.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StartError(f"daemon.data_dir: {os.path.abspath(data_dir)} is in use by another logpipe (pid {holder}); "
                         "two daemons must not share buffers: give each its own data_dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
