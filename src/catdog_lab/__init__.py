"""catdog-lab: the computer-vision chapter of Deep Learning with Python, rebuilt in PyTorch."""

__version__ = "0.1.0"

# the book's data (the kaggle layout): label 0 = cat, 1 = dog (Keras' alphabetical order), the one logit is "dog".
# Other data bring their own classes (data/discover.py); the split and every model file record them.
BOOK_CLASSES = ("cat", "dog")
SPLITS = ("train", "validation", "test")  # the data split's parts, in the order they are cached
