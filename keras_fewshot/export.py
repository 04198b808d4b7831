"""SavedModel (TF Serving) and TFLite (LiteRT) export.

`serving_default` takes one episode of raw pixels and returns probabilities and classes:

    inputs:  support_images uint8 [S, H, W, C], support_labels int32 [S], query_images uint8
             [Q, H, W, C] (any S, Q, H, W; C = 1 or 3)
    outputs: probabilities float32 [Q, N], classes int32 [Q]

For the MAML family this is "adapt and predict": the inner loop on the support set runs
inside the SavedModel (its gradients are part of the graph), then the queries are scored.

The metric models (ProtoNet, Matching, Siamese, Relation: `MetricClassifier`) add the
cached-support pair, for many queries against one stored support set:

    encode_support:   support_images, support_labels -> the support code (float32 tensors,
                      per model: prototypes [N, D]; support_embeddings [S, D] and
                      support_onehot [S, N]; class_maps [N, h, w, C])
    classify_encoded: the support code's tensors (same names) and query_images ->
                      probabilities, classes (those of serving_default, to round-off)

Each model serves its task kind's inputs (`keras_fewshot.tasks`); a sequence model gets the
sequence signature instead:

    inputs:  images uint8 [T, H, W, C], labels int32 [T] (labels[t] is the true label of
             images[t]; step t sees labels before t only, the last label is never read)
    outputs: probabilities float32 [T, N], classes int32 [T] (per step)

The SavedModel's inputs are declared with any rank: every request is checked inside, and an
input of the wrong rank or an empty image fails with InvalidArgumentError naming the input
and its shape (a declared rank is not checked by TensorFlow when a signature is called).

The metric models serve from constants: their exported functions hold the weights' values
as graph constants (read when the SavedModel is written), not reads of the variables, so
TensorFlow folds batch norm into the convolution kernels once, when it loads a function,
instead of on every request, and oneDNN keeps its reordered copy of each constant kernel.
The answers are the same as with the variables (the same operations on the same values); the
variables are saved as well. Models whose weights exceed `CONSTANT_WEIGHTS_LIMIT` bytes
(each signature holds its own copy) and the other families keep reading variables.

A metric model can be exported with `feature_branches=k` (default 1): its signatures embed a
request's images as k independent branches (contiguous chunks of the image batch, each
through the backbone, concatenated back: `keras_fewshot.models.metric.embed_in_branches`),
which TensorFlow's inter-op scheduler can run on k cores at once. It pays only when each op
runs on one thread: serve with intra-op threads 1 and inter-op threads k
(`tf.config.threading`; TF Serving `--tensorflow_intra_op_parallelism=1
--tensorflow_inter_op_parallelism=2`); with the default threads it costs a little. The
answers are the same to round-off. TFLite export has no such option: its interpreter runs
one op at a time.

The directory is written next to its destination and renamed into place, so an interrupted
export never leaves a directory that looks like a model; `load_serving` checks a directory is
complete before loading its signature. `export_tflite` writes the same signatures as one
.tflite file (inputs of rank 4 / 1, any sizes: resize them in the interpreter).
"""

import math
import os
import pathlib
import re
import shutil
import tempfile

import keras
import tensorflow as tf

SUPPORT_INPUTS = ("support_images", "support_labels")
# Largest total size of weights, in bytes, that the exported functions hold as constants.
CONSTANT_WEIGHTS_LIMIT = 16 * 2 ** 20


def _answers(logits):
    probabilities = tf.nn.softmax(logits, axis=-1)
    return {"probabilities": probabilities,
            "classes": tf.argmax(probabilities, axis=-1, output_type=tf.int32)}


