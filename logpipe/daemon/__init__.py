"""The control plane: ``assemble`` builds and wires the components of a config (the only
place that does), ``app`` runs them (lifecycle, signals, drain), ``reload`` swaps a new
config in by component name, ``views`` shows a running graph as data, ``snapshot`` keeps
the metadata table across restarts, ``supervisor`` runs ``daemon.workers`` processes,
each one the same assembled daemon (``worker``: the config a worker runs and its channel;
``aggregate``: their metrics summed into one view)."""
