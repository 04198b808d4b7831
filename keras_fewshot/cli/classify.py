"""Classifies query images given a support folder (one sub-folder per class).

    keras-fewshot classify --model=protonet_omniglot      # the Omniglot sample in the package
    keras-fewshot classify --model=protonet_omniglot --support=my_support --query=my_queries \
        --plot=classified.png

(`python tools/classify.py ...` in a clone.) Without --support and --query it classifies
the sample shipped in the package: 80 drawings of 20 Omniglot test characters, from one
drawing of each. --query is a folder of images, a folder with one sub-folder per class
(named as the support's: the truth is then known and the accuracy printed), or image files
(comma separated). Prints each query's predicted class and its probability; --plot saves a
picture of the support set and the queries (green right, red wrong, gray truth unknown).
"""

from absl import flags

from keras_fewshot import classify, plots
from keras_fewshot.cli import _flags
from keras_fewshot.data.images import folder_classes

MAX_IMAGE_SIZE = 1024  # pixels; the zoo models see 28 (20 for sequence models)


def _check_support(path):
    """A support folder with at least two classes, else ValidationError saying why."""
    if path is None:
        return True
    try:
        names, _ = folder_classes(path)
    except (ValueError, FileNotFoundError) as error:
        raise flags.ValidationError(str(error)) from error
    if len(names) < 2:
        raise flags.ValidationError(
            f"has one class ({names[0]!r}); classifying needs at least 2 classes (with one, "
            "every query gets it with probability 1)")
    return True


def define_flags(flag_values):
    fv = {"flag_values": flag_values}
    _flags.define_model_flags(flag_values)
    flags.DEFINE_string("support", None, "Folder with one sub-folder of images per class "
                        "(at least 2); default: the packaged sample's support/.", **fv)
    flags.DEFINE_list("query", None, "A folder (of images, or of class sub-folders) or image "
                      "files; default with the packaged support: the sample's query/.", **fv)
    flags.DEFINE_integer("image_size", None, "Resize every image to this many pixels square, "
                         f"1 to {MAX_IMAGE_SIZE} (default: keep the files' size, which must "
                         "then agree).", **fv)
    flags.DEFINE_enum("channels", None, ["1", "3"], "Convert every image to 1 or 3 channels "
                      "(default: as in the files, which must then agree).", **fv)
    flags.DEFINE_string("plot", None, "Also save a picture of the episode (PNG) here.", **fv)
    flags.register_validator("support", _check_support, flag_values=flag_values)
    flags.register_validator(
        "image_size", lambda size: size is None or 1 <= size <= MAX_IMAGE_SIZE,
        message=f"must be 1 to {MAX_IMAGE_SIZE} pixels: every image is resized to it in memory "
                "(the zoo models see 28x28, or 20x20)", flag_values=flag_values)
    flags.register_multi_flags_validator(
        ["support", "query"], lambda values: values["support"] is None or values["query"],
        message="--query is needed with your own --support (only the packaged sample has a "
                "default)", flag_values=flag_values)


def support_and_query(fv):
    """(support folder, query paths) from the flags: the packaged sample's when not given."""
    if fv.support is None:
        return classify.sample_dir() / "support", fv.query or [classify.sample_dir() / "query"]
    return fv.support, fv.query


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    support, query = support_and_query(FLAGS)
    model = _flags.load_model()
    result = classify.classify(model, support, query, FLAGS.image_size,
                               FLAGS.channels and int(FLAGS.channels))
    names = result.class_names
    for i, path in enumerate(result.query_paths):
        predicted = result.predictions[i]
        line = f"{path}: {names[predicted]} ({result.probabilities[i, predicted]:.3f})"
        if result.query_labels is not None:
            truth = result.query_labels[i]
            line += "  right" if truth == predicted else f"  WRONG, is {names[truth]}"
        print(line)
    title = plots.episode_title(result.support.labels, result.query_labels,
                                result.probabilities)
    print(title if result.accuracy is None else f"{title} ({100 * result.accuracy:.1f}%)")
    if FLAGS.plot:
        figure = plots.episode_figure(result.support.images, result.support.labels,
                                      result.query_images, result.probabilities,
                                      result.query_labels, names, title)
        print(f"Picture written to {plots.save_png(figure, FLAGS.plot)}")
