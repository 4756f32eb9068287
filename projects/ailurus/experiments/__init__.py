"""Experiment and measurement tools, apart from the model (``ailurus``), which never imports them.

Entry points (``python -m ailurus.experiments.NAME``): ``demo``, ``study``, ``benchmark``,
``benchmark_report``, ``visualize``, ``convert``. Shared pieces: ``runner`` (train and evaluate a
config), ``views`` (one model under several settings), ``images``, ``flops``, ``budget_study``.
"""
