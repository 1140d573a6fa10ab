"""MQTT collector: LoRaWAN uplinks (ChirpStack v4 JSON events) from ranch collars and barns."""
