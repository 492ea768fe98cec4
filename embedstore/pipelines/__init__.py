"""LangAlign steps 2 and 3 on files, and the pipeline directory they produce."""
