"""siamdyn: non-contrastive self-supervised learning (SimSiam, BYOL) and the instruments
that show why it does not collapse. See SEED_NOTES.md for the theory this code measures."""

__version__ = "0.1.0"
