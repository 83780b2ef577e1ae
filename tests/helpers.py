"""Constants and small helpers shared by tests (import as ``tests.helpers``)."""

# Overrides of the LUSS-AE config for a model small enough to train in seconds on 2 CPU cores.
TINY_LUSS_OVERRIDES = (
    "height=32",
    "width=32",
    "encoder_channels=[16,16,32,32]",
    "prp_hidden=[32,16]",
    "epochs=1",
    "batch_size=8",
    "train_stride=4",
)
