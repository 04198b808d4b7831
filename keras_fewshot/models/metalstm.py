"""The LSTM meta-learner's Omniglot model (Ravi & Larochelle 2017): MAMLClassifier with the
"metalstm" algorithm (keras_fewshot.meta.MetaLSTM) and the paper's settings as defaults."""

import keras

from keras_fewshot.models.maml import MAMLClassifier


@keras.saving.register_keras_serializable(package="keras_fewshot")
class MetaLSTMClassifier(MAMLClassifier):
    """The conv4 learner with 32 filters (the paper's; `backbone` and `preprocessor` as
    MAMLClassifier's), its initial parameters meta-learned, adapted to each episode's support
    set by T = 5 updates of the LSTM meta-learner; the
    LSTM's learning rate starts at 0.011 (input-gate bias -4.5, inside the paper's (-5, -4));
    first order: L_t and grad_t are constants to the meta-gradient, as in the paper. Exactly
    `ways` classes. Batch norm uses batch statistics everywhere (see keras_fewshot.meta.maml).
    """

    def __init__(self, ways=5, algorithm="metalstm", inner_learning_rate=0.011,
                 train_inner_steps=5, test_inner_steps=5, first_order=True, image_size=28,
                 filters=None, backbone="conv4", preprocessor="ink", **kwargs):
        if algorithm != "metalstm":
            raise ValueError(f"MetaLSTMClassifier's algorithm is 'metalstm', got {algorithm!r}; "
                             "MAMLClassifier (--model=maml) takes the others")
        super().__init__(ways=ways, algorithm=algorithm, inner_learning_rate=inner_learning_rate,
                         train_inner_steps=train_inner_steps, test_inner_steps=test_inner_steps,
                         first_order=first_order, image_size=image_size,
                         filters=32 if filters is None and backbone == "conv4" else filters,
                         backbone=backbone, preprocessor=preprocessor, **kwargs)
