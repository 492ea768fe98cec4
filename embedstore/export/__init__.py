"""Exporting a trained pipeline to the formats products serve: sentence-transformers and ONNX Runtime.

`embedstore.export(pipeline_dir, out, format=...)` (this package, called) is the API's `export_pipeline`: it
builds the artifact, runs it as its users would on probe texts and compares vectors and predictions with the torch
pipeline before publishing `out` (nothing is written when they differ). Modules: `graph` (the pipeline as torch
modules, the reference outputs), `layers` (small networks as Dense steps), `head` (the exported head and its numpy
loader), `st` and `onnx_graph` (the two writers; the latter also holds `OnnxPipeline`, the runtime), `export` (the
entry point).
"""
import sys
from types import ModuleType


class _CallablePackage(ModuleType):
    """The package is also a function, as the issue's newcomer expected of `embedstore.export` (the name a
    subpackage already held: renaming it would break every `embedstore.export.<module>` import)."""

    def __call__(self, pipeline, out, **options):
        """`embedstore.api.export_pipeline(pipeline, out, **options)`: its keywords, its record."""
        from embedstore.api.steps import export_pipeline

        return export_pipeline(pipeline, out, **options)


sys.modules[__name__].__class__ = _CallablePackage
