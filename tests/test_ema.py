"""model_ema: the weight average is what is evaluated, saved and resumed."""
from __future__ import annotations

import json
import shutil

import pytest
import timm
import torch
from conftest import image_argv
from safetensors.torch import load_file

from fastft.ema import WeightAverage
from fastft.run import main
from fastft.tasks.image import ImageArguments, ImageTask

EMA = ["--model_ema", "true", "--model_ema_decay", "0.9"]


def run(argv: list[str]) -> dict:
    return main(ImageTask, ImageArguments, argv)


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_average_follows_the_warmup_decay_by_hand():
    model = torch.nn.Linear(2, 1)
    average = WeightAverage(model, decay=0.5, warmup=True)
    seen = []
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(float(step))
        average.update(step)
        seen.append(average.state_dict()["weight"][0, 0].item())
    # decay(step) = min(0.5, 1 - step^(-2/3)): 0 at step 1 (a copy), 1 - 2^(-2/3) = 0.37 at step 2, then 0.5
    d2 = 1 - 2 ** (-2 / 3)
    after2 = d2 * 1 + (1 - d2) * 2
    assert seen == pytest.approx([1.0, after2, 0.5 * after2 + 0.5 * 3])


def test_a_tied_weight_is_averaged_once_a_step():
    class Tied(torch.nn.Module):  # as a seq2seq model ties its embeddings and output layer
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Linear(1, 1, bias=False)
            self.out = torch.nn.Linear(1, 1, bias=False)
            self.out.weight = self.embed.weight

    model = Tied()
    with torch.no_grad():
        model.embed.weight.zero_()
    average = WeightAverage(model, decay=0.5, warmup=False)
    with torch.no_grad():
        model.embed.weight.fill_(1.0)
    average.update(step=2)
    assert average.state_dict().keys() == {"embed.weight"}  # one tensor, averaged under its first name
    assert average.state_dict()["embed.weight"].item() == pytest.approx(0.5)  # timm's own update gives 0.75


def test_a_bf16_model_is_averaged_in_float32():
    model = torch.nn.Linear(1, 1, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average = WeightAverage(model, decay=0.999, warmup=False)
    with torch.no_grad():
        model.weight.fill_(1.5)
    average.update(step=2)
    assert average.state_dict()["weight"].item() == pytest.approx(1.0005)  # in bf16 it would stay 1.0
    average.copy_to()
    assert model.weight.dtype == torch.bfloat16


def test_without_warmup_a_short_run_stays_near_the_start():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    average = WeightAverage(model, decay=0.9, warmup=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for step in range(1, 11):
        average.update(step)
    # step 1 copies (decay 0), then nine steps at 0.9 toward the same weights: stays exactly 1
    assert average.state_dict()["weight"][0, 0].item() == pytest.approx(1.0)


def test_swapping_in_restores_the_training_weights_and_averages_batchnorm_statistics():
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=3)
    average = WeightAverage(model, decay=0.9, warmup=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32))  # moves BatchNorm running statistics
        for p in model.parameters():
            p.add_(1.0)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    average.update(step=5)
    bn = next(k for k in trained if k.endswith("running_mean"))
    expected = 0.9 * before[bn] + 0.1 * trained[bn]
    with pytest.raises(RuntimeError, match="inside"):
        with average.swapped_in():
            assert torch.allclose(model.state_dict()[bn], expected)
            raise RuntimeError("inside")
    assert all(torch.equal(model.state_dict()[k], trained[k]) for k in trained)  # back, even after an error


