"""The control plane: what runs, checks and administers the platform from above its stages.

The local server manager (:mod:`ops.services`), the ``qilu`` command line that gathers every
stage's commands (:mod:`ops.cli`), the demo (``qilu run``), ``qilu check``, the benchmark runner,
backups, and the agent and PKI commands. It may import every stage; no stage imports it
(docs/adr/0019-floors.md).
"""
