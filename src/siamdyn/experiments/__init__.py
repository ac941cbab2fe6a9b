"""Named experiment grids H1–H9: cells of runs, the analyses on them, the report."""
