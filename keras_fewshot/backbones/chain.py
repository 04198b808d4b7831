"""Sublayers run one after another (conv4's blocks, ResNet-12's residual blocks, an MLP): a
layer holding such a chain builds each link on the output shape of the one before."""


def build_chain(layers, input_shape):
    """Builds `layers` in order, each on the previous one's output shape; returns the last
    output shape."""
    shape = input_shape
    for layer in layers:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return shape


def chain_output_shape(layers, input_shape):
    """The output shape of `layers` applied in order to `input_shape`."""
    shape = input_shape
    for layer in layers:
        shape = layer.compute_output_shape(shape)
    return shape
