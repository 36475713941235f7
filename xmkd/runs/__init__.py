"""Run directories, from a config or a finished run: train one (or reuse it), evaluate one, predict with one.

These find the recipe a config names (`xmkd.recipes.get_recipe`) and drive the engine with it, so they sit above
the recipes: geometry / io / errors -> data -> models -> engine -> recipes -> runs -> cli / demo / benchmarks.
"""
