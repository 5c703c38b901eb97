"""convtrain: configuration-driven CNN training on a hand-written NumPy im2col engine."""
__version__ = "0.1.0"
