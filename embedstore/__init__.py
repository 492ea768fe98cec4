"""embedstore: cross-lingual transfer with embedding-based language models.

Encode once into a content-addressed vector store; train aligners, heads and whole ablation sweeps from it.
"""
#: The Python API (`embedstore.api`: every command's function, `Pipeline`, the vocabulary) is reached as
#: `embedstore.<name>`, imported on first use: `import embedstore` stays cheap for the CLI, which must not pay for
#: the store, torch or scikit-learn before it knows the command. `embedstore.export` is the export subpackage, which
#: is callable: `embedstore.export(pipeline, out, format=...)` is `export_pipeline`.


def _version() -> str:
    """The installed package's version (read on first use: importlib.metadata costs a tenth of a second)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("embedstore")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"


def __getattr__(name: str):
    if name == "__version__":
        globals()["__version__"] = _version()
        return globals()["__version__"]
    import importlib

    if name == "export":  # the export subpackage, callable: `embedstore.export(pipeline, out, format=...)`
        return importlib.import_module("embedstore.export")
    if not name.startswith("_") and name != "api":  # `api` itself is a submodule, found by the import system
        api = importlib.import_module("embedstore.api")
        if name in api.__all__:
            return getattr(api, name)
    raise AttributeError(f"module 'embedstore' has no attribute {name!r}")


def __dir__() -> list[str]:
    import importlib

    api = importlib.import_module("embedstore.api")
    return sorted([*globals(), *api.__all__, "__version__", "export"])
