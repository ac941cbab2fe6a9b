"""Instruments that read the training dynamics without changing them."""
