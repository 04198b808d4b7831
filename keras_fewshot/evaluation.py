"""Few-shot accuracy over many test episodes (or sequences), with 95% confidence intervals.

Protocols:
  "vinyals": N-way K-shot episodes over the Vinyals test classes (character x rotation),
             settings 5w1s, 5w5s, 20w1s, 20w5s, 15 queries per class.
  "lake":    20-way 1-shot within one alphabet of the 20 evaluation alphabets
             (Lake et al. 2015), 15 queries per class, support and queries by any drawers.
  "lake_runs": Lake et al.'s (2015) published one-shot runs: 20 distinct characters of one
             evaluation alphabet (every one of the 20 has at least 20 characters; one with
             fewer would never be picked) and two distinct drawers, one image per character
             by the first as support, one by the second as query (20-way 1-shot, 1 query per
             class). Needs the local archives: TFDS's omniglot has no drawers.
  "mini_imagenet", "cifar_fs", "fc100", "cub": the natural-image benchmarks' own
             protocols (`data.benchmarks.PROTOCOLS`): 5-way 1- and 5-shot on the test
             classes of their split, 15 queries per class, 600 or 1000 episodes.
  "sinusoid": regression tasks of the test stream (Finn et al. 2017, sec. 5.1), K = 5
             support points, 100 query points; mean-squared error after 1, 5 and 10 inner
             steps (models that adapt, such as MAMLRegressor).
Each model is measured as its task kind says (`keras_fewshot.tasks`): sequence models on
label sequences of the same test classes instead: accuracy by instance, i.e. how often the
k-th presentation of a class in a sequence is labelled right (Santoro et al. 2016, table 1),
for k = 1..instances.
Any other labelled images (`evaluate_data`; a folder or TFDS dataset by `evaluation_data`):
the Vinyals settings that the model can do and the data can fill, or the settings asked for
(sequence models: accuracy by instance on their classes).
Episodic classifiers may also be measured with test-time distortion averaging
(`test_distortions`, Koch et al. 2015, sec. 4.1), reported beside the plain number.
"""

from keras_fewshot.data import benchmarks, load_dataset, load_split
from keras_fewshot.data.datasets import (NATURAL, OMNIGLOT, benchmark_split,
                                         evaluation_subset, parse_dataset)
from keras_fewshot.data.labelled import LabelledImages
from keras_fewshot.models import MODELS
from keras_fewshot.tasks import TASK_KINDS
from keras_fewshot.tasks.episodes import averaged_name, own_settings

OMNIGLOT_PROTOCOLS = {
    "vinyals": {"split": "vinyals", "subset": "test", "within_group": False,
                "settings": ((5, 1), (5, 5), (20, 1), (20, 5))},
    "lake": {"split": "lake", "subset": "evaluation", "within_group": True,
             "settings": ((20, 1),)},
    "lake_runs": {"split": "lake", "subset": "evaluation", "within_group": True,
                  "drawers": True, "settings": ((20, 1),), "queries": 1},
}
PROTOCOLS = {
    **OMNIGLOT_PROTOCOLS,
    **{name: spec for kind in TASK_KINDS for name, spec in kind.protocols.items()},
    **{name: {"split": spec["split"], "subset": "test", "within_group": False,
              "settings": spec["settings"], "queries": spec["queries"],
              "episodes": spec["episodes"]}
       for name, spec in benchmarks.PROTOCOLS.items()},
}
DEFAULT_EPISODES = 1000  # test episodes per setting where the protocol names no number


def protocol_episodes(protocol):
    """How many test episodes per setting `protocol` runs (None: `DEFAULT_EPISODES`)."""
    return PROTOCOLS.get(protocol, {}).get("episodes", DEFAULT_EPISODES)
PAPER_INSTANCES = (1, 2, 3, 4, 5, 10)  # the presentations Santoro et al.'s table reports


def default_settings(model, protocol):
    """The protocol's settings the model can do: a fixed-N model only its own N, a model
    with a largest N (`max_ways`) those up to it."""
    return own_settings(model, PROTOCOLS[protocol]["settings"], protocol)


