"""Theory: the scalar toy model (SEED_NOTES §4) and linear networks (Tian et al. 2021)."""
