"""SavedModel export for TF Serving.

`serving_default` takes one episode of raw pixels and returns probabilities and classes:

    inputs:  support_images uint8 [S, H, W, C], support_labels int32 [S], query_images uint8
             [Q, H, W, C] (any S, Q, H, W; C = 1 or 3)
    outputs: probabilities float32 [Q, N], classes int32 [Q]

For the MAML family this is "adapt and predict": the inner loop on the support set runs
inside the SavedModel (its gradients are part of the graph), then the queries are scored.

A sequence model (training_task "sequences") gets the sequence signature instead:

    inputs:  images uint8 [T, H, W, C], labels int32 [T] (labels[t] is the true label of
             images[t]; step t sees labels before t only, the last label is never read)
    outputs: probabilities float32 [T, N], classes int32 [T] (per step)

The directory is written next to its destination and renamed into place, so an interrupted
export never leaves a directory that looks like a model; `load_serving` checks a directory is
complete before loading its signature.
"""

import os
import pathlib
import re
import shutil
import tempfile

import keras
import tensorflow as tf

SERVING_INPUTS = (
    tf.TensorSpec([None, None, None, None], tf.uint8, name="support_images"),
    tf.TensorSpec([None], tf.int32, name="support_labels"),
    tf.TensorSpec([None, None, None, None], tf.uint8, name="query_images"),
)
SEQUENCE_SERVING_INPUTS = (
    tf.TensorSpec([None, None, None, None], tf.uint8, name="images"),
    tf.TensorSpec([None], tf.int32, name="labels"),
)


def _answers(logits):
    probabilities = tf.nn.softmax(logits, axis=-1)
    return {"probabilities": probabilities,
            "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int32)}


def export_saved_model(model, path, overwrite=False):
    """Writes `model` (an episodic classifier or a sequence model) as a SavedModel at `path`;
    returns the path."""
    path = pathlib.Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")

    def serve(support_images, support_labels, query_images):
        return _answers(model({"support_images": support_images,
                               "support_labels": support_labels,
                               "query_images": query_images}, training=False))

    def serve_sequence(images, labels):
        return _answers(model({"images": images, "labels": labels}, training=False))

    archive = keras.export.ExportArchive()
    archive.track(model)
    if getattr(model, "training_task", None) == "sequences":
        archive.add_endpoint("serving_default", serve_sequence,
                             input_signature=list(SEQUENCE_SERVING_INPUTS))
    else:
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


def _missing_files(path: pathlib.Path):
    """What a SavedModel directory lacks: the graph, the variables' index or a data shard."""
    missing = [name for name in ("saved_model.pb", "variables/variables.index")
               if not (path / name).is_file()]
    shards = list((path / "variables").glob("variables.data-*-of-*"))
    if not shards:
        return missing + ["variables/variables.data-*"]
    total = int(re.fullmatch(r"variables\.data-\d+-of-(\d+)", shards[0].name).group(1))
    return missing + [f"variables/variables.data-{i:05d}-of-{total:05d}" for i in range(total)
                      if not (path / "variables" / f"variables.data-{i:05d}-of-{total:05d}")
                      .is_file()]


def load_serving(path, signature="serving_default"):
    """The `signature` of the SavedModel at `path`, once the directory is complete.

    Raises FileNotFoundError naming what is missing (a directory whose variables are gone,
    say) and ValueError when TensorFlow cannot read what is there; reads only.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"No SavedModel directory at {path}")
    missing = _missing_files(path)
    if missing:
        raise FileNotFoundError(f"{path} is not a complete SavedModel: missing "
                                f"{', '.join(missing)}; export the model again")
    try:
        loaded = tf.saved_model.load(str(path))
    except (tf.errors.OpError, ValueError, OSError) as error:
        raise ValueError(f"{path} is not a readable SavedModel (corrupted?): {error}") from error
    if signature not in loaded.signatures:
        raise ValueError(f"{path} has no signature {signature!r}; it has "
                         f"{sorted(loaded.signatures)}")
    return loaded.signatures[signature]
