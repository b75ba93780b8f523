"""chrF / chrF++ through sacrebleu as an `evaluate` metric module, shipped with fastft so it loads offline.

Same arguments and outputs as the Hub's ``chrf`` metric; one import per line
(evaluate's dependency check reads this file line by line).
"""
import datasets
import evaluate
from sacrebleu.metrics import CHRF

_DESCRIPTION = "Character n-gram F-score (Popovic 2015); word_order=2 gives chrF++ (Popovic 2017)."
_CITATION = """@inproceedings{popovic-2015-chrf, title = "chr{F}: character n-gram {F}-score for automatic {MT}
evaluation", author = "Popovic, Maja", booktitle = "Proceedings of the Tenth Workshop on Statistical Machine
Translation", year = "2015"}"""
_KWARGS = """
Args:
    predictions (list of str): system outputs.
    references (list of str, or list of list of str): one reference, or the same number of references, per prediction.
    char_order (int): character n-gram order, default 6.
    word_order (int): word n-gram order, default 0 (2 gives chrF++).
    beta (int): recall weight, default 2.
    lowercase (bool): case-insensitive.
    whitespace (bool): include whitespace in character n-grams.
    eps_smoothing (bool): smooth as chrF++.py / NLTK / Moses do.
Returns:
    score (float, 0-100), char_order, word_order, beta.
"""


def _per_stream(references):
    """evaluate gives references per prediction; sacrebleu wants one stream per reference position."""
    if references and isinstance(references[0], str):
        references = [[ref] for ref in references]
    width = len(references[0]) if references else 1
    if any(len(refs) != width for refs in references):
        raise ValueError("chrF needs the same number of references for every prediction")
    return [[refs[i] for refs in references] for i in range(width)]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class ChrF(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=[
                datasets.Features({"predictions": datasets.Value("string"),
                                   "references": datasets.Sequence(datasets.Value("string"))}),
                datasets.Features({"predictions": datasets.Value("string"),
                                   "references": datasets.Value("string")}),
            ],
        )

    def _compute(self, predictions, references, char_order=CHRF.CHAR_ORDER, word_order=CHRF.WORD_ORDER,
                 beta=CHRF.BETA, lowercase=False, whitespace=False, eps_smoothing=False):
        chrf = CHRF(char_order, word_order, beta, lowercase, whitespace, eps_smoothing)
        output = chrf.corpus_score(predictions, _per_stream(references))
        return {"score": output.score, "char_order": output.char_order, "word_order": output.word_order,
                "beta": output.beta}
