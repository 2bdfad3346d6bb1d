"""Data generators shared by the paper's experiments (all offline and deterministic per seed)."""
from .border import border_location_dataset, source_images
from .location import location_pair
from .red_green import RedGreenSplits, make_red_green, make_red_green_splits, move_to_other_half

__all__ = ["border_location_dataset", "source_images", "location_pair", "RedGreenSplits", "make_red_green", "make_red_green_splits", "move_to_other_half"]
