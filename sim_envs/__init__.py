"""MuJoCo + gymnasium worlds for training liquid policies and measuring them under distribution shift."""
