"""OCPP collector: the agent as CSMS for charging piles (OCPP 1.6J and 2.0.1 over WebSocket)."""
