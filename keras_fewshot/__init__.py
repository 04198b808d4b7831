"""keras-fewshot: few-shot and meta-learning models in Keras 3, trained, measured, servable.

    import keras_fewshot
    keras_fewshot.list_models()                  # {name: one-line description}
    model = keras_fewshot.load("protonet_omniglot")
    logits = model({"support_images": ..., "support_labels": ..., "query_images": ...})
"""

from keras_fewshot.zoo import list_models, load

__version__ = "0.1.0"
__all__ = ["load", "list_models", "__version__"]
