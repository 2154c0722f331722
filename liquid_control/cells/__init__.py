"""cells layer of liquid_control (see docs/ARCHITECTURE.md)."""
