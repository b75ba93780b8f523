"""Tests for fastft.schedules and fastft.plan against torch's schedulers and hand-computed numbers."""
from __future__ import annotations

import math

import pytest
import torch
from torch.optim.lr_scheduler import CyclicLR, MultiStepLR, OneCycleLR

from fastft.config import TrainingArguments
from fastft.errors import UserError
from fastft.plan import make_plan
from fastft.schedules import Schedule, Scheduler, scale_lr

PEAK = 0.1


def make_optimizer(kind: str, groups: int = 1, lr: float = PEAK) -> torch.optim.Optimizer:
    """An optimizer holding the peak LR, as fastft's optimizer builder makes it (the Scheduler reads it there)."""
    params = [{"params": [torch.nn.Parameter(torch.zeros(2))]} for _ in range(groups)]
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999))


def momentum_of(optimizer: torch.optim.Optimizer) -> float:
    group = optimizer.param_groups[0]
    return group["betas"][0] if "betas" in group else group["momentum"]


def run_side_by_side(ours: Scheduler, theirs, steps: int) -> None:
    """Step both schedulers ``steps - 1`` times and compare LR and momentum/beta1 before each update."""
    mine, ref = ours.optimizer, theirs.optimizer
    for t in range(steps):
        assert mine.param_groups[0]["lr"] == pytest.approx(ref.param_groups[0]["lr"], rel=1e-9, abs=1e-15), t
        assert momentum_of(mine) == pytest.approx(momentum_of(ref), rel=1e-9), t
        if "betas" in ref.param_groups[0]:
            assert mine.param_groups[0]["betas"][1] == ref.param_groups[0]["betas"][1]
        if t < steps - 1:
            ref.step()  # no grads: a no-op that keeps torch from warning about the call order
            theirs.step()
            ours.step()


def args(**kw) -> TrainingArguments:
    kw.setdefault("output_dir", "unused")
    return TrainingArguments(**kw)


def lrs(plan) -> list[float]:
    return [plan.scaled_learning_rate * plan.schedule.lr_factor(t) for t in range(plan.total_steps)]


# -- one_cycle and cyclic against torch ------------------------------------------------------

@pytest.mark.parametrize("optim", ["sgd", "adamw"])
@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("total, warmup", [(100, 30), (37, 11), (10, 2)])
def test_one_cycle_matches_torch(optim, anneal, total, warmup):
    div, final_div = 25.0, 1e4
    schedule = Schedule("one_cycle", total_steps=total, warmup_steps=warmup, div_factor=div,
                        final_div_factor=final_div, anneal=anneal, base_momentum=0.85, max_momentum=0.95)
    ours = Scheduler(make_optimizer(optim), schedule)
    theirs = OneCycleLR(make_optimizer(optim), max_lr=PEAK, total_steps=total, pct_start=warmup / total,
                        anneal_strategy=anneal, div_factor=div, final_div_factor=final_div, three_phase=False,
                        cycle_momentum=True, base_momentum=0.85, max_momentum=0.95)
    run_side_by_side(ours, theirs, total)
    # the very ends: start at peak/div, end at peak/(div*final_div)
    assert schedule.lr_factor(0) == pytest.approx(1 / div)
    assert schedule.lr_factor(total - 1) == pytest.approx(1 / (div * final_div))


def test_one_cycle_from_plan_matches_torch():
    """make_plan turns one_cycle_pct_start into warmup steps; the result is torch's OneCycleLR."""
    a = args(lr_scheduler_type="one_cycle", learning_rate=PEAK, num_train_epochs=2, per_device_train_batch_size=10,
             one_cycle_pct_start=0.3, one_cycle_div_factor=10, one_cycle_final_div_factor=100,
             one_cycle_anneal="linear", base_momentum=0.8, max_momentum=0.9)
    plan = make_plan(a, num_train_samples=500, num_processes=1)
    assert plan.total_steps == 100 and plan.warmup_steps == 30
    theirs = OneCycleLR(make_optimizer("adamw"), max_lr=PEAK, total_steps=100, pct_start=0.3,
                        anneal_strategy="linear", div_factor=10, final_div_factor=100,
                        base_momentum=0.8, max_momentum=0.9)
    run_side_by_side(Scheduler(make_optimizer("adamw"), plan.schedule), theirs, 100)


