"""Networks (components/), the LightningModule, model files, cached conv-base features."""
