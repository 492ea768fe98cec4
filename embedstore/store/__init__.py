"""Content-addressed vector stores (`.zarr` directories, or `.h5` files)."""
from .backend import Damage
from .key import DTYPES, POOLINGS, StoreKey
from .merge import MergeReport, merge_stores
from .store import KeyWriter, RowWriter, Store, StoreWriter, require_shared_writes

__all__ = ["DTYPES", "Damage", "POOLINGS", "KeyWriter", "MergeReport", "RowWriter", "Store", "StoreKey",
           "StoreWriter", "merge_stores", "require_shared_writes"]
