"""Glue for RL engines that call out to caikit: `verl` (custom reward function)."""
