"""SavedModel export for TF Serving.

`serving_default` takes one episode of raw pixels and returns probabilities and classes:

    inputs:  support_images uint8 [S, H, W, C], support_labels int32 [S], query_images uint8
             [Q, H, W, C] (any S, Q, H, W; C = 1 or 3)
    outputs: probabilities float32 [Q, N], classes int32 [Q]

For the MAML family this is "adapt and predict": the inner loop on the support set runs
inside the SavedModel (its gradients are part of the graph), then the queries are scored.

The directory is written next to its destination and renamed into place, so an interrupted
export never leaves a directory that looks like a model.
"""

import os
import pathlib
import shutil
import tempfile

import keras
import tensorflow as tf

SERVING_INPUTS = (
    tf.TensorSpec([None, None, None, None], tf.uint8, name="support_images"),
    tf.TensorSpec([None], tf.int32, name="support_labels"),
    tf.TensorSpec([None, None, None, None], tf.uint8, name="query_images"),
)


def export_saved_model(model, path, overwrite=False):
    """Writes `model` (an episodic classifier) as a SavedModel at `path`; returns the path."""
    path = pathlib.Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")

    def serve(support_images, support_labels, query_images):
        logits = model({"support_images": support_images, "support_labels": support_labels,
                        "query_images": query_images}, training=False)
        probabilities = tf.nn.softmax(logits, axis=-1)
        return {"probabilities": probabilities,
                "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int32)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=list(SERVING_INPUTS))
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        archive.write_out(str(staging / "model"), verbose=False)
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging / "model", path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
