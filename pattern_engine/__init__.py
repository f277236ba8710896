"""Pattern engine: incremental per-symbol features and detectors over ticks (the hot path).

``PatternEngine`` (engine.py) is the in-process core; ``PatternEngineService`` (service.py)
runs it on the bus. Compiled code lives in ``kernel.py``.
"""
