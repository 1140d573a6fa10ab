"""The HTTP API: a thin layer over storage/ (one router per resource, no SQL here)."""
