"""Meta Networks (Munkhdalai & Yu 2017, Algorithm 1) on a backbone's features (conv4 by
default).

For one episode, on the backbone features x of its images:
  1. task level: T = S support pairs (x'_t, x'_t+1 mod S), verification loss
     L_emb_t = BCE(sigmoid(w . |u(x'_t) - u(x'_t+1)| + b), same class), u(x) = x Q;
     theta+ = F(grad_Q L_emb_1, ..., grad_Q L_emb_T) (LSTM), and the representation of every
     image is r = u(x; Q, theta+) = x Q + x theta+ (layer augmentation of a linear layer,
     as the authors' code's last key layer: signed keys spread the cosine attention).
  2. example level: the base learner b(x; W) = relu(x W1) W2[:, :N], slow weights only, scores
     each support example; phi+_i = G(grad_W L_task_i) with L_task_i its softmax
     cross-entropy over the N classes; memory M_i = phi+_i under key R_i = r'_i.
  3. queries: phi+_j = softmax_i(cosine(r_j, R_i))^T M; logits = b(x_j; W, phi+_j), both
     layers layer-augmented: relu(x W1) + relu(x W1+), then h W2 + h W2+.
Training is the cross-entropy of the query logits; gradients flow through the meta
information (the loss gradients) into every weight.

Departures from the paper: for CPU budgets one backbone (conv4 by default) is shared by u
and b and has slow weights only (the authors give u and b their own CNNs with fast weights
in every layer); u and b are one and two augmented dense layers on its features. The pairs
are fixed (t, t + 1) rather than sampled, so a model's answer is a function of the episode.
The output layer has `max_ways` slow units, of which an N-way episode uses the first N (the
paper sizes it to its training N). The authors' code stops gradients at the meta
information; here they flow through it, which also trains the verification head.
"""

import keras
import tensorflow as tf

from keras_fewshot.layers import (AugmentedDense, FastWeightGenerator, FastWeightMemoryRead,
                                  SiameseL1Head, TaskFastWeightLSTM,
                                  per_example_kernel_gradients)
from keras_fewshot.models.components import ImageModelMixin, make_backbone
from keras_fewshot.models.episodic import EpisodicClassifier


@keras.saving.register_keras_serializable(package="keras_fewshot")
class MetaNetwork(ImageModelMixin, EpisodicClassifier):
    """Any N up to `max_ways`, any shots; the LSTM F reads the support set in its order."""

    def __init__(self, image_size=28, filters=None, key_units=64, hidden_units=64, max_ways=20,
                 meta_units=20, backbone="conv4", preprocessor="ink", **kwargs):
        super().__init__(**kwargs)
        shape = self.set_preprocessor(image_size, preprocessor, backbone, filters)
        self.key_units = int(key_units)
        self.hidden_units = int(hidden_units)
        self.max_ways = int(max_ways)
        self.meta_units = int(meta_units)
        self.embedding, features = make_backbone(backbone, shape, self.filters)
        # float32 whatever the policy: loss gradients in, fast weights and attention out
        head = {"dtype": "float32"}
        self.key = AugmentedDense(self.key_units, name="key", **head)                  # u
        self.verification = SiameseL1Head(name="verification", **head)
        self.task_meta = TaskFastWeightLSTM(self.meta_units, name="task_meta", **head)  # F
        self.hidden = AugmentedDense(self.hidden_units, "relu", name="hidden", **head)  # b
        self.output_layer = AugmentedDense(self.max_ways, name="output", **head)
        self.hidden_meta = FastWeightGenerator(self.meta_units, name="hidden_meta",    # G
                                               **head)
        self.output_meta = FastWeightGenerator(self.meta_units, name="output_meta", **head)
        self.memory_read = FastWeightMemoryRead(name="memory_read", **head)
        dim = features[-1]
        self.key.build((None, None, dim))
        self.verification.build((None, None, self.key_units))
        self.task_meta.build()
        self.hidden.build((None, None, dim))
        self.output_layer.build((None, None, self.hidden_units))
        self.hidden_meta.build()
        self.output_meta.build()
        self.built = True

    def task_fast_weights(self, support, support_labels):
        """theta+ of the key layer from the verification loss of the T = S pairs (t, t + 1)
        of the support set: [B, S, D] -> [B, D, key_units]."""
        partner = tf.roll(support, -1, axis=1)
        same = tf.cast(tf.equal(support_labels, tf.roll(support_labels, -1, axis=1)),
                       support.dtype)
        with tf.GradientTape() as tape:
            first = self.key.slow_pre_activation(support)
            second = self.key.slow_pre_activation(partner)
            tape.watch([first, second])
            logits = self.verification(self.key.activation(first),
                                       self.key.activation(second))  # [B, S]
            loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(same, logits))
        d_first, d_second = tape.gradient(loss, [first, second])
        pair_gradients = (per_example_kernel_gradients(support, d_first)
                          + per_example_kernel_gradients(partner, d_second))  # [B, T, D, U]
        return self.task_meta(pair_gradients)

    def example_fast_weights(self, support, support_labels, num_classes):
        """phi+_i of both base-learner layers from each support example's loss gradient:
        [B, S, D] -> [B, S, D, hidden_units], [B, S, hidden_units, N]."""
        with tf.GradientTape() as tape:
            pre_hidden = self.hidden.slow_pre_activation(support)
            tape.watch(pre_hidden)
            hidden = self.hidden.activation(pre_hidden)
            logits = self.output_layer.slow_pre_activation(hidden, num_classes)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                support_labels, logits))
        d_hidden, d_logits = tape.gradient(loss, [pre_hidden, logits])
        return (self.hidden_meta(per_example_kernel_gradients(support, d_hidden)),
                self.output_meta(per_example_kernel_gradients(hidden, d_logits)))

    def classify(self, support_images, support_labels, query_images, num_classes,
                 training=False):
        support, query = self.embed_episode(self.embedding, support_images, query_images,
                                            training)
        support, query = tf.cast(support, tf.float32), tf.cast(query, tf.float32)  # as `head`
        return self.fast_weight_logits(support, support_labels, query, num_classes)

    def fast_weight_logits(self, support, support_labels, query, num_classes):
        """Algorithm 1 on backbone features: support [B, S, D], labels [B, S], query [B, Q, D],
        N -> logits [B, Q, N]."""
        theta = self.task_fast_weights(support, support_labels)
        support_keys = self.key(support, theta)
        query_keys = self.key(query, theta)
        hidden_fast, output_fast = self.example_fast_weights(support, support_labels,
                                                              num_classes)
        batch, shots = tf.shape(support)[0], tf.shape(support)[1]
        memory = tf.concat([tf.reshape(hidden_fast, (batch, shots, -1)),
                            tf.reshape(output_fast, (batch, shots, -1))], axis=-1)
        read = self.memory_read(support_keys, memory, query_keys)  # [B, Q, P]
        queries = tf.shape(query)[1]
        dim = support.shape[-1]
        split = dim * self.hidden_units
        query_hidden_fast = tf.reshape(read[..., :split],
                                       (batch, queries, dim, self.hidden_units))
        query_output_fast = tf.reshape(read[..., split:],
                                       (batch, queries, self.hidden_units, num_classes))
        hidden = self.hidden(query, query_hidden_fast)
        return self.output_layer(hidden, query_output_fast, active_units=num_classes)

    def get_config(self):
        return {**super().get_config(), **self.image_parts_config(self.embedding),
                "key_units": self.key_units, "hidden_units": self.hidden_units,
                "max_ways": self.max_ways, "meta_units": self.meta_units}
