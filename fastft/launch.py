"""What ``accelerate launch`` started: the Accelerator for a run, and the checks of the launch itself.

Process count, CPU-only multi-process runs, thread oversubscription and the
precisions or features a launch cannot honour are refused or warned about here,
before any data or weights are loaded.
"""
from __future__ import annotations

import os
import warnings
from typing import Optional

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, DynamoBackend, TorchDynamoPlugin

from fastft.config import TrainingArguments, trackers
from fastft.errors import UserError


def launched_on_cpu_only() -> bool:
    """Several launched processes and no GPU: accelerate must be told to sync them on the CPU.

    Without ``cpu=True`` each torchrun worker silently becomes an unsynchronised rank 0 that
    trains alone and also writes and pushes as the main process.
    """
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def launch_state() -> PartialState:
    """The processes accelerate joined, checked against those launched (no Accelerator built)."""
    state = PartialState(cpu=launched_on_cpu_only())
    check_world(state)
    return state


def check_world(state: PartialState) -> None:
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if state.num_processes != launched:
        raise UserError(f"{launched} processes were launched but accelerate joined {state.num_processes}; "
                        f"on a CPU-only machine use accelerate_configs/cpu_multi_process.yaml")


def oversubscription(threads: int, local_processes: int, cores: int) -> Optional[str]:
    """A warning when this node's processes x torch threads exceed its cores, else None.

    Their threads then fight for cores and CPU steps get many times slower: two benchmark runs
    at default threads on a 2-core machine were 6-10x slower than with one thread each.
    """
    if threads * local_processes <= cores:
        return None
    return (f"{local_processes} process(es) x {threads} torch threads on {cores} cores: CPU training will be "
            f"several times slower; set OMP_NUM_THREADS={max(1, cores // local_processes)} per process")


def warn_if_oversubscribed(accelerator: Accelerator) -> None:
    if accelerator.device.type != "cpu" or not accelerator.is_local_main_process:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    message = oversubscription(torch.get_num_threads(), local, cores)
    if message:
        warnings.warn(message, stacklevel=2)


def _dynamo_plugin(args: TrainingArguments) -> TorchDynamoPlugin:
    backend = args.torch_compile_backend or "inductor"
    try:
        return TorchDynamoPlugin(backend=backend, mode=args.torch_compile_mode or "default")
    except ValueError:
        raise UserError(f"torch_compile_backend {backend!r} is not a backend accelerate knows; valid: "
                        f"{', '.join(b.value.lower() for b in DynamoBackend if b.value != 'NO')}") from None


def make_accelerator(args: TrainingArguments) -> Accelerator:
    """The Accelerator for ``args``, after refusing what this launch cannot do."""
    handlers = []
    if args.freeze_epochs:  # frozen parameters get no gradient; DDP must not wait for them
        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
    # accelerate keeps one AcceleratorState per process and ignores a later Accelerator's settings (torch_compile,
    # mixed precision): a second run in a notebook must get its own. The process group (PartialState) stays.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        # Accumulation is done by the engine (Trainer.step) so the loss is normalised over
        # the whole window; accelerate sees one micro-batch per step.
        gradient_accumulation_steps=1,
        mixed_precision=args.mixed_precision,
        log_with=trackers(args.report_to) or None,
        project_dir=args.output_dir,
        # Seeded per-epoch shuffling, so a resumed run sees the same data order.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
        kwargs_handlers=handlers,
        cpu=launched_on_cpu_only(),
        # Only when asked: otherwise accelerate's own config (accelerate launch --dynamo_backend) decides.
        **({"dynamo_plugin": _dynamo_plugin(args)} if args.torch_compile else {}),
    )
    check_world(accelerator.state)
    kind = accelerator.distributed_type
    sharded = kind == DistributedType.FSDP or (
        kind == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3)
    if args.model_ema and sharded:
        raise UserError("model_ema averages whole weights on every process and does not work with sharded weights "
                        "(FSDP, DeepSpeed ZeRO-3); use DDP or ZeRO-2, or turn model_ema off")
    if args.load_best_model_at_end and sharded:
        raise UserError("load_best_model_at_end keeps whole weights and does not work with sharded weights yet "
                        "(FSDP, DeepSpeed ZeRO-3); use DDP or ZeRO-2, or keep checkpoints and pick one")
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise UserError("mixed_precision fp16 on CPU is silently ignored by accelerate; "
                        "use bf16 (slow without bf16 hardware) or no")
    warn_if_oversubscribed(accelerator)
    return accelerator
