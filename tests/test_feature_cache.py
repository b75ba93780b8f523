"""cache_frozen_features: the head-only epochs as a linear probe on features computed once per image."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import image_argv
from safetensors.torch import load_file
from torch import nn

from fastft.errors import UserError
from fastft.feature_cache import FrozenFeatures
from fastft.run import main
from fastft.tasks import image
from fastft.tasks.image import ImageArguments, ImageTask

CACHED = ("--freeze_epochs", "2", "--cache_frozen_features", "true", "--num_train_epochs", "3", "--hflip", "0.5")


def run(argv: list[str]):
    return main(ImageTask, ImageArguments, argv)


@pytest.fixture
def decodes(monkeypatch):
    """How often each training image is decoded, per transform (the probe's or training's)."""
    counts: dict[str, list[int]] = {"probe": [], "train": []}
    original = image._Images._decoded

    def counting(self, i, transform):
        if self.probe is not None:  # the training set
            counts["probe" if transform is self.probe[0] else "train"].append(i)
        return original(self, i, transform)

    monkeypatch.setattr(image._Images, "_decoded", counting)
    return counts


def test_the_head_only_epochs_decode_each_image_once_and_leave_the_backbone_as_it_was(tmp_path, tiny_images,
                                                                                      tiny_model, decodes):
    out = tmp_path / "probe"
    # Two head-only epochs and nothing after them: a linear probe.
    with pytest.warns(UserWarning, match="covers the whole run"):
        final = run(image_argv(out, tiny_images, tiny_model, *CACHED[:4], "--num_train_epochs", "2"))
    assert sorted(decodes["probe"]) == list(range(45)) and decodes["train"] == []  # once, un-augmented
    start, probed = load_file(tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    head = {k for k in probed if k.startswith("classifier.")}
    assert head and all(torch.equal(start[k], probed[k]) for k in probed if k not in head)  # BN statistics too
    assert not all(torch.equal(probed[k], torch.zeros_like(probed[k])) for k in head)  # the zero head learned
    assert final["eval_accuracy"] > 0.5 and final["total_steps"] == 12
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_unfrozen_epochs_train_on_augmented_images_and_a_resume_recomputes_the_cache(tmp_path, tiny_images,
                                                                                     tiny_model, decodes,
                                                                                     monkeypatch):
    caches: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # each run's cache as its last step left it
    original = FrozenFeatures.features_of

    def kept(self, model, head, batch):
        features = original(self, model, head, batch)
        caches[id(self)] = (self.cached.clone(), self.features.clone())
        return features

    monkeypatch.setattr(FrozenFeatures, "features_of", kept)
    straight = tmp_path / "straight"
    run(image_argv(straight, tiny_images, tiny_model, *CACHED))
    assert sorted(decodes["probe"]) == list(range(45)) and sorted(decodes["train"]) == list(range(45))
    assert "linear probe on features computed once" in (straight / "README.md").read_text()
    # A run that died after epoch 1 (step 6) resumes with an empty cache: the images are decoded again and
    # their features recomputed, to what the cache held.
    resumed = tmp_path / "resumed"
    argv = image_argv(resumed, tiny_images, tiny_model, *CACHED, "--checkpointing_steps", "6", "--save_total_limit", "5")
    run(argv)
    shutil.rmtree(resumed / "checkpoint-18")
    shutil.rmtree(resumed / "checkpoint-12")
    for name in ("metrics.json", "model.safetensors"):
        (resumed / name).unlink()
    decodes["probe"].clear()
    run(argv)
    assert sorted(decodes["probe"]) == list(range(45))
    (first_cached, first), *_, (again_cached, again) = caches.values()
    assert bool(first_cached.all()) and bool(again_cached.all())
    # Up to float rounding alone: the recomputed batches hold other images, and some CPUs' convolutions
    # round differently at other batch sizes.
    assert torch.allclose(first, again, rtol=1e-5, atol=1e-6)
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    start = load_file(tiny_model / "model.safetensors")
    # The weights as a whole, against how far training moved them (a new head from nothing): Adam
    # turns the rounding of a gradient that is zero in exact arithmetic (a BatchNorm bias ahead of
    # another BatchNorm) into full-size steps, so single small tensors may differ by their movement.
    trained = [k for k in a if a[k].is_floating_point()]
    gap = torch.stack([(a[k] - b[k]).float().norm() for k in trained]).norm()
    moved = torch.stack([(a[k] - start[k] if start.get(k) is not None and start[k].shape == a[k].shape
                          else a[k]).float().norm() for k in trained]).norm()
    assert gap < 1e-2 * moved  # measured 4e-4 with one thread, 0 with two
    assert not all(torch.equal(a[k], v) for k, v in start.items()
                   if not k.startswith("classifier."))  # the backbone trained once unfrozen


def test_a_transformers_classifier_probes_too(tmp_path, tiny_images, tiny_vit, decodes):
    out = tmp_path / "vit"
    with pytest.warns(UserWarning, match="covers the whole run"):
        run(image_argv(out, tiny_images, tiny_vit, *CACHED[:4], "--num_train_epochs", "1"))
    assert sorted(decodes["probe"]) == list(range(45))
    start, probed = load_file(tiny_vit / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(start[k], probed[k]) for k in probed if not k.startswith("classifier."))


class _Scaled(nn.Module):
    """A model that does more after its classifier than the classifier: its logits are doubled."""

    def __init__(self):
        super().__init__()
        self.body, self.classifier = nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x):
        return 2 * self.classifier(self.body(x))


def test_a_model_whose_output_is_not_its_classifiers_is_refused(tiny_images, tiny_model, tmp_path, capsys):
    model = _Scaled()
    cache = FrozenFeatures(4)
    batch = {"index": torch.arange(2), "decoded": torch.tensor([True, True]), "pixel_values": torch.randn(2, 4),
             "labels": torch.zeros(2, dtype=torch.long)}
    with pytest.raises(UserError, match="not its classifier's output"):
        cache.features_of(model, model.classifier, batch)
    model.forward = lambda x: model.classifier(model.body(x))  # now the classifier's output is the model's
    features = cache.features_of(model, model.classifier, batch)
    assert torch.allclose(features, model.body(batch["pixel_values"])) and cache.cached.tolist() == [1, 1, 0, 0]
    for extra, message in ((("--freeze_epochs", "0"), "set freeze_epochs"),
                           (("--freeze_epochs", "1", "--peft", "lora"), "does not combine with peft")):
        with pytest.raises(SystemExit):
            run(image_argv(tmp_path / "bad", tiny_images, tiny_model, "--cache_frozen_features", "true", *extra))
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_restarted_schedule_warms_the_unfrozen_backbone_up_afresh(tmp_path, tiny_images, tiny_model):
    """LP-FT as fastai's fine_tune runs it: the probe's schedule ends, and the backbone's first steps get the
    start of a fresh one (LR 0, then its warmup), not what one schedule over the whole run has reached."""
    out = tmp_path / "restarted"
    final = run(image_argv(out, tiny_images, tiny_model, "--freeze_epochs", "1", "--cache_frozen_features", "true",
                           "--num_train_epochs", "3", "--lr_scheduler_type", "linear", "--warmup_steps", "2",
                           "--restart_schedule_at_unfreeze", "true"))
    rates = [json.loads(line)["learning_rate"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    # The LR each step sets for the next: 45 images at batch 8 are 6 steps an epoch, 6 head-only, then 12.
    head_only = [0.5, 1.0, 0.75, 0.5, 0.25]
    unfrozen = [0.0, 0.5, 1.0, *[1 - k / 10 for k in range(1, 11)]]
    assert rates == pytest.approx([0.01 * f for f in head_only + unfrozen])
    assert final["eval_accuracy"] >= 0.9
    assert "LR schedule restarted at the unfreezing" in (out / "README.md").read_text()
