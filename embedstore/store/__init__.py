"""Content-addressed vector stores (`.zarr` directories, or `.h5` files)."""
from .key import DTYPES, POOLINGS, StoreKey
from .store import KeyWriter, Store, StoreWriter

__all__ = ["DTYPES", "POOLINGS", "KeyWriter", "Store", "StoreKey", "StoreWriter"]
