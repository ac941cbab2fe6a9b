"""Data: loaders into one uint8 tensor, and batched augmentations on the device."""
from siamdyn.data.augment import AugmentParams, BatchAugment, channel_stats
from siamdyn.data.datasets import ImageData, load_split, make_synthetic

__all__ = ["AugmentParams", "BatchAugment", "channel_stats", "ImageData", "load_split", "make_synthetic"]
