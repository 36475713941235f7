"""The training engine: one loop for every recipe (schedules, checkpoints, DDP, logging, guards).

The engine knows nothing about any method: a recipe (`xmkd.engine.recipe.Recipe`) supplies models,
parameter groups, data, `training_step(batch)` -> named losses and `validate()` -> named metrics.
"""
