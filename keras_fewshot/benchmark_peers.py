"""An eager PyTorch ProtoNet: the peer `benchmark.serving_peer_ratios` measures the exported
ProtoNet against. Development only: torch is imported when this module is, and is no
dependency of the package or its tests.

The same work as the SavedModel's request: uint8 [M, H, W, C] pixels -> gray (mean over
channels), area resize to 28x28 as two matrix products, 1 - x / 255; conv4 (4 x [conv 3x3
64, batch norm, ReLU, max pool 2]) in inference mode; prototypes as class means; logits
-squared distance; softmax. The weights are the Keras model's, so both answer alike.
"""

import numpy as np
import torch


def _area_weights(in_size, out_size):
    """[out, in]: the fraction of output pixel i's footprint that input pixel k covers."""
    scale = in_size / out_size
    lower = torch.arange(out_size, dtype=torch.float32)[:, None] * scale
    k = torch.arange(in_size, dtype=torch.float32)[None, :]
    covered = torch.minimum(k + 1.0, lower + scale) - torch.maximum(k, lower)
    return torch.relu(covered) / scale


class TorchProtoNet(torch.nn.Module):
    """ProtoNet (Snell et al. 2017) with conv4, as a PyTorch user would write it."""

    def __init__(self, image_size=28, filters=64):
        super().__init__()
        self.image_size = image_size
        blocks = []
        for i in range(4):
            blocks += [torch.nn.Conv2d(1 if i == 0 else filters, filters, 3, padding=1),
                       torch.nn.BatchNorm2d(filters, eps=1e-3), torch.nn.ReLU(),
                       torch.nn.MaxPool2d(2)]
        self.encoder = torch.nn.Sequential(*blocks, torch.nn.Flatten())

    def preprocess(self, images):
        """uint8 [M, H, W, C] -> float32 [M, 1, s, s] ink intensity."""
        gray = images.float().mean(dim=-1)
        rows = _area_weights(gray.shape[1], self.image_size)
        columns = _area_weights(gray.shape[2], self.image_size)
        return (1.0 - rows @ gray @ columns.T / 255.0)[:, None]

    def encode_support(self, support_images, support_labels):
        """-> prototypes [N, D]."""
        embeddings = self.encoder(self.preprocess(support_images))
        onehot = torch.nn.functional.one_hot(support_labels.long()).float()  # [S, N]
        return (onehot.T @ embeddings) / onehot.sum(0)[:, None]

    def classify(self, prototypes, query_images):
        """-> probabilities [Q, N]."""
        queries = self.encoder(self.preprocess(query_images))
        return torch.softmax(-torch.cdist(queries, prototypes) ** 2, dim=-1)

    def forward(self, support_images, support_labels, query_images):
        return self.classify(self.encode_support(support_images, support_labels),
                             query_images)


def torch_protonet(model):
    """A `TorchProtoNet` (eval mode) with the weights of a Keras `PrototypicalNetwork`."""
    peer = TorchProtoNet(model.image_size, model.filters).eval()
    torch_layers = iter(peer.encoder)
    with torch.no_grad():
        for layer in model.embedding.block_layers:
            weights = [np.asarray(w) for w in layer.get_weights()]
            if type(layer).__name__ == "Conv2D":
                conv = next(torch_layers)
                conv.weight.copy_(torch.from_numpy(weights[0].transpose(3, 2, 0, 1).copy()))
                conv.bias.copy_(torch.from_numpy(weights[1]))
            elif type(layer).__name__ == "BatchNormalization":
                norm = next(torch_layers)
                for tensor, value in zip((norm.weight, norm.bias, norm.running_mean,
                                          norm.running_var), weights):
                    tensor.copy_(torch.from_numpy(value))
                norm.eps = layer.epsilon
                next(torch_layers), next(torch_layers)  # ReLU, max pool
    return peer
