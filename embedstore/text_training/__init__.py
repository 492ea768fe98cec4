"""Training through the transformer on text: step-1 tuning and the end-to-end fine-tune."""
