"""Scoring trained models: metrics and predictions (``metrics``), runs loaded back from their checkpoints
(``loading``) and feature diagnostics (``diagnostics``: proxy A-distance, t-SNE)."""
