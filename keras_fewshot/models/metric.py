"""Metric classifiers: a support set turned once into a class representation ("support code"),
then any number of queries classified against it, as easyfsl's `process_support_set`.

    code = model.encode_support({"support_images": s, "support_labels": y})
    logits = model.classify_encoded(code, query_images)   # == model(episode), to round-off

The code is a dict of float32 tensors, per model: ProtoNet {"prototypes": [N, D]}, Matching
and Siamese {"support_embeddings": [S, D], "support_onehot": [S, N]}, Relation
{"class_maps": [N, h, w, C]} (a leading [B] when the support set is batched). It holds no
image: many clients classify against one stored code, each query paying for its own
embedding only.

One implementation serves both paths: `classify` (the episode contract) embeds support and
query in one pass, then calls the same `support_code` and `code_logits` as the cached path.

At inference a metric model can embed its images in `feature_branches` independent branches
(`embed_in_branches`, used by `metric_features` on every path): an opt-in for serving, set
for a trace with `branched_features` (the export's `feature_branches`).
"""

import contextlib
import numbers

import tensorflow as tf

from keras_fewshot.models.episodic import EpisodicClassifier, _check, merge_leading, \
    validate_episode


def validate_images(name, images):
    """Checks a uint8 [M, H, W, C] or [B, M, H, W, C] image tensor (M, H, W > 0, C 1 or 3);
    returns it batched and whether it was."""
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        raise ValueError(f"{name} must be uint8 raw pixels, got {images.dtype.name}")
    if images.shape.rank not in (4, 5):
        raise ValueError(f"{name} must have rank 4 [M, H, W, C] or 5 [B, M, H, W, C], got "
                         f"shape {images.shape}")
    batched = images.shape.rank == 5
    images = images if batched else tf.expand_dims(images, 0)
    shape = tf.shape(images)
    checks = _check((shape[-1] == 1) | (shape[-1] == 3), f"{name} must have 1 or 3 channels")
    checks += _check(shape[1] > 0, f"{name} is empty")
    checks += _check(tf.minimum(shape[2], shape[3]) > 0,
                     f"{name} has images of height or width 0")
    with tf.control_dependencies(checks):
        return tf.identity(images), batched


def check_feature_branches(branches):
    """`branches` as an int, or ValueError unless it is a whole number >= 1."""
    if (isinstance(branches, bool) or not isinstance(branches, numbers.Integral)
            or branches < 1):
        raise ValueError(f"feature_branches must be a whole number >= 1 (1: one batch), got "
                         f"{branches!r}")
    return int(branches)


