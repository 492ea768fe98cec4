"""Aligners and heads: scikit-learn-shaped estimators on arrays, saved as safetensors + JSON."""
