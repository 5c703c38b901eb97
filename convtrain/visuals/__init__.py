"""What the network learned, made visible: the TensorBoard writer, image grids and PNG files, and the hooks that log them during training."""
