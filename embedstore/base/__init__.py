"""Foundations every wing uses: the error family, atomic writes, the writer lock, file hashes, progress, retrieval,
dying with a parent process, statistics and classification metrics; one home each."""
