"""Character error rate as an `evaluate` metric module (jiwer underneath), shipped with fastft so it loads offline."""
import datasets
import evaluate
import jiwer

_DESCRIPTION = ("Character error rate over the corpus: (substitutions + deletions + insertions) / reference "
                "characters, counted over all pairs together (not a mean of per-sentence rates).")
_CITATION = ""
_KWARGS = """
Args:
    predictions (list of str): transcriptions to score, already normalised as the caller wants.
    references (list of str): reference transcriptions, normalised the same way.
Returns:
    cer (float): 0 is perfect; can exceed 1 when the predictions insert characters.
    substitutions, deletions, insertions, hits (int): the alignment counts behind it.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class CER(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://github.com/jitsi/jiwer"],
        )

    def _compute(self, predictions, references):
        if len(references) == 0:
            return {"cer": float("nan"), "substitutions": 0, "deletions": 0, "insertions": 0, "hits": 0}
        out = jiwer.process_characters(list(references), list(predictions))
        return {"cer": float(out.cer), "substitutions": out.substitutions, "deletions": out.deletions,
                "insertions": out.insertions, "hits": out.hits}
