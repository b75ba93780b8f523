"""gradient_checkpointing and torch_compile: the same training, computed another way."""
from __future__ import annotations

import shutil

import pytest
import torch
from conftest import image_argv
from safetensors.torch import load_file

from fastft.errors import UserError
from fastft.memory import enable_gradient_checkpointing
from fastft.run import main
from fastft.tasks.image import ImageArguments, ImageTask

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = ["--max_steps", "6", "--hflip", "0"]


def run(out, data, model, *extra: str) -> dict:
    return main(ImageTask, ImageArguments, image_argv(out, data, model, *STEPS, *extra))


def weights(folder, parameters_only_of=None) -> dict[str, torch.Tensor]:
    saved = load_file(folder / "model.safetensors")
    if parameters_only_of is not None:  # BatchNorm statistics are updated again when a block is recomputed
        names = {n for n, _ in parameters_only_of.named_parameters()}
        saved = {k: v for k, v in saved.items() if k in names}
    return saved


def assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5, msg=k)


def test_gradient_checkpointing_is_on_in_timm_and_transformers_models_and_refused_elsewhere(tiny_vit):
    import timm
    from transformers import ViTForImageClassification

    convnet = timm.create_model("test_efficientnet", num_classes=3)
    enable_gradient_checkpointing(convnet, "test_efficientnet")
    assert convnet.grad_checkpointing
    vit = ViTForImageClassification.from_pretrained(tiny_vit)
    enable_gradient_checkpointing(vit, str(tiny_vit))
    assert vit.is_gradient_checkpointing
    with pytest.raises(UserError, match="gradient_checkpointing needs a transformers or timm model"):
        enable_gradient_checkpointing(torch.nn.Sequential(torch.nn.Linear(2, 2)), "mine")


def test_gradient_checkpointing_trains_the_same_weights(tmp_path, tiny_images, tiny_vit, tiny_model):
    import timm

    for model, only in ((tiny_vit, None), (tiny_model, timm.create_model("test_efficientnet", num_classes=3))):
        plain, checkpointed = tmp_path / f"{model.name}-plain", tmp_path / f"{model.name}-checkpointed"
        run(plain, tiny_images, model)
        run(checkpointed, tiny_images, model, "--gradient_checkpointing", "true")
        assert_close(weights(plain, only), weights(checkpointed, only))


def test_gradient_checkpointing_may_be_turned_on_to_resume(tmp_path, tiny_images, tiny_vit):
    """The usual reason: the run ran out of memory, and resumes with less."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(straight, tiny_images, tiny_vit)
    run(resumed, tiny_images, tiny_vit, "--checkpointing_steps", "3")
    shutil.rmtree(resumed / "checkpoint-6")
    (resumed / "metrics.json").unlink()
    final = run(resumed, tiny_images, tiny_vit, "--checkpointing_steps", "3", "--gradient_checkpointing", "true")
    assert final["total_steps"] == 6
    assert_close(weights(straight), weights(resumed))


def test_torch_compile_trains_the_same_model_saved_with_plain_names(tmp_path, tiny_images, tiny_model):
    import timm

    plain, compiled = tmp_path / "plain", tmp_path / "compiled"
    run(plain, tiny_images, tiny_model, "--checkpointing_steps", "3")
    # the eager backend: dynamo captures the graphs, without inductor's minutes of C++ compilation here
    compile_flags = ["--torch_compile", "true", "--torch_compile_backend", "eager", "--checkpointing_steps", "3"]
    from torch._dynamo.utils import counters

    counters.clear()
    run(compiled, tiny_images, tiny_model, *compile_flags)
    assert counters["stats"]["unique_graphs"] > 0  # dynamo did capture the model
    assert_close(weights(plain), weights(compiled))
    timm.create_model(f"local-dir:{compiled}", pretrained=True)  # no _orig_mod. prefixes in the saved names
    # and it resumes from its own checkpoint
    shutil.rmtree(compiled / "checkpoint-6")
    (compiled / "metrics.json").unlink()
    assert run(compiled, tiny_images, tiny_model, *compile_flags)["total_steps"] == 6
    assert_close(weights(plain), weights(compiled))


def test_compile_settings_without_torch_compile_and_an_unknown_backend_are_errors(tmp_path, tiny_images, tiny_model,
                                                                                    capsys):
    for extra, message in ((["--torch_compile_mode", "max-autotune"], "apply with torch_compile: true"),
                           (["--torch_compile", "true", "--torch_compile_backend", "inductr"],
                            "torch_compile_backend 'inductr' is not a backend accelerate knows; valid: eager")):
        with pytest.raises(SystemExit):
            run(tmp_path / "x", tiny_images, tiny_model, *extra)
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
