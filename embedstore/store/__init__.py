"""Content-addressed vector stores (`.zarr` directories, or `.h5` files)."""
from .backend import Damage
from .key import DTYPES, POOLINGS, StoreKey
from .merge import MergeReport, merge_stores
from .store import KeyWriter, Repair, RowWriter, Store, StoreWriter, damaged_rows, require_shared_writes

__all__ = ["DTYPES", "Damage", "POOLINGS", "KeyWriter", "MergeReport", "Repair", "RowWriter", "Store", "StoreKey",
           "StoreWriter", "damaged_rows", "merge_stores", "require_shared_writes"]
