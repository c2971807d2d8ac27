"""``python -m lightning_transfer.transfer DATA --output-dir DIR``: the same as ``lightning-transfer transfer``."""

from lightning_transfer.transfer import main

if __name__ == "__main__":
    main()