def embed_in_branches(embed, pixels, branches=1, training=False):
    """`embed(pixels, training=training)` computed as `branches` contiguous chunks of the image
    batch [M, ...], each through `embed` on its own, the results concatenated back in order
    (branches=1: one pass, the default). The chunks split M as evenly as it allows, at run
    time; with fewer images than branches (a request of one image) it is one pass.

    Why: a small request (the 5-way 1-shot one-query request is 6 images) keeps a core
    waiting. Two chunks are two independent branches of the graph, so TensorFlow's inter-op
    scheduler can run them on two cores at once, each op on one thread; that pays when the
    process runs with intra-op threads 1 and inter-op threads 2, and costs a little with the
    default threads, hence opt-in. In inference mode every layer of the backbones computes
    each image on its own (batch norm uses its moving statistics), so the answers are the
    one-pass ones up to the round-off of kernels picked for another batch size. Training is
    refused: batch norm's batch statistics need the whole batch."""
    branches = check_feature_branches(branches)
    if branches == 1:
        return embed(pixels, training=training)
    if training:
        raise ValueError(f"feature_branches={branches} is for inference only (training=False):"
                         " in training, batch norm normalises with the statistics of the whole "
                         "batch, which branches would split")
    count = tf.shape(pixels)[0]

    def branched():
        bounds = [count * i // branches for i in range(branches + 1)]
        return tf.concat([embed(pixels[start:end], training=False)
                          for start, end in zip(bounds[:-1], bounds[1:])], axis=0)

    # Fewer images than branches (a cached query of one image): one pass, so no chunk is
    # empty (oneDNN's convolution fails on a batch of 0) and no image is embedded twice.
    return tf.cond(count >= branches, branched, lambda: embed(pixels, training=False))


class MetricClassifier(EpisodicClassifier):
    """An episodic classifier whose support set reduces to a code that queries are scored
    against. Subclasses implement `features` (preprocessed pixels -> embeddings or maps),
    `support_code` and `code_logits`, and declare `code_ranks` (each code tensor's rank,
    unbatched)."""

    code_ranks = {}
    feature_branches = 1  # `embed_in_branches`; set for a trace with `branched_features`

    def features(self, pixels, training=False):
        """Preprocessed pixels [M, s, s, C] -> features [M, ...] (the backbone's)."""
        return self.embedding(pixels, training=training)

    def metric_features(self, pixels, training=False):
        """`features` in float32, whatever the backbone computes in (bf16 under
        `mixed_bfloat16`): codes, distances and logits are float32, so a stored code is
        float32 and a bf16 backbone serves the same signatures. Embedded in
        `self.feature_branches` branches (`embed_in_branches`)."""
        return tf.cast(embed_in_branches(self.features, pixels, self.feature_branches,
                                         training), tf.float32)

    @contextlib.contextmanager
    def branched_features(self, branches):
        """Within the block, this model embeds its images in `branches` branches
        (`embed_in_branches`; inference only) on every path: the episode, `encode_support`,
        `classify_encoded`. Meant around a trace (export); it sets an attribute of the model,
        so other threads calling the model meanwhile would see it too."""
        branches = check_feature_branches(branches)
        previous = self.feature_branches
        self.feature_branches = branches
        try:
            yield self
        finally:
            self.feature_branches = previous

    def support_code(self, support_features, support_labels, num_classes, training=False):
        """Support features [B, S, ...], labels [B, S], N -> code dict (batched)."""
        raise NotImplementedError

    def code_logits(self, code, query_features, training=False):
        """Code dict (batched), query features [B, Q, ...] -> logits [B, Q, N]."""
        raise NotImplementedError

    def classify(self, support_images, support_labels, query_images, num_classes,
                 training=False):
        support, query = self.embed_episode(self.metric_features, support_images, query_images,
                                            training)
        code = self.support_code(support, support_labels, num_classes, training=training)
        return self.code_logits(code, query, training=training)

    def encode_support(self, inputs):
        """{"support_images", "support_labels"} (the episode contract's support half) ->
        the support code: float32 tensors, batched like the input."""
        if not isinstance(inputs, dict):
            raise TypeError("encode_support takes a dict with keys 'support_images' and "
                            f"'support_labels'; got {type(inputs)}")
        # The support set checked as an episode whose queries are its own images (the query
        # checks then pass exactly when the support images pass theirs).
        episode = validate_episode({**inputs, "query_images": inputs.get("support_images")},
                                   self.fixed_ways, self.max_ways)
        pixels = self.preprocess(merge_leading(episode.support_images))
        features = self.metric_features(pixels)
        features = tf.reshape(features, (tf.shape(episode.support_images)[0], -1,
                                         *features.shape[1:]))
        code = self.support_code(features, episode.support_labels, episode.num_classes)
        return code if episode.batched else {k: v[0] for k, v in code.items()}

    def classify_encoded(self, code, query_images):
        """A support code (from `encode_support`) and uint8 query images [Q, H, W, C] (or
        batched, like the code) -> logits [Q, N] (or [B, Q, N])."""
        query_images, batched = validate_images("query_images", query_images)
        if not isinstance(code, dict) or sorted(code) != sorted(self.code_ranks):
            got = sorted(code) if isinstance(code, dict) else type(code)
            raise ValueError(f"{type(self).__name__}'s support code is a dict with keys "
                             f"{sorted(self.code_ranks)} (from encode_support); got {got}")
        code = {k: tf.convert_to_tensor(v, tf.float32) for k, v in code.items()}
        for name, rank in self.code_ranks.items():
            if code[name].shape.rank != rank + batched:
                raise ValueError(f"{name} must have rank {rank + batched} for "
                                 f"{'batched' if batched else 'unbatched'} query_images, got "
                                 f"shape {code[name].shape}")
        if not batched:
            code = {k: tf.expand_dims(v, 0) for k, v in code.items()}
        checks = []
        for name in self.code_ranks:
            checks += _check(tf.shape(code[name])[0] == tf.shape(query_images)[0],
                             f"{name} and query_images have different numbers of episodes")
        with tf.control_dependencies(checks):
            pixels = self.preprocess(merge_leading(query_images))
        features = self.metric_features(pixels)
        features = tf.reshape(features, (tf.shape(query_images)[0], -1, *features.shape[1:]))
        logits = tf.cast(self.code_logits(code, features), tf.float32)  # as `call`'s
        return logits if batched else logits[0]
