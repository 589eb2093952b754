"""catdog-lab: the computer-vision chapter of Deep Learning with Python, rebuilt in PyTorch."""

__version__ = "0.1.0"

CLASSES = ("cat", "dog")  # label 0 = cat, 1 = dog (Keras' alphabetical order); the model's logit is "dog"
SPLITS = ("train", "validation", "test")  # the data split's parts, in the order they are cached
