"""Timers of the pretraining stage: the trainer's step per method (`step_time`) and LOOK's search alone
(`look_search_time`). They print figures; nothing asserts a time."""


def synchronize(device: object) -> None:
    """Wait for the device's queued work (a no-op on a CPU): what a wall-clock timing of GPU work needs."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
