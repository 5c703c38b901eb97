"""What the network learned, made visible: the TensorBoard writer, image grids and PNG files, and
one training hook per visual kind (:mod:`convtrain.visuals.hooks`)."""
