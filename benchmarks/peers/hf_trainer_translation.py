"""One HF Seq2SeqTrainer run for benchmarks/peers_translation.py, as transformers' translation example trains.

``examples/pytorch/translation/run_translation.py`` at its README's hyperparameters unless flags change them:
batch 4 (train and eval), learning_rate 5e-5, 3 epochs, linear decay without warmup, AdamW, no label
smoothing, ``predict_with_generate``, sources and targets tokenized with truncation and the labels padded
with -100 (``DataCollatorForSeq2Seq``). The model is BERT2BERT warm-started from the same all-MiniLM-L6-v2
checkpoint as fastft's recipe (``EncoderDecoderModel.from_encoder_decoder_pretrained``, [CLS] starting the
decoder, [SEP] ending a target, as transformers' warm-starting notebook sets them), since the example
loads a seq2seq checkpoint. It evaluates every ``--eval_steps`` steps instead of at the end, and saves no
checkpoints: both only make its time to target shorter. BLEU is sacreBLEU on the untokenized references,
lowercased, greedy decoding of at most ``--max_new_tokens``, as fastft scores it. Writes ``metrics.jsonl``
rows as fastft's (step, elapsed_s, eval_runtime_s, eval_bleu).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import sacrebleu
from datasets import load_dataset
from trainer_rows import Rows, train_and_write
from transformers import (AutoTokenizer, DataCollatorForSeq2Seq, EncoderDecoderModel, Seq2SeqTrainer,
                          Seq2SeqTrainingArguments)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="folder with train.json and test.json (translation)")
    p.add_argument("--model", type=Path, required=True, help="local BERT checkpoint folder (encoder and decoder)")
    p.add_argument("--output_dir", type=Path, required=True)
    p.add_argument("--source_lang", default="de")
    p.add_argument("--target_lang", default="en")
    p.add_argument("--max_source_length", type=int, default=24)
    p.add_argument("--max_target_length", type=int, default=16)
    p.add_argument("--max_new_tokens", type=int, default=20)
    p.add_argument("--learning_rate", type=float, default=5e-5)
    p.add_argument("--num_train_epochs", type=float, default=3)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--eval_steps", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    data = load_dataset("json", data_files={"train": str(a.data / "train.json"), "test": str(a.data / "test.json")})
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(str(a.model), str(a.model))
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id, config.eos_token_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.max_new_tokens, model.generation_config.num_beams = a.max_new_tokens, 1
    references = [row[a.target_lang] for row in data["test"]["translation"]]

    def preprocess(batch):
        sources = [pair[a.source_lang] for pair in batch["translation"]]
        targets = [pair[a.target_lang] for pair in batch["translation"]]
        inputs = tokenizer(sources, max_length=a.max_source_length, truncation=True)
        inputs["labels"] = tokenizer(text_target=targets, max_length=a.max_target_length, truncation=True)["input_ids"]
        return inputs

    columns = data["train"].column_names
    train = data["train"].map(preprocess, batched=True, remove_columns=columns)
    test = data["test"].map(preprocess, batched=True, remove_columns=columns)

    def bleu(prediction):
        ids = np.where(prediction.predictions != -100, prediction.predictions, tokenizer.pad_token_id)
        texts = [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return {"bleu": sacrebleu.corpus_bleu(texts, [references], lowercase=True).score}

    rows = Rows("eval_bleu")
    args = Seq2SeqTrainingArguments(
        output_dir=str(a.output_dir / "trainer"), learning_rate=a.learning_rate, num_train_epochs=a.num_train_epochs,
        per_device_train_batch_size=a.batch_size, per_device_eval_batch_size=a.batch_size, seed=a.seed,
        predict_with_generate=True, eval_strategy="steps", eval_steps=a.eval_steps, save_strategy="no",
        logging_strategy="no", report_to="none", dataloader_num_workers=0, use_cpu=True, disable_tqdm=True)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=train, eval_dataset=test,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
                             processing_class=tokenizer, compute_metrics=bleu, callbacks=[rows])
    train_and_write(trainer, rows, a.output_dir)


if __name__ == "__main__":
    main()
