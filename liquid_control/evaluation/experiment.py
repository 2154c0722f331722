"""Named experiments and shift sets (placeholder until the headline experiment lands)."""
SHIFT_SETS = {}
EXPERIMENTS = {}
ARCHITECTURES = ()
