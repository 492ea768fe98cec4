"""How well an aligner aligns: cosine, retrieval, per-layer and gradient measures, and their runs."""
