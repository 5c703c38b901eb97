"""Optional CPU speed paths for the convolution (equal to :mod:`convtrain.ops.conv` up to float rounding)."""
