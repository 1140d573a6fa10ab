"""The edge agent: runs collectors on Pi-class hardware and sends envelopes to Kafka.

Pure grouping and encoding live in :mod:`edge_agent.chunks`, the durable buffer in
:mod:`edge_agent.buffer`, the run loop and the network in :mod:`edge_agent.agent`.
"""
