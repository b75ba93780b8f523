"""Corpus BLEU through sacrebleu as an `evaluate` metric module, shipped with fastft so it loads offline.

Same arguments and outputs as the Hub's ``sacrebleu`` metric; one import per line
(evaluate's dependency check reads this file line by line).
"""
import datasets
import evaluate
import sacrebleu

_DESCRIPTION = "SacreBLEU corpus BLEU (Post 2018) on detokenized text: comparable, reproducible scores."
_CITATION = """@inproceedings{post-2018-call, title = "A Call for Clarity in Reporting {BLEU} Scores",
author = "Post, Matt", booktitle = "Proceedings of the Third Conference on Machine Translation", year = "2018"}"""
_KWARGS = """
Args:
    predictions (list of str): detokenized system outputs.
    references (list of str, or list of list of str): one reference, or the same number of references, per prediction.
    smooth_method (str): exp (default), floor, add-k or none.
    smooth_value (float): for floor and add-k.
    tokenize (str): sacrebleu tokenizer, default 13a (zh, ja-mecab, intl, char, none, ...).
    lowercase (bool): case-insensitive BLEU.
    force (bool): do not warn about input that looks tokenized.
    use_effective_order (bool): drop n-gram orders with no match (for sentence-level BLEU).
Returns:
    score (float, 0-100), counts, totals, precisions, bp, sys_len, ref_len.
"""


def _per_stream(references):
    """evaluate gives references per prediction; sacrebleu wants one stream per reference position."""
    if references and isinstance(references[0], str):
        references = [[ref] for ref in references]
    width = len(references[0]) if references else 1
    if any(len(refs) != width for refs in references):
        raise ValueError("sacrebleu needs the same number of references for every prediction")
    return [[refs[i] for refs in references] for i in range(width)]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Sacrebleu(evaluate.Metric):
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

    def _compute(self, predictions, references, smooth_method="exp", smooth_value=None, force=False,
                 lowercase=False, tokenize=None, use_effective_order=False):
        output = sacrebleu.corpus_bleu(
            predictions, _per_stream(references), smooth_method=smooth_method, smooth_value=smooth_value,
            force=force, lowercase=lowercase, use_effective_order=use_effective_order,
            **({"tokenize": tokenize} if tokenize else {}))
        return {"score": output.score, "counts": output.counts, "totals": output.totals,
                "precisions": output.precisions, "bp": output.bp, "sys_len": output.sys_len,
                "ref_len": output.ref_len}
