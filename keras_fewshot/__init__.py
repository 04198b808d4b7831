"""keras-fewshot: few-shot and meta-learning models in Keras 3, trained, measured, servable.

    import keras_fewshot
    keras_fewshot.list_models()                  # {name: one-line description}
    model = keras_fewshot.load("protonet_omniglot")   # sha256-verified, offline
    model = keras_fewshot.load("runs/my_protonet")    # or a directory of your own
    logits = model({"support_images": ..., "support_labels": ..., "query_images": ...})

The zoo ships with the package (keras_fewshot.zoo: where it lives, how it is verified,
$KERAS_FEWSHOT_ZOO_DIR); the tools are the `keras-fewshot` command (keras_fewshot.cli).
"""

from keras_fewshot.zoo import list_models, load

__version__ = "0.1.0"
__all__ = ["load", "list_models", "__version__"]
