"""Shared fixtures: a tiny image folder dataset and a tiny timm model saved like a pretrained one."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the Hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parents[1]
# accelerate launch of one CPU process, as a user's default config would run a script: add the script and its flags
LAUNCH_ONE = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]


def saved_predictions(out: Path, final: dict, metric: str, samples: int, *files: str) -> list[list[str]]:
    """What a finished seq2seq run leaves: the model with its tokenizer, the card showing the final ``metric``,
    the loss plot, ``files``, and one predictions.txt row (source, reference, prediction) per eval sample."""
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md",
                 "plots/loss.png", *files):
        assert (out / name).is_file(), name
    assert f"| {metric} | {final[metric]:.4f} |" in (out / "README.md").read_text()  # the model card
    predictions = [line.split("\t") for line in (out / "predictions.txt").read_text().splitlines()]
    assert len(predictions) == samples
    return predictions


def copy_without_weights(folder: Path, to: Path) -> Path:
    """A checkpoint folder's copy with its configs, tokenizer and processor but no weight files."""
    import shutil

    shutil.copytree(folder, to, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return to


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each in-process run builds its own Accelerator; the singletons must not leak between tests."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and lose much when the cores are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write_split(root: Path, per_class: int, rng: np.random.Generator) -> None:
    from PIL import Image

    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    for name, rgb in colours.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory) -> Path:
    """imagefolder with train/ (3 x 15) and test/ (3 x 7): colour classes a tiny model learns fast."""
    root = tmp_path_factory.mktemp("tiny_images")
    rng = np.random.default_rng(0)
    _write_split(root / "train", 15, rng)
    _write_split(root / "test", 7, rng)
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """timm's test_efficientnet with random weights, saved as a local 'pretrained' checkpoint."""
    import timm
    import torch

    from fastft.image_models import save_timm_model

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=5)
    folder = tmp_path_factory.mktemp("tiny_model")
    save_timm_model(model, folder, {"label_names": [f"c{i}" for i in range(5)]})
    return folder


def image_argv(out: Path, data: Path, model: Path, *extra: str) -> list[str]:
    return ["--model_name_or_path", str(model), "--dataset_name", "imagefolder", "--data_dir", str(data),
            "--output_dir", str(out), "--image_size", "32", "--per_device_train_batch_size", "8",
            "--per_device_eval_batch_size", "8", "--learning_rate", "0.01", "--num_train_epochs", "2",
            "--logging_steps", "1", "--seed", "0", *extra]


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    """A transformers ViT classifier (random weights, 5 labels) with its image processor, as on the Hub."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8, num_labels=5)
    folder = tmp_path_factory.mktemp("tiny_vit")
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
