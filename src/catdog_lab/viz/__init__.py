"""What the convnets learned: Captum where it has the technique, plain PyTorch where it does not."""
