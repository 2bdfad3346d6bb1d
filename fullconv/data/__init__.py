"""Data generators shared by the paper's experiments (all offline and deterministic per seed)."""
from .location import location_pair
from .red_green import RedGreenSplits, make_red_green, make_red_green_splits, move_to_other_half

__all__ = ["location_pair", "RedGreenSplits", "make_red_green", "make_red_green_splits", "move_to_other_half"]