def _checked(request, inputs):
    """The request's tensors at their rank and fixed sizes, each checked at run time
    ({name: (dtype, shape, shape doc)}); images must also have a non-zero height and
    width."""
    checked = {}
    for name, tensor in request.items():
        dtype, shape, doc = inputs[name]
        rank = len(shape)
        actual = tf.shape(tensor)
        checks = [tf.debugging.Assert(tf.equal(tf.size(actual), rank), [
            f"{name} must have rank {rank} {doc}; got shape", actual], summarize=8)]
        fixed = [(i, size) for i, size in enumerate(shape) if size is not None]
        if fixed:
            with tf.control_dependencies(checks):
                checks.append(tf.debugging.Assert(
                    tf.reduce_all([tf.equal(actual[i], size) for i, size in fixed]),
                    [f"{name} must have shape {doc}; got shape", actual], summarize=8))
        if dtype == tf.uint8:
            with tf.control_dependencies(checks):
                checks.append(tf.debugging.Assert(
                    tf.reduce_min(actual[1:3]) > 0,
                    [f"{name} has images of height or width 0; got shape", actual],
                    summarize=8))
        with tf.control_dependencies(checks):
            checked[name] = tf.ensure_shape(tensor, shape)
    return checked


def _specs(inputs, ranked):
    """TensorSpecs of {name: (dtype, shape, _)}: of any rank (SavedModel: checked inside) or
    of the given shape (TFLite, whose tensors have a fixed rank and channels)."""
    return {name: tf.TensorSpec(shape if ranked else None, dtype, name=name)
            for name, (dtype, shape, _) in inputs.items()}


def _code_inputs(model):
    """The support code's inputs: each tensor's shape, None where it depends on the support
    set (the sizes that the codes of two different dummy support sets share are the
    model's own, e.g. the embedding size)."""
    from keras_fewshot.models.episodic import dummy_episode
    codes = []
    for ways, shots in ((2, 1), (3, 2)):
        episode = dummy_episode(ways, shots, image_size=getattr(model, "image_size", 28))
        codes.append(model.encode_support({k: episode[k] for k in SUPPORT_INPUTS}))
    inputs = {}
    for name in model.code_ranks:
        shape = [a if a == b else None for a, b in zip(codes[0][name].shape,
                                                       codes[1][name].shape)]
        inputs[name] = (tf.float32, shape, "[" + ", ".join(str(n or "?") for n in shape) + "]")
    return inputs


def uses_constant_weights(model):
    """Whether `model`'s exported functions hold its weights as constants: the metric models
    (a pure forward pass; `encode_support`) whose weights total at most
    `CONSTANT_WEIGHTS_LIMIT` bytes."""
    size = sum(math.prod(v.shape) * tf.as_dtype(v.dtype).size for v in model.weights)
    return hasattr(model, "encode_support") and size <= CONSTANT_WEIGHTS_LIMIT


def _with_constant_weights(model, body):
    """`body` traced with every weight of `model` read as a constant of its current value
    (Keras's StatelessScope maps each variable to a value; the values become the traced
    graph's constants)."""
    values = [(v, v.numpy()) for v in model.weights]

    def frozen(**request):
        with keras.StatelessScope(values):
            return body(**request)
    return frozen


def supports_feature_branches(model):
    """Whether `model` can embed its images in branches (`feature_branches` > 1): the metric
    models (`MetricClassifier`)."""
    from keras_fewshot.models.metric import MetricClassifier
    return isinstance(model, MetricClassifier)


def _feature_branches(model, feature_branches):
    """`feature_branches` checked for `model`: a whole number >= 1, and 1 unless `model` is a
    metric model."""
    from keras_fewshot.models.metric import check_feature_branches
    branches = check_feature_branches(feature_branches)
    if branches > 1 and not supports_feature_branches(model):
        raise ValueError(f"feature_branches={branches}: only the metric models (ProtoNet, "
                         "Matching, Siamese, Relation: MetricClassifier) embed their images in "
                         f"branches; {type(model).__name__} is not one, export it with "
                         "feature_branches=1")
    return branches


def _with_feature_branches(model, branches, body):
    """`body` traced with `model` embedding its images in `branches` branches."""
    def branched(**request):
        with model.branched_features(branches):
            return body(**request)
    return branched


