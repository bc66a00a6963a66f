"""Transforms: ``[[transforms]]`` built once into a plan of chunk steps, applied in order to
each chunk of events (a list of dicts). Steps change events in place and return the list to
keep; nothing here reads the config after construction.

Modules: ``plan`` (``Transforms``: build, run, count, route), ``conditions`` (``when`` and
route tests), ``steps`` (drop, rename, remove, set, parse, sample, throttle), ``redact``,
``coerce``, and ``base`` (what every step shares).

Invariants:
- Never raises on event content: a value that cannot be matched, parsed or coerced leaves
  the event as it is (or takes the configured default) and is counted, never an error.
- A step with ``when`` touches only the events the condition matches; the others pass
  through unchanged, in order.
- Counters per transform, per chunk (never per event):
  ``logpipe_transform_events_total{transform, result}`` with result ``in``, ``out``,
  ``dropped`` (and ``failed`` for parse/coerce values that could not be converted). The
  ``transform`` label is the transform's ``name`` or ``INDEX:TYPE`` (``0:drop``). The older
  ``logpipe_transform_dropped_total{transform}`` is kept with the same drops.
- ``route`` is the last transform (config enforces it). It does not change the events: it
  yields a target per event, a tuple of sink names or ``None`` for every sink, kept in a list
  parallel to the events (the event itself carries no routing field, so nothing leaks into
  storage). An event whose targets are empty is dropped and counted.
- Operator regexes run on RE2 (linear time; logpipe/safe_regex.py); on the fallback engine
  they are statically checked and conditions see at most ``MAX_MATCH_CHARS`` of a value.
- ``sample`` and ``throttle`` keep state per key value; at most ``MAX_KEYS`` keys are held
  (beyond that the state is reset), so hostile key values cannot grow memory.
"""

from .conditions import condition
from .plan import Transforms, label_of
from .steps import MAX_KEYS

__all__ = ["Transforms", "MAX_KEYS", "condition", "label_of"]
