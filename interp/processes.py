"""The processes of one ``accelerate launch`` (a plain command is one process): each stage's share of the work,
each process's own device, and what the main process decides for all of them.

The cache splits its shards this way (``build_cache``); explain and score split the selected latents, so a
launch writes exactly the lines one process would, each key once.
"""

from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env

from .config import RunConfig

T = TypeVar("T")


def launch_state() -> PartialState:
    """This process's place in the launch, made once: on a machine without CUDA (or under ``--cpu``) a launch of
    several processes (``torchrun --nproc_per_node N``) is one of CPU processes over gloo; a plain
    ``PartialState()`` ignores such a launch there and every process would do all the work."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def share(items: list[T]) -> list[T]:
    """This process's share of ``items``: every n-th from its index (all of them in a single process).

    Deterministic, so every process of a launch agrees on who does what; give it the selection before what is
    already done is left out (that changes while the others write).
    """
    state = launch_state()
    return items[state.process_index :: state.num_processes]


def on_own_device(cfg: RunConfig) -> RunConfig:
    """With several processes, the subject model and a local LLM go whole onto each process's own device, unless
    ``cfg`` places them itself (``--device-map``, ``--llm-device-map``)."""
    state = launch_state()
    if state.num_processes == 1:
        return cfg
    device = str(state.device)
    model = cfg.model if cfg.model.device_map is not None else replace(cfg.model, device_map=device)
    e = cfg.explain
    explain = e if e.llm_device_map is not None else replace(e, llm_device_map=device)
    return replace(cfg, model=model, explain=explain)


def everyone_done() -> None:
    """Wait until every process of the launch reaches this point (nothing in a single process)."""
    launch_state().wait_for_everyone()


def main_decides(decide: Callable[[], str | None]) -> str | None:
    """``decide()`` run by the main process alone, its answer given to every process (a message, or None)."""
    state = launch_state()
    answer = decide() if state.is_main_process else None
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        answer = broadcast_object_list([answer])[0]
    return answer
