"""embedstore: cross-lingual transfer with embedding-based language models.

Encode once into a content-addressed vector store; train aligners, heads and whole ablation sweeps from it.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("embedstore")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
