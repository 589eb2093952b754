"""Photos: sources, decoding, the split and its cache, the DataModule, augmentation."""
