"""One EMA-cross workload, run by our pattern engine and by two peer backtesters.

``workload`` defines it (the rule, the ticks, the pure-Python reference), ``ours`` runs our
side, ``nautilus_peer`` and ``backtrader_peer`` the peers; ``benchmarks/backtest_peers.py``
runs them side by side on one file and prints wall time, ticks/s and trade counts.
"""
