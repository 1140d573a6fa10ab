"""Qilu Telemetry: shared contracts and the command line of the platform.

The data flows edge-agent -> stream -> storage -> api / dashboards; this package holds what
every stage imports (the reading and wire envelope, device kinds, the asset registry, the
target catalog, typed settings and the error tree) and nothing stage-specific.
"""

__version__ = "0.1.0"
