"""Theory: the scalar toy model (docs/seed.md §4) and linear networks (Tian et al. 2021)."""
