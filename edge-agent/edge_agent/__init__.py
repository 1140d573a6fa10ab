"""The edge agent: runs collectors on Pi-class hardware and sends envelopes to Kafka.

Pure batching lives in :mod:`edge_agent.batcher`; the network is in :mod:`edge_agent.agent`.
"""
