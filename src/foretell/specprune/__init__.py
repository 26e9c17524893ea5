"""SpecPrune-VLA: action-aware visual-token pruning for VLA models."""
