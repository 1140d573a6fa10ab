"""Stream: Kafka topics, the ingest consumer and the dead-letter topic.

Edge agents produce envelopes (qilu.contract) to one topic per sector, keyed by agent id so a
device's readings stay in order; the ingest consumer validates them, hands good readings to the
storage sink and dead-letters the rest with the original bytes and the reason.
"""
