"""IEC 60870-5-104 controlling-station collector (see README.md)."""
