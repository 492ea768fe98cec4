"""Foundations every wing uses: the error family, progress bars, atomic writes, statistics, metrics."""
