"""Offline training pipeline: data, imbalance study, cost threshold, ONNX export, parity, bundle.

Training-only code: it may import xgboost, scikit-learn, imbalanced-learn, pandas and matplotlib.
The online scorer (``streams``) never imports this package; it reads the bundles written here
through :mod:`schemas.manifest`. The entry point is :func:`training.pipeline.train`.
"""
