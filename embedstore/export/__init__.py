"""Exporting a trained pipeline to the formats products serve: sentence-transformers and ONNX Runtime.

`export_pipeline(pipeline_dir, out, format=...)` builds the artifact, runs it as its users would on probe texts
and compares vectors and predictions with the torch pipeline before publishing `out` (nothing is written when
they differ). Modules: `graph` (the pipeline as torch modules, the reference outputs), `layers` (small networks
as Dense steps), `head` (the exported head and its numpy loader), `st` and `onnx_graph` (the two writers; the
latter also holds `OnnxPipeline`, the runtime), `export` (the entry point).
"""
