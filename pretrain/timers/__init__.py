"""Timers of the pretraining stage: the trainer's step per method (`step_time`) and LOOK's search alone
(`look_search_time`). They print figures; nothing asserts a time."""
