"""embedstore: cross-lingual transfer with embedding-based language models.

Encode once into a content-addressed vector store; train aligners, heads and whole ablation sweeps from it.
"""
#: The Python API (`embedstore.api`), imported on first use: `import embedstore` stays cheap for the CLI, which
#: must not pay for torch and scikit-learn before it knows the command.
_API = {"Pipeline": "embedstore.pipelines.pipeline", **dict.fromkeys(
    ("encode", "encode_files", "evaluate", "train_aligner", "train_head", "load_pipeline"), "embedstore.api"),
    **dict.fromkeys(("export_pipeline", "push_to_hub"), "embedstore.export.export")}


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
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'embedstore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, "__version__"])
