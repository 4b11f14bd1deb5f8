"""Devices of a lot: their keys, and the reports of spot sensors."""
