"""The LangAlign study: cells, experiments, the resumable sweep engine, reports and the demo."""
