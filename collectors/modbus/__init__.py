"""Modbus TCP collector: a substation RTU polled through a register map described as data."""