def serving_functions(model, ranked=False, constant_weights=None, feature_branches=1):
    """{signature name: (function of keyword tensors, {name: TensorSpec})} for `model`: its
    task kind's serving_default, and for a metric model the cached-support pair;
    `constant_weights` (None: `uses_constant_weights(model)`) traces them with the weights
    as constants; `feature_branches` (metric models) traces them embedding the images in
    that many branches (see the module's docstring)."""
    inputs = model.task_kind.serving_inputs
    if inputs is None:
        raise ValueError(f"{type(model).__name__} trains on {model.task_kind.name}, which have "
                         "no serving signature")
    branches = _feature_branches(model, feature_branches)
    if constant_weights is None:
        constant_weights = uses_constant_weights(model)

    def endpoint(inputs, body):
        def fn(**request):
            return body(**_checked(request, inputs))
        if branches > 1:
            fn = _with_feature_branches(model, branches, fn)
        if constant_weights:
            fn = _with_constant_weights(model, fn)
        return fn, _specs(inputs, ranked)

    functions = {"serving_default": endpoint(inputs, lambda **request: _answers(
        model(request, training=False)))}
    if hasattr(model, "encode_support"):
        code_inputs = _code_inputs(model)
        functions["encode_support"] = endpoint(
            {k: inputs[k] for k in SUPPORT_INPUTS}, lambda **support: dict(
                model.encode_support(support)))
        functions["classify_encoded"] = endpoint(
            {**code_inputs, "query_images": inputs["query_images"]},
            lambda query_images, **code: _answers(model.classify_encoded(code, query_images)))
    return functions


def _archive(model, functions):
    """The ExportArchive of `model` with `functions` (`serving_functions`') as endpoints."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, specs) in functions.items():
        archive.add_endpoint(name, _positional(fn, list(specs)),
                             input_signature=list(specs.values()))
    return archive


def _positional(fn, names):
    """fn(**{names[i]: args[i]}) as a function of positional arguments (an endpoint's)."""
    def call(*args):
        return fn(**dict(zip(names, args)))
    return call


def _write_atomically(path, overwrite, write):
    """Calls write(staging path) and renames the result to `path`."""
    path = pathlib.Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write(staging / "model")
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(staging / "model", path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def export_saved_model(model, path, overwrite=False, constant_weights=None,
                       feature_branches=1):
    """Writes `model` (an episodic classifier or a sequence model) as a SavedModel at `path`;
    returns the path. `constant_weights`: whether the functions hold the weights as
    constants (None: `uses_constant_weights(model)`; False: they read the variables).
    `feature_branches` (metric models only; default 1): embed a request's images in that many
    independent branches, for serving with intra-op threads 1 and inter-op threads 2 (see
    the module's docstring). ValueError for another model with more than 1, or below 1."""
    functions = serving_functions(model, constant_weights=constant_weights,
                                  feature_branches=feature_branches)  # refused before writing
    return _write_atomically(path, overwrite, lambda staging: _archive(
        model, functions).write_out(str(staging), verbose=False))


def computes_in_float32(model):
    """Whether `model` computes in float32, as TFLite export needs: TFLite's builtin kernels
    take no bf16."""
    return model.compute_dtype == "float32"


def export_tflite(model, path, overwrite=False):
    """Writes `model` as a TFLite (LiteRT) flatbuffer at `path` with the SavedModel's
    signatures (TFLite builtin ops only); returns the path. The model must compute in
    float32 (`computes_in_float32`)."""
    if not computes_in_float32(model):
        raise ValueError(f"TFLite export needs a float32 model; this one computes in "
                         f"{model.compute_dtype} (built under dtype policy "
                         f"{model.dtype_policy.name}): TFLite's builtin kernels take no bf16. "
                         "Build it with the float32 policy (--dtype_policy=float32).")

    functions = serving_functions(model, ranked=True)

    def write(staging):
        saved = staging.with_name("saved_model")
        _archive(model, functions).write_out(str(saved), verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(saved), signature_keys=list(functions))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        staging.write_bytes(converter.convert())
    return _write_atomically(path, overwrite, write)


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
