"""Classifies query images given a support folder (one sub-folder per class).

    python tools/classify.py --model=protonet_omniglot \
        --support=keras_fewshot/data/omniglot_sample/support \
        --query=keras_fewshot/data/omniglot_sample/query --plot=classified.png

--query is a folder of images, a folder with one sub-folder per class (named as the
support's: the truth is then known and the accuracy printed), or image files (comma
separated). Prints each query's predicted class and its probability; --plot saves a
picture of the support set and the queries (green right, red wrong, gray truth unknown).
"""

from absl import app, flags

import _model_flags
from keras_fewshot import classify, plots

FLAGS = flags.FLAGS
flags.DEFINE_string("support", None, "Folder with one sub-folder of images per class.",
                    required=True)
flags.DEFINE_list("query", None, "A folder (of images, or of class sub-folders) or image "
                  "files.", required=True)
flags.DEFINE_integer("image_size", None, "Resize every image to this many pixels square "
                     "(default: keep the files' size, which must then agree).")
flags.DEFINE_enum("channels", None, ["1", "3"], "Convert every image to 1 or 3 channels "
                  "(default: as in the files, which must then agree).")
flags.DEFINE_string("plot", None, "Also save a picture of the episode (PNG) here.")


def main(argv):
    del argv
    model = _model_flags.load_model()
    result = classify.classify(model, FLAGS.support, FLAGS.query, FLAGS.image_size,
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


if __name__ == "__main__":
    app.run(main)