def test_frozen_weights_are_not_copied_and_stay_as_they_are():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2), torch.nn.Linear(2, 1))
    model[0].requires_grad_(False)  # a frozen encoder, or a LoRA base model
    average = WeightAverage(model, decay=0.5, warmup=False, trainable=[p for p in model.parameters() if p.requires_grad])
    assert set(average.state_dict()) == {"1.weight", "1.bias", "1.running_mean", "1.running_var", "2.weight",
                                         "2.bias"}
    frozen, start = model[0].weight.clone(), model[2].weight.clone()
    with torch.no_grad():
        model[2].weight.fill_(1.0)
    average.update(step=2)
    with average.swapped_in():
        assert torch.equal(model[0].weight, frozen)
        assert torch.allclose(model[2].weight, 0.5 * start + 0.5)
    assert torch.equal(model[2].weight, torch.ones_like(model[2].weight))


def test_the_saved_model_is_the_average_the_evaluation_scored(tmp_path, tiny_images, tiny_model):
    plain, averaged = tmp_path / "plain", tmp_path / "averaged"
    run(image_argv(plain, tiny_images, tiny_model, "--max_steps", "6"))
    final = run(image_argv(averaged, tiny_images, tiny_model, "--max_steps", "6", "--checkpointing_steps", "6",
                           *EMA))
    raw, ema = weights(averaged / "checkpoint-6"), weights(averaged)
    # The optimizer saw the same steps as without EMA: the checkpoint's training weights are the plain run's.
    assert all(torch.equal(raw[k], v) for k, v in weights(plain).items())
    # The final model is the average (saved with the checkpoint), not the training weights.
    saved_average = load_file(averaged / "checkpoint-6" / "ema.safetensors")
    assert {k for k, v in ema.items() if v.is_floating_point()} == saved_average.keys()  # not the step counters
    assert all(torch.equal(ema[k], saved_average[k]) for k in saved_average)
    assert not all(torch.equal(ema[k], raw[k]) for k in ema)
    # What was reported was scored with the average: reloading the saved model scores the same.
    from test_image_e2e import eval_accuracy_by_hand

    assert final["eval_accuracy"] == pytest.approx(eval_accuracy_by_hand(averaged, tiny_images))
    assert final["eval_loss"] != json.loads((plain / "metrics.json").read_text())["eval_loss"]
    # The model card says which weights these are.
    assert "exponential moving average of the weights" in (averaged / "README.md").read_text()
    assert "moving average" not in (plain / "README.md").read_text()


def test_resume_goes_on_from_the_saved_average_bit_exact(tmp_path, tiny_images, tiny_model):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(image_argv(straight, tiny_images, tiny_model, *EMA))
    args = image_argv(resumed, tiny_images, tiny_model, *EMA, "--checkpointing_steps", "4", "--save_total_limit", "5")
    run(args)
    shutil.rmtree(resumed / "checkpoint-12")  # as if the run died after step 8
    for name in ("metrics.json", "model.safetensors"):
        (resumed / name).unlink()
    run(args)
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_without_ema_is_not_resumed_with_it(tmp_path, tiny_images, tiny_model, capsys):
    out = tmp_path / "run"
    run(image_argv(out, tiny_images, tiny_model, "--checkpointing_steps", "4", "--max_steps", "8"))
    (out / "metrics.json").unlink()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run(image_argv(out, tiny_images, tiny_model, "--checkpointing_steps", "4", "--max_steps", "8", *EMA))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model_ema_decay None -> 0.9" in err[0]


@pytest.mark.parametrize("decay, message", [("1", "model_ema_decay must be below 1"),
                                            ("1.5", "model_ema_decay")])
def test_a_decay_that_never_moves_is_refused(tmp_path, tiny_images, tiny_model, capsys, decay, message):
    with pytest.raises(SystemExit):
        run(image_argv(tmp_path / "run", tiny_images, tiny_model, "--model_ema", "true", "--model_ema_decay", decay))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "run").exists()


def test_dry_run_states_the_average(tiny_images, tiny_model, capsys):
    run(image_argv("unused", tiny_images, tiny_model, *EMA, "--dry_run"))
    assert "weight EMA (evaluated, saved): decay 0.9 (ramped up" in capsys.readouterr().out
