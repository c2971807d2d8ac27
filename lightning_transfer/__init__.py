"""lightning-transfer: Lightning modules for self-supervised pretraining and few-label fine-tuning."""
__version__ = "0.1.0"