def evaluate(model, protocol="vinyals", episodes=1000, queries=None, seed=0, data_source=None,
             image_size=28, settings=None, episodes_per_batch=10, verbose=1, test_distortions=0):
    """Rows {"protocol", "ways", "shots", "queries", "episodes", "accuracy", "ci95"}.

    Accuracy and ci95 are fractions. Episodes are a function of `seed` alone, so the same
    call gives the same episodes on any machine. Settings default to those of the protocol
    that the model can do; queries to the protocol's (15 per class; lake_runs: 1).
    "lake_runs" reads the local archives (`data_source`, else $KERAS_FEWSHOT_OMNIGLOT_DIR;
    TFDS: ValueError before loading). A regression model gives
    `tasks.regression.evaluate_sinusoid`'s rows ("sinusoid" protocol; settings are (K,)
    tuples, `episodes` counts tasks); a sequence model gives
    `tasks.sequences.evaluate_sequences`' rows on the protocol's classes (`episodes` counts
    sequences). test_distortions: as `evaluate_data`'s.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}; expected one of {sorted(PROTOCOLS)}")
    queries = queries or PROTOCOLS[protocol].get("queries", 15)
    if model.task_kind.dataset:  # generated tasks: no images to load
        data, name, within_group = None, protocol, False
    else:
        data, name, within_group, protocol = evaluation_data(
            OMNIGLOT, protocol, source=data_source, image_size=image_size)
    return evaluate_data(model, data, name, settings, episodes, queries, seed, within_group,
                         episodes_per_batch, verbose, protocol, test_distortions)


def takes_colour(model):
    """Whether `model`'s preprocessor reads colour (RGB) images rather than gray ones."""
    return getattr(getattr(model, "preprocess", None), "channels", 1) == 3


def evaluation_data(dataset=OMNIGLOT, protocol="vinyals", split=None, subset=None, source=None,
                    image_size=28, channels=None, keep_channels=False):
    """(data, name, within_group, protocol) to test a model on: an Omniglot protocol's
    classes (and the protocol, whose settings are the default; `subset` measures the same
    episodes on another subset of the protocol's split, e.g. the training classes, named
    "<protocol> <subset>"); or the `subset` of another
    dataset's class `split` (default: every class; subset default: its "test" classes, or
    all), protocol None. A natural-image benchmark is measured by its own protocol (its
    split, "test" classes unless `subset` says otherwise). `keep_channels`: folder and TFDS
    images keep their colour (for a model that `takes_colour`), else they become gray."""
    kind = parse_dataset(dataset)[0]
    if kind in NATURAL:
        split, subset = benchmark_split(kind, split), subset or PROTOCOLS[kind]["subset"]
        data = load_dataset(dataset, split, subset, source, image_size, channels)
        return data, f"{dataset} {split}/{subset}", False, kind
    if kind == OMNIGLOT:
        if protocol not in OMNIGLOT_PROTOCOLS:
            raise ValueError(f"Unknown Omniglot protocol {protocol!r}; expected one of "
                             f"{sorted(OMNIGLOT_PROTOCOLS)}")
        spec = PROTOCOLS[protocol]
        subset = subset or spec["subset"]
        data = load_split(spec["split"], subset, source=source, image_size=image_size,
                          drawers=spec.get("drawers", False))
        name = protocol if subset == spec["subset"] else f"{protocol} {subset}"
        return data, name, spec["within_group"], protocol
    split = split or "all"
    subset = subset or evaluation_subset(split)
    data = load_dataset(dataset, split, subset, source, image_size, channels,
                        keep_channels=keep_channels)
    return data, f"{dataset} {split}/{subset}", False, None