@pytest.mark.parametrize("optim", ["sgd", "adamw"])
@pytest.mark.parametrize("mode, gamma", [("triangular", 1.0), ("triangular2", 1.0), ("exp_range", 0.99)])
def test_cyclic_matches_torch(optim, mode, gamma):
    step_size, base, total = 7, 0.25, 7 * 2 * 3 + 5  # three full cycles and a bit
    schedule = Schedule("cyclic", total_steps=total, warmup_steps=0, cyclic_mode=mode, cyclic_base=base,
                        cyclic_step_size=step_size, cyclic_gamma=gamma, base_momentum=0.8, max_momentum=0.9)
    ours = Scheduler(make_optimizer(optim), schedule)
    theirs = CyclicLR(make_optimizer(optim), base_lr=PEAK * base, max_lr=PEAK, step_size_up=step_size, mode=mode,
                      gamma=gamma, cycle_momentum=True, base_momentum=0.8, max_momentum=0.9)
    run_side_by_side(ours, theirs, total)
    # a triangle: bottom at 0, top at step_size, bottom again at 2*step_size
    assert schedule.lr_factor(0) == pytest.approx(base)
    assert schedule.lr_factor(step_size) == pytest.approx(1.0 if mode != "exp_range" else
                                                          base + (1 - base) * gamma ** step_size)
    assert schedule.lr_factor(2 * step_size) == pytest.approx(base)


def test_cyclic_from_plan_matches_torch_with_default_step_size():
    """cyclic_step_size unset means two epochs (Smith 2017: 2-10 epochs per half cycle)."""
    a = args(lr_scheduler_type="cyclic", learning_rate=PEAK, num_train_epochs=5, per_device_train_batch_size=10,
             cyclic_mode="triangular2", cyclic_base_lr_ratio=0.1)
    plan = make_plan(a, num_train_samples=60, num_processes=1)  # 6 steps/epoch
    assert plan.schedule.cyclic_step_size == 12 and plan.total_steps == 30
    theirs = CyclicLR(make_optimizer("sgd"), base_lr=PEAK * 0.1, max_lr=PEAK, step_size_up=12, mode="triangular2",
                      base_momentum=0.85, max_momentum=0.95)
    run_side_by_side(Scheduler(make_optimizer("sgd"), plan.schedule), theirs, 30)


def test_cycle_momentum_off_leaves_momentum_alone():
    schedule = Schedule("one_cycle", total_steps=20, warmup_steps=5, cycle_momentum=False)
    sched = Scheduler(make_optimizer("adamw"), schedule)
    for _ in range(10):
        sched.step()
    assert sched.optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    assert schedule.momentum(3) is None


# -- linear, cosine, constant, inverse_sqrt, multistep ---------------------------------------

