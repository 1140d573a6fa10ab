"""Storage: the PostgreSQL/TimescaleDB schema, the batching writer and the read queries.

All SQL of the platform lives in this package; the API and the consumers call functions here.
"""
