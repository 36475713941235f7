"""Distillation losses shared by the recipes: logit KL, feature imitation, relations."""
