"""Top-1 accuracy as an `evaluate` metric module, shipped with fastft so it loads offline."""
import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Fraction of predictions equal to the reference label."
_CITATION = ""
_KWARGS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
Returns:
    accuracy (float): in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if predictions.size == 0:
            return {"accuracy": float("nan")}
        return {"accuracy": float((predictions == references).mean())}
