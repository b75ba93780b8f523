"""Tests for fastft.regularization and fastft.optim: mixup/cutmix, label smoothing, layer decay, freezing."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from fastft.config import TrainingArguments
from fastft.errors import UserError
from fastft.optim import build_optimizer, set_backbone_frozen
from fastft.regularization import MixupCutmix, classification_loss

K = 5


def batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.arange(n) % K


def args(**kw) -> TrainingArguments:
    return TrainingArguments(output_dir="unused", **kw)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("test_vit", num_classes=3)


@pytest.fixture
def effnet():
    torch.manual_seed(0)
    return timm.create_model("test_efficientnet", num_classes=3)


# -- mixup / cutmix ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 7, 8])
@pytest.mark.parametrize("mixup, cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixup_targets_are_soft_rows_summing_to_one(n, mixup, cutmix):
    np.random.seed(n)
    mix = MixupCutmix(K, mixup_alpha=mixup, cutmix_alpha=cutmix, prob=1.0, switch_prob=0.5, label_smoothing=0.1)
    x, y = batch(n)
    out_x, target = mix(x.clone(), y)
    assert out_x.shape == x.shape and target.shape == (n, K)
    assert target.dtype.is_floating_point
    assert torch.allclose(target.sum(1), torch.ones(n))
    assert (target > 0).all()  # smoothing puts mass on every class


@pytest.mark.parametrize("n", [1, 3, 7])
def test_odd_batch_last_sample_keeps_its_smoothed_one_hot(n):
    eps = 0.1
    np.random.seed(0)
    mix = MixupCutmix(K, mixup_alpha=1.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5, label_smoothing=eps)
    x, y = batch(n)
    out_x, target = mix(x.clone(), y)
    expected = torch.full((K,), eps / K)
    expected[y[-1]] = 1 - eps + eps / K
    assert torch.allclose(target[-1], expected)
    assert torch.equal(out_x[-1], x[-1])  # the last sample is left as it was


def test_mixup_is_a_convex_combination_with_the_flipped_batch():
    """Zhang et al. 2018 in timm's batch mode: x' = lam x + (1 - lam) x.flip(0), same lam for the targets."""
    np.random.seed(3)
    mix = MixupCutmix(K, mixup_alpha=0.4, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5, label_smoothing=0.0)
    x, _ = batch(6)
    y = torch.tensor([0, 1, 2, 3, 4, 1])  # each row pairs distinct classes: y[i] != y[5 - i]
    out_x, target = mix(x.clone(), y)
    lam = target[0, y[0]].item()
    assert 0 < lam < 1 and lam != pytest.approx(0.5)
    assert torch.allclose(out_x, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    expected = lam * F.one_hot(y, K).float() + (1 - lam) * F.one_hot(y.flip(0), K).float()
    assert torch.allclose(target, expected, atol=1e-6)


def test_mixup_odd_batch_mixes_all_but_the_last():
    np.random.seed(3)
    mix = MixupCutmix(K, mixup_alpha=0.4, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5, label_smoothing=0.0)
    x, _ = batch(5)
    y = torch.tensor([0, 1, 2, 3, 4])
    out_x, target = mix(x.clone(), y)
    lam = target[0, 0].item()
    head = x[:4]
    assert 0 < lam < 1
    assert torch.allclose(out_x[:4], lam * head + (1 - lam) * head.flip(0), atol=1e-6)
    assert torch.equal(out_x[4], x[4]) and torch.equal(target[4], F.one_hot(torch.tensor(4), K).float())


def test_cutmix_pastes_a_box_and_lam_is_its_complement():
    """Yun et al. 2019: lam = 1 - box area / image area (timm's correct_lam off: lam from the clipped box)."""
    np.random.seed(1)
    mix = MixupCutmix(K, mixup_alpha=0.0, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.0)
    x = torch.stack([torch.full((3, 8, 8), float(i)) for i in range(4)])
    y = torch.tensor([0, 1, 2, 3])
    out_x, target = mix(x.clone(), y)
    for i in range(4):
        pasted = (out_x[i] == 3 - i).float().mean().item()  # share of pixels from the mirror sample
        assert target[i, 3 - i].item() == pytest.approx(pasted, abs=1.0 / 64)
        assert target[i, i].item() == pytest.approx(1 - pasted, abs=1.0 / 64)


def test_mix_prob_zero_only_smooths():
    mix = MixupCutmix(K, mixup_alpha=1.0, cutmix_alpha=0.0, prob=0.0, switch_prob=0.5, label_smoothing=0.2)
    x, y = batch(4)
    out_x, target = mix(x.clone(), y)
    assert torch.equal(out_x, x)
    assert torch.allclose(target, F.one_hot(y, K).float() * 0.8 + 0.2 / K)


# -- losses -----------------------------------------------------------------------------------

def test_label_smoothing_loss_by_hand():
    eps = 0.1
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    y = torch.tensor([0, 1])
    log_p = [[l - math.log(sum(math.exp(v) for v in row)) for l in row] for row in logits.tolist()]
    nll = -(log_p[0][0] + log_p[1][1]) / 2
    uniform = -(sum(log_p[0]) / 3 + sum(log_p[1]) / 3) / 2
    expected = (1 - eps) * nll + eps * uniform
    assert classification_loss(logits, y, label_smoothing=eps).item() == pytest.approx(expected, rel=1e-6)
    assert classification_loss(logits, y).item() == pytest.approx(nll, rel=1e-6)


def test_smoothed_loss_equals_soft_loss_on_smoothed_one_hot():
    eps = 0.2
    logits = torch.randn(4, K, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 3, 1, 4])
    soft = F.one_hot(y, K).float() * (1 - eps) + eps / K
    assert classification_loss(logits, y, eps).item() == pytest.approx(classification_loss(logits, soft).item(),
                                                                        rel=1e-6)