def test_linear_with_warmup_by_hand():
    s = Schedule("linear", total_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    expected = {0: 0.0, 5: 0.5, 10: 1.0, 55: 0.55, 99: 0.11, 100: 0.1}
    for t, value in expected.items():
        assert s.lr_factor(t) == pytest.approx(value), t
    assert s.momentum(50) is None


def test_cosine_with_warmup_by_hand():
    s = Schedule("cosine", total_steps=110, warmup_steps=10, min_lr_ratio=0.2)
    expected = {0: 0.0, 4: 0.4, 10: 1.0,
                35: 0.2 + 0.8 * 0.5 * (1 + 0.7071067811865476),  # a quarter of the way: cos(pi/4)
                60: 0.6,  # midpoint: halfway between peak and floor
                85: 0.2 + 0.8 * 0.5 * (1 - 0.7071067811865476),
                110: 0.2}
    for t, value in expected.items():
        assert s.lr_factor(t) == pytest.approx(value), t
    assert s.momentum(50) is None


def test_linear_and_cosine_match_transformers():
    from transformers import get_cosine_with_min_lr_schedule_with_warmup, get_linear_schedule_with_warmup

    total, warmup = 57, 6
    for kind, make in [("linear", lambda o: get_linear_schedule_with_warmup(o, warmup, total)),
                       ("cosine", lambda o: get_cosine_with_min_lr_schedule_with_warmup(
                           o, warmup, total, min_lr_rate=0.05))]:
        s = Schedule(kind, total_steps=total, warmup_steps=warmup, min_lr_ratio=0.0 if kind == "linear" else 0.05)
        ours = Scheduler(make_optimizer("sgd"), s)
        theirs = make(make_optimizer("sgd"))
        for t in range(total + 1):  # including the LR left after the last update
            assert ours.get_last_lr()[0] == pytest.approx(theirs.get_last_lr()[0], abs=1e-12), (kind, t)
            assert momentum_of(ours.optimizer) == 0.9  # left alone
            theirs.optimizer.step()
            theirs.step()
            ours.step()


def test_constant_with_warmup():
    s = Schedule("constant", total_steps=20, warmup_steps=4)
    assert [s.lr_factor(t) for t in range(7)] == pytest.approx([0, 0.25, 0.5, 0.75, 1, 1, 1])
    assert s.lr_factor(19) == 1.0


def test_inverse_sqrt():
    w = 4
    s = Schedule("inverse_sqrt", total_steps=1000, warmup_steps=w)
    assert [s.lr_factor(t) for t in range(w + 1)] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    for t in (4, 9, 16, 100, 400, 999):
        assert s.lr_factor(t) == pytest.approx(math.sqrt(w / t)), t
    assert s.lr_factor(16) == pytest.approx(0.5) and s.lr_factor(400) == pytest.approx(0.1)
    assert max(range(1000), key=s.lr_factor) == w


def test_multistep_milestones_in_epochs_match_torch():
    a = args(lr_scheduler_type="multistep", learning_rate=PEAK, num_train_epochs=6, per_device_train_batch_size=10,
             lr_decay_epochs=[2, 4.5], lr_decay_rate=0.5)
    plan = make_plan(a, num_train_samples=100, num_processes=1)  # 10 steps per epoch
    assert plan.schedule.milestones == (20, 45)
    torch_opt = make_optimizer("sgd")
    theirs = MultiStepLR(torch_opt, milestones=[20, 45], gamma=0.5)
    ours = Scheduler(make_optimizer("sgd"), plan.schedule)
    for t in range(plan.total_steps):
        assert ours.get_last_lr()[0] == pytest.approx(theirs.get_last_lr()[0]), t
        torch_opt.step()
        theirs.step()
        ours.step()
    assert plan.schedule.lr_factor(19) == 1.0 and plan.schedule.lr_factor(20) == 0.5
    assert plan.schedule.lr_factor(45) == 0.25


def test_multistep_milestones_in_any_order():
    plans = [make_plan(args(lr_scheduler_type="multistep", num_train_epochs=6, per_device_train_batch_size=10,
                            lr_decay_epochs=epochs), 100, 1) for epochs in ([2, 4], [4, 2])]
    assert lrs(plans[0]) == lrs(plans[1])
    assert plans[1].schedule.lr_factor(30) == pytest.approx(0.1)


def test_multistep_milestones_scale_with_steps_per_epoch():
    """Epoch 3 is a different optimizer step under accumulation, but the same epoch."""
    a = dict(lr_scheduler_type="multistep", num_train_epochs=4, per_device_train_batch_size=10, lr_decay_epochs=[3])
    one = make_plan(args(**a), 200, 1)
    accumulated = make_plan(args(gradient_accumulation_steps=4, **a), 200, 1)
    assert one.schedule.milestones == (60,) and accumulated.schedule.milestones == (15,)


# -- LR scaling and Goyal warmup ------------------------------------------------------------

def goyal_plan(**kw):
    a = args(**{**dict(learning_rate=0.1, reference_batch_size=256, per_device_train_batch_size=256,
                       warmup_steps=4, lr_scheduler_type="constant", num_train_epochs=2), **kw})
    return make_plan(a, num_train_samples=256 * 4 * 10, num_processes=4)  # global batch 1024


def test_goyal_linear_scaling_and_warmup_from_reference_lr():
    plan = goyal_plan()
    assert plan.global_batch_size == 1024 and plan.total_steps == 20
    assert plan.scaled_learning_rate == pytest.approx(0.4)
    assert lrs(plan)[:6] == pytest.approx([0.1, 0.175, 0.25, 0.325, 0.4, 0.4])


def test_goyal_warmup_drives_the_optimizer():
    plan = goyal_plan(lr_scheduler_type="linear")
    sched = Scheduler(make_optimizer("sgd", lr=plan.scaled_learning_rate), plan.schedule)
    seen = []
    for _ in range(plan.total_steps):
        seen.append(sched.get_last_lr()[0])
        sched.step()
    assert seen[0] == pytest.approx(0.1) and seen[4] == pytest.approx(0.4)
    assert seen[12] == pytest.approx(0.4 * (20 - 12) / 16)


def test_sqrt_scaling():
    plan = goyal_plan(lr_scaling="sqrt")
    assert plan.scaled_learning_rate == pytest.approx(0.2)
    assert lrs(plan)[0] == pytest.approx(0.1) and lrs(plan)[4] == pytest.approx(0.2)


@pytest.mark.parametrize("kw", [dict(lr_scaling="none"), dict(reference_batch_size=None)])
def test_no_scaling(kw):
    a = args(learning_rate=0.1, per_device_train_batch_size=256, warmup_steps=4, lr_scheduler_type="constant",
             num_train_epochs=2, **{"reference_batch_size": 256, **kw})
    plan = make_plan(a, num_train_samples=256 * 4 * 10, num_processes=4)
    assert plan.scaled_learning_rate == pytest.approx(0.1)
    assert lrs(plan)[:5] == pytest.approx([0, 0.025, 0.05, 0.075, 0.1])  # plain warmup from zero


def test_smaller_batch_than_reference_scales_down_and_warms_up_from_zero():
    a = args(learning_rate=0.1, reference_batch_size=256, per_device_train_batch_size=64, warmup_steps=2,
             lr_scheduler_type="constant")
    plan = make_plan(a, num_train_samples=6400, num_processes=1)
    assert plan.scaled_learning_rate == pytest.approx(0.025)
    assert lrs(plan)[:3] == pytest.approx([0, 0.0125, 0.025])


def test_scale_lr():
    assert scale_lr(0.1, 1024, 256, "linear") == pytest.approx(0.4)
    assert scale_lr(0.1, 64, 256, "linear") == pytest.approx(0.025)
    assert scale_lr(0.1, 1024, 256, "sqrt") == pytest.approx(0.2)
    assert scale_lr(0.1, 1024, 256, "none") == 0.1
    assert scale_lr(0.1, 1024, None, "linear") == 0.1


# -- Scheduler: lr_scale and checkpoints ----------------------------------------------------

def test_scheduler_honours_lr_scale():
    optimizer = make_optimizer("adamw", groups=3)
    for group, scale in zip(optimizer.param_groups, (1.0, 0.5, 0.25)):
        group["lr_scale"] = scale
    optimizer.param_groups[0].pop("lr_scale")  # a group without one counts as 1
    sched = Scheduler(optimizer, Schedule("linear", total_steps=10, warmup_steps=2))
    for _ in range(4):
        sched.step()
    top = PEAK * (1 - 2 / 8)  # step 4 of linear decay from step 2 to 10
    assert sched.get_last_lr() == pytest.approx([top, top * 0.5, top * 0.25])


@pytest.mark.parametrize("kind", ["one_cycle", "cosine", "cyclic"])
def test_scheduler_state_dict_round_trip(kind):
    schedule = Schedule(kind, total_steps=50, warmup_steps=10, cyclic_step_size=5)
    first = Scheduler(make_optimizer("adamw"), schedule)
    for _ in range(17):
        first.step()
    state = first.state_dict()
    restored = Scheduler(make_optimizer("adamw"), schedule)
    assert restored.get_last_lr() != first.get_last_lr()
    restored.load_state_dict(state)
    for _ in range(5):
        assert restored.get_last_lr() == first.get_last_lr()
        assert restored.optimizer.param_groups[0]["betas"] == first.optimizer.param_groups[0]["betas"]
        first.step()
        restored.step()


# -- make_plan: step counting ---------------------------------------------------------------

@pytest.mark.parametrize("n, batch, world, accum, epochs, per_process, per_epoch, total", [
    (1000, 32, 1, 1, 1, 32, 32, 32),      # ceil(1000/32) = 32
    (1000, 32, 3, 1, 1, 11, 11, 11),      # 32 batches over 3 processes, padded to 11 each
    (1000, 32, 2, 3, 2, 16, 6, 12),       # 16 micro-batches, the last step accumulates only one
    (1000, 32, 3, 4, 2.5, 11, 3, 8),      # ceil(2.5 * 3)
    (50000, 64, 8, 2, 0.5, 98, 49, 25),   # ceil(782 / 8) = 98
    (64, 64, 1, 1, 3, 1, 1, 3),
    (65, 64, 1, 8, 1, 2, 1, 1),
])
def test_step_counting(n, batch, world, accum, epochs, per_process, per_epoch, total):
    a = args(per_device_train_batch_size=batch, gradient_accumulation_steps=accum, num_train_epochs=epochs)
    plan = make_plan(a, n, world)
    assert (plan.batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == (per_process, per_epoch, total)
    assert plan.global_batch_size == batch * world * accum
    assert plan.num_epochs == pytest.approx(total / per_epoch)


def test_drop_last_step_counting():
    a = args(per_device_train_batch_size=32, num_train_epochs=1)
    assert make_plan(a, 1000, 3, drop_last=True).total_steps == 10  # 31 full batches, 31 // 3


def test_max_steps_overrides_epochs():
    plan = make_plan(args(max_steps=7, num_train_epochs=100, per_device_train_batch_size=10), 1000, 1)
    assert plan.total_steps == 7


def test_schedule_depends_on_the_global_batch_only():
    """Same global batch from processes, accumulation or a bigger per-device batch: same LR at every step."""
    common = dict(learning_rate=0.01, reference_batch_size=16, lr_scheduler_type="cosine", warmup_steps=0.1,
                  num_train_epochs=3, min_lr_ratio=0.01)
    plans = [make_plan(args(per_device_train_batch_size=16, **common), 1000, 2),
             make_plan(args(per_device_train_batch_size=16, gradient_accumulation_steps=2, **common), 1000, 1),
             make_plan(args(per_device_train_batch_size=32, **common), 1000, 1),
             make_plan(args(per_device_train_batch_size=8, gradient_accumulation_steps=2, **common), 1000, 2)]
    assert {p.global_batch_size for p in plans} == {32}
    assert {p.total_steps for p in plans} == {96}  # ceil(1000 / 32) = 32 steps per epoch
    assert {p.warmup_steps for p in plans} == {10}
    assert plans[0].scaled_learning_rate == pytest.approx(0.02)
    for other in plans[1:]:
        assert lrs(other) == lrs(plans[0])


def test_warmup_ratio_and_integer():
    base = dict(per_device_train_batch_size=10, num_train_epochs=1)
    assert make_plan(args(warmup_steps=0.1, **base), 1000, 1).warmup_steps == 10
    assert make_plan(args(warmup_steps=0.25, **base), 1000, 1).warmup_steps == 25
    assert make_plan(args(warmup_steps=7, **base), 1000, 1).warmup_steps == 7
    assert make_plan(args(warmup_steps=1, **base), 1000, 1).warmup_steps == 1
    assert make_plan(args(warmup_steps=0, **base), 1000, 1).warmup_steps == 0
    with pytest.raises(UserError, match="whole number"):
        make_plan(args(warmup_steps=2.5, **base), 1000, 1)


def test_warmup_not_shorter_than_training_is_an_error():
    with pytest.raises(UserError, match=r"warmup_steps \(100\).*\(100\)"):
        make_plan(args(warmup_steps=100, per_device_train_batch_size=10, num_train_epochs=1), 1000, 1)
    with pytest.raises(UserError, match="warmup_steps"):
        make_plan(args(warmup_steps=500, per_device_train_batch_size=10, num_train_epochs=1), 1000, 1)
    assert make_plan(args(warmup_steps=99, per_device_train_batch_size=10, num_train_epochs=1), 1000, 1)


@pytest.mark.parametrize("n, batch, world, drop_last", [(10, 32, 1, False), (10, 32, 1, True),
                                                        (100, 64, 2, False), (100, 64, 2, True)])
def test_batch_larger_than_dataset_is_an_error(n, batch, world, drop_last):
    with pytest.raises(UserError, match="per_device_train_batch_size"):
        make_plan(args(per_device_train_batch_size=batch), n, world, drop_last)


def test_batch_equal_to_dataset_is_fine():
    assert make_plan(args(per_device_train_batch_size=50, num_train_epochs=2), 100, 2).total_steps == 2


def test_describe_and_as_dict():
    plan = goyal_plan(lr_scheduler_type="one_cycle")
    text = plan.describe()
    assert "global batch:               1024" in text and "total optimizer steps:      20" in text
    d = plan.as_dict()
    assert d["lr_scheduler_type"] == "one_cycle" and d["total_steps"] == 20 and "schedule" not in d


@pytest.mark.parametrize("kind, warmup", [("linear", 0.1), ("one_cycle", 0), ("cosine", 3)])
def test_restart_at_unfreeze_runs_the_schedule_afresh_over_each_phase(kind, warmup):
    """fastai's fine_tune: the head-only epochs get the schedule, and the rest gets it again from its start,
    warmup included, each phase as if it were a run of that length."""
    common = dict(per_device_train_batch_size=10, lr_scheduler_type=kind, warmup_steps=warmup, learning_rate=0.01)
    plan = make_plan(args(freeze_epochs=1, num_train_epochs=3, restart_schedule_at_unfreeze=True, **common), 200, 1)
    head_only = make_plan(args(num_train_epochs=1, **common), 200, 1)  # 20 steps
    rest = make_plan(args(num_train_epochs=2, **common), 200, 1)  # 40 steps
    assert plan.total_steps == 60 and plan.warmup_steps == rest.warmup_steps
    assert lrs(plan) == lrs(head_only) + lrs(rest)
    momenta = [plan.schedule.momentum(t) for t in range(60)]
    assert momenta == [head_only.schedule.momentum(t) for t in range(20)] + [rest.schedule.momentum(t)
                                                                             for t in range(40)]
    assert lrs(plan)[20] < plan.scaled_learning_rate / 20  # the backbone's first step: a fresh, low LR
    one = make_plan(args(freeze_epochs=1, num_train_epochs=3, **common), 200, 1)
    assert lrs(one) == lrs(make_plan(args(num_train_epochs=3, **common), 200, 1))  # off: one schedule, as before
    assert "schedule restarted:         at step 20 (the unfreezing)" in plan.describe()


def test_restart_at_unfreeze_that_cannot_apply_is_an_error():
    from fastft.config import check_training_args

    with pytest.raises(UserError, match="restart_schedule_at_unfreeze.*freeze_epochs is 0"):
        check_training_args(args(restart_schedule_at_unfreeze=True))
    with pytest.raises(UserError, match="restart_schedule_at_unfreeze.*multistep"):
        check_training_args(args(restart_schedule_at_unfreeze=True, freeze_epochs=1, lr_scheduler_type="multistep",
                                 lr_decay_epochs=[2]))
    with pytest.raises(UserError, match=r"freeze_epochs \(2\) covers the whole run \(20 steps\)"):
        make_plan(args(restart_schedule_at_unfreeze=True, freeze_epochs=2, num_train_epochs=2,
                       per_device_train_batch_size=10), 100, 1)
    with pytest.raises(UserError, match=r"warmup_steps \(15\) must be fewer than the optimizer steps of each "
                                        r"phase \(10\)"):
        make_plan(args(restart_schedule_at_unfreeze=True, freeze_epochs=1, num_train_epochs=3, warmup_steps=15,
                       per_device_train_batch_size=10), 100, 1)
