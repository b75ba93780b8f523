"""fastft: fine-tuning recipes on Hugging Face Accelerate that train faster.

``fastft.train(task, config=..., **fields)`` and ``fastft.evaluate(model, task, ...)`` are the
notebook API; the ``fastft`` command and ``scripts/`` run the same engine.
"""
from fastft.api import evaluate, train

__all__ = ["evaluate", "train"]
