"""Shared foundations: wire messages, stream names, the bus, settings, latency, service shape.

``common`` imports nothing else of ours; services never import each other.
"""
