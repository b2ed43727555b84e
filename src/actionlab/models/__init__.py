"""Video backbones, one file per paper family; each maps (B, C, T, H, W) to logits."""
