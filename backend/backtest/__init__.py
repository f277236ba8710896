"""Backtests: the live engines' own code over historical ticks, in process (docs/backtests.md)."""

from backend.backtest.runner import BacktestResult, run_backtest

__all__ = ["BacktestResult", "run_backtest"]