def evaluate_data(model, data: LabelledImages, name, settings=None, episodes=1000, queries=15,
                  seed=0, within_group=False, episodes_per_batch=10, verbose=1, protocol=None,
                  test_distortions=0):
    """Rows as `evaluate`'s ("protocol": `name`) on episodes of any labelled images (None:
    a generated protocol's tasks), as the model's task kind measures it.

    settings: (ways, shots) pairs; every one must fit the data (else ValueError naming the
    problem). None: the settings of `protocol` that the model can do; without a protocol,
    the Vinyals settings that the model can do and the data can fill (at least one must).
    A sequence model gives `tasks.sequences.evaluate_sequences`' rows instead (`episodes`
    counts sequences).
    test_distortions: N > 0 (episodic classifiers only) classifies each episode N + 1 times,
    as is and with every image under its own random Koch et al. (2015, sec. 4.1) affine
    distortion drawn from (seed, episode, view), and takes each query's class from its mean
    softmax (`tasks.episodes.Episodes.evaluate`); rows then say "test_distortions": N. Not
    transductive: each view is classified as the plain episode is, in inference mode from
    its support set, and the averaging is per query, so it adds no dependence between
    queries. Report it beside the plain number.
    """
    check_test_distortions(model, test_distortions)
    averaged = {"test_distortions": test_distortions} if test_distortions else {}
    return model.task_kind.evaluate(model, data, name, protocol,
                                    PROTOCOLS[protocol or "vinyals"], settings, episodes,
                                    queries, seed, within_group, episodes_per_batch, verbose,
                                    **averaged)


def check_test_distortions(model, test_distortions):
    """ValueError unless `test_distortions` is 0, or > 0 for an episodic classifier."""
    if test_distortions < 0:
        raise ValueError(f"test_distortions must be 0 or more (distorted views averaged per "
                         f"episode), got {test_distortions}")
    if test_distortions and not model.task_kind.distortion_averaging:
        raise ValueError(f"test_distortions={test_distortions}: test-time distortions apply "
                         f"to episodic classifiers; {type(model).__name__} is measured on "
                         f"{model.task_kind.name}")


def _ordinal(k):
    """The English ordinal of k: 1st, 2nd, 3rd, 4th, ..., 11th, ..., 21st."""
    suffixes = {1: "st", 2: "nd", 3: "rd"}
    return str(k) + ("th" if 10 <= k % 100 < 20 else suffixes.get(k % 10, "th"))


def sequence_markdown_table(rows, instances=PAPER_INSTANCES):
    """Accuracy by instance as Markdown: one line per protocol and class count, a column per
    reported presentation (percent ± 95% CI)."""
    keys = sorted({(r["protocol"], r["classes"], r["sequences"]) for r in rows},
                  key=lambda key: (key[0], key[1]))
    shown = [k for k in instances if any(r["instance"] == k for r in rows)]
    lines = ["| protocol | classes | sequences | " + " | ".join(map(_ordinal, shown)) + " |",
             "|---|---|---|" + "---|" * len(shown)]
    for protocol, classes, count in keys:
        cells = {r["instance"]: f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f}"
                 for r in rows if (r["protocol"], r["classes"], r["sequences"])
                 == (protocol, classes, count)}
        lines.append(f"| {protocol} | {classes} | {count} | "
                     + " | ".join(cells.get(k, "") for k in shown) + " |")
    return "\n".join(lines)


def markdown_table(rows):
    """The accuracy (or, for regression rows, mean-squared error) table as Markdown;
    sequence rows give accuracy by instance (`sequence_markdown_table`). Rows of averaged
    test distortions are named so: "lake_runs, 8 test distortions averaged"."""
    if rows and "instance" in rows[0]:
        return sequence_markdown_table(rows)
    if rows and "mse" in rows[0]:
        lines = ["| protocol | K | inner steps | tasks | MSE | 95% CI |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['protocol']} | {r['shots']} | {r['inner_steps']} | {r['tasks']} "
                  f"| {r['mse']:.3f} | ± {r['ci95']:.3f} |" for r in rows]
        return "\n".join(lines)
    lines = ["| protocol | setting | episodes | accuracy (%) | 95% CI |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {averaged_name(r['protocol'], r.get('test_distortions', 0))} "
                     f"| {r['ways']}-way {r['shots']}-shot | {r['episodes']} "
                     f"| {100 * r['accuracy']:.2f} | ± {100 * r['ci95']:.2f} |")
    return "\n".join(lines)


def config_protocol(config) -> str:
    """The protocol a model trained by `config` is measured by, by default: its generated
    tasks' own (sinusoid), else its Omniglot split, else vinyals."""
    if config.dataset in MODELS[config.model].task_kind.protocols:  # generated tasks' own
        return config.dataset
    if config.dataset == OMNIGLOT:
        return config.split
    return "vinyals"  # the settings a model trained on other data is measured in by default