def test_soft_target_loss_by_hand():
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.2, 0.2, 0.6]])
    rows = []
    for row, t in zip(logits.tolist(), soft.tolist()):
        log_z = math.log(sum(math.exp(v) for v in row))
        rows.append(-sum(ti * (li - log_z) for ti, li in zip(t, row)))
    expected = sum(rows) / 2
    assert classification_loss(logits, soft).item() == pytest.approx(expected, rel=1e-6)
    # smoothing is not applied twice: soft targets already carry it
    assert classification_loss(logits, soft, label_smoothing=0.3).item() == pytest.approx(expected, rel=1e-6)


def test_loss_is_float32_for_half_logits():
    logits = torch.randn(2, 3).to(torch.bfloat16)
    assert classification_loss(logits, torch.tensor([0, 1])).dtype == torch.float32


# -- optimizer --------------------------------------------------------------------------------

def test_layer_decay_scales_fall_from_head_to_stem(vit):
    """BEiT / Clark et al. 2020: the head gets the LR, each layer below one more factor of layer_decay."""
    decay = 0.5
    optimizer = build_optimizer(vit, args(layer_decay=decay, weight_decay=0.05), lr=0.01)
    scale = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(vit.named_parameters())
    assert {id(p) for p in named.values()} == set(scale)  # every parameter is optimized
    depth = len(vit.blocks)
    assert depth >= 2

    expected = {"head.weight": 1.0, "head.bias": 1.0}
    for name in named:
        if re.match(r"(cls_token|pos_embed|patch_embed)", name):  # the stem: one below the first block
            expected[name] = decay ** (depth + 1)
        elif match := re.match(r"blocks\.(\d+)\.", name):
            expected[name] = decay ** (depth - int(match.group(1)))
    for name, value in expected.items():
        assert scale[id(named[name])] == pytest.approx(value), name
    assert scale[id(named["patch_embed.proj.weight"])] == min(scale.values())
    # the final norm sits on top of the blocks (timm groups it with the last one)
    assert decay <= scale[id(named["norm.weight"])] <= 1.0
    assert set(named) - set(expected) == {"norm.weight", "norm.bias"}


def test_no_weight_decay_on_biases_and_norms(vit):
    optimizer = build_optimizer(vit, args(layer_decay=0.75, weight_decay=0.05), lr=0.01)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    for name, p in vit.named_parameters():
        no_decay = p.ndim <= 1 or name in ("cls_token", "pos_embed")
        assert decay_of[id(p)] == (0.0 if no_decay else 0.05), name
    assert decay_of[id(dict(vit.named_parameters())["blocks.0.norm1.weight"])] == 0.0
    assert decay_of[id(dict(vit.named_parameters())["blocks.0.attn.qkv.bias"])] == 0.0


def test_no_weight_decay_on_biases_and_norms_without_layer_decay(effnet):
    optimizer = build_optimizer(effnet, args(optim="sgd", weight_decay=1e-4, momentum=0.8), lr=0.1)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(effnet.named_parameters())
    assert decay_of[id(named["conv_stem.weight"])] == 1e-4 and decay_of[id(named["classifier.weight"])] == 1e-4
    assert decay_of[id(named["bn1.weight"])] == 0.0 and decay_of[id(named["classifier.bias"])] == 0.0
    assert isinstance(optimizer, torch.optim.SGD)
    assert {g["momentum"] for g in optimizer.param_groups} == {0.8}
    assert {g["lr"] for g in optimizer.param_groups} == {0.1}


@pytest.mark.parametrize("layer_decay", [None, 0.5])
def test_head_lr_scale_multiplies_the_new_weights_lr_through_the_schedule(vit, layer_decay):
    """Discriminative LRs: the head trains head_lr_scale times faster, weight decay groups intact."""
    from fastft.schedules import Schedule, Scheduler

    head = [vit.head.weight, vit.head.bias]
    plain = build_optimizer(vit, args(layer_decay=layer_decay, weight_decay=0.05), lr=0.01)
    scaled = build_optimizer(vit, args(layer_decay=layer_decay, weight_decay=0.05, head_lr_scale=10), lr=0.01,
                             head_params=head)
    for optimizer in (plain, scaled):
        Scheduler(optimizer, Schedule(kind="constant", total_steps=10)).step()

    def by_param(optimizer, key):
        return {id(p): g[key] for g in optimizer.param_groups for p in g["params"]}

    before, after = by_param(plain, "lr"), by_param(scaled, "lr")
    assert set(before) == set(after) == {id(p) for p in vit.parameters()}  # each parameter once
    for name, p in vit.named_parameters():
        assert after[id(p)] == pytest.approx(before[id(p)] * (10 if name.startswith("head.") else 1)), name
    assert by_param(plain, "weight_decay") == by_param(scaled, "weight_decay")
    with pytest.raises(UserError, match="head_lr_scale .* has none"):
        build_optimizer(vit, args(head_lr_scale=10), lr=0.01, head_params=[])


