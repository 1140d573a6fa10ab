"""Simulated devices for all three sectors: deterministic, realistic feeds from the registry.

:mod:`.models` decides who reports when and who is silent, :mod:`.kinds` what each device kind
reports, and :mod:`.collector` is the thin adapter the edge agent runs.
"""
