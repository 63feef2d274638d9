"""The GICD network alone, pure torch: backbones, GIM, ARM decoder, loss, checkpoint formats."""