def test_adam_hyperparameters_reach_the_optimizer(effnet):
    optimizer = build_optimizer(effnet, args(adam_beta1=0.8, adam_beta2=0.99, adam_epsilon=1e-6), lr=0.003)
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.8, 0.99) and group["eps"] == 1e-6 and group["lr"] == 0.003


def test_unknown_optimizer_is_a_user_error(effnet):
    with pytest.raises(UserError, match="adamm"):
        build_optimizer(effnet, args(optim="adamm"), lr=0.01)


def test_layer_decay_needs_a_layered_model():
    with pytest.raises(UserError, match="layer_decay"):
        build_optimizer(torch.nn.Linear(2, 2), args(layer_decay=0.7), lr=0.01)


# -- freezing ---------------------------------------------------------------------------------

def test_freezing_leaves_head_and_norms_trainable(effnet):
    head = list(effnet.get_classifier().parameters())
    set_backbone_frozen(effnet, head, frozen=True)
    norm_params = {id(p) for m in effnet.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                   for p in m.parameters(recurse=False)}
    assert norm_params
    trainable = {id(p) for p in effnet.parameters() if p.requires_grad}
    assert trainable == norm_params | {id(p) for p in head}

    effnet.train()
    logits = effnet(torch.randn(2, 3, 32, 32))
    classification_loss(logits, torch.tensor([0, 2])).backward()
    named = dict(effnet.named_parameters())
    assert named["conv_stem.weight"].grad is None
    assert all(p.grad is None for n, p in named.items() if ".conv" in n and n.endswith("weight"))
    assert named["classifier.weight"].grad is not None and named["bn1.weight"].grad is not None

    set_backbone_frozen(effnet, head, frozen=False)
    assert all(p.requires_grad for p in effnet.parameters())


def test_unfreezing_returns_to_what_the_task_left_trainable(effnet):
    """A weight the task fixed for the whole run (frozen embeddings, encoder) stays fixed after freeze_epochs."""
    effnet.conv_stem.weight.requires_grad_(False)
    effnet.bn1.weight.requires_grad_(False)  # a norm the task froze is not revived by the head-only phase either
    trainable = [p for p in effnet.parameters() if p.requires_grad]
    head = list(effnet.get_classifier().parameters())
    set_backbone_frozen(effnet, head, True, trainable)
    assert not effnet.bn1.weight.requires_grad and effnet.bn1.bias.requires_grad
    set_backbone_frozen(effnet, head, False, trainable)
    assert [p for p in effnet.parameters() if p.requires_grad] == trainable


def test_optimizer_built_before_freezing_trains_everything_after_unfreezing(effnet):
    optimizer = build_optimizer(effnet, args(weight_decay=0.1), lr=0.01)
    head = list(effnet.get_classifier().parameters())
    set_backbone_frozen(effnet, head, frozen=True)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in effnet.parameters()}

    stem = effnet.conv_stem.weight
    before, head_before = stem.detach().clone(), effnet.classifier.weight.detach().clone()
    classification_loss(effnet(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1])).backward()
    optimizer.step()
    assert torch.equal(stem, before)  # frozen: no update, not even weight decay
    assert not torch.equal(effnet.classifier.weight, head_before)

    optimizer.zero_grad()
    set_backbone_frozen(effnet, head, frozen=False)
    classification_loss(effnet(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1])).backward()
    optimizer.step()
    assert not torch.equal(stem, before)


def test_optimizer_built_after_freezing_would_miss_the_backbone(effnet):
    """Why build_optimizer must come first: timm skips parameters that do not require grad."""
    set_backbone_frozen(effnet, list(effnet.get_classifier().parameters()), frozen=True)
    optimizer = build_optimizer(effnet, args(), lr=0.01)
    assert id(effnet.conv_stem.weight) not in {id(p) for g in optimizer.param_groups for p in g["params"]}


def test_freezing_a_vit_keeps_layer_norms(vit):
    head = list(vit.get_classifier().parameters())
    try:
        set_backbone_frozen(vit, head, frozen=True)
        trainable = {n for n, p in vit.named_parameters() if p.requires_grad}
        assert "blocks.0.norm1.weight" in trainable and "norm.bias" in trainable and "head.weight" in trainable
        assert "blocks.0.attn.qkv.weight" not in trainable and "cls_token" not in trainable
    finally:
        set_backbone_frozen(vit, head, frozen=False)
