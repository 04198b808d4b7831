"""The zoo registry: the one place that knows which trained models exist and where they live.

Each entry names its folder in `zoo/` (config.json, model.weights.h5, README.md model card),
the sha256 of its weights, and the commands that trained and evaluated it. `load` refuses
weights whose hash does not match.
"""

import dataclasses
import hashlib
import os
import pathlib

from keras_fewshot.training import WEIGHTS_FILE, model_from_dir

ZOO_DIR_ENV = "KERAS_FEWSHOT_ZOO_DIR"


def zoo_dir() -> pathlib.Path:
    """$KERAS_FEWSHOT_ZOO_DIR, else the `zoo/` folder beside the package source."""
    return pathlib.Path(os.environ.get(ZOO_DIR_ENV)
                        or pathlib.Path(__file__).resolve().parent.parent / "zoo")


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    sha256: str
    protocol: str
    train_command: str

    @property
    def evaluate_command(self) -> str:
        """Re-makes the card's table (1000 episodes, or sinusoid tasks, per setting of the
        entry's protocol; sinusoid also re-draws the card's plot)."""
        data = ("--plot=zoo/{}/adaptation.png".format(self.name) if self.protocol == "sinusoid"
                else "--data_dir=../shared/data/omniglot")
        return (f"python tools/evaluate.py --model={self.name} {data} "
                f"--protocol={self.protocol} --episodes=1000 "
                f"--output_json=zoo/{self.name}/eval_{self.protocol}.json")

    @property
    def directory(self) -> pathlib.Path:
        return zoo_dir() / self.name

    @property
    def weights_path(self) -> pathlib.Path:
        return self.directory / WEIGHTS_FILE

    @property
    def card_path(self) -> pathlib.Path:
        return self.directory / "README.md"


REGISTRY = {entry.name: entry for entry in [
    ZooEntry(
        name="protonet_omniglot",
        description="Prototypical Network, conv4, Omniglot Vinyals split; any N-way K-shot.",
        sha256="84da0a6c13fb44a734af5ee0af6d368bb7d9bcff89e6298acaaf4bd1f843cfb2",
        protocol="vinyals",
        train_command=(
            "python tools/train.py --model_dir=runs/protonet_omniglot "
            "--data_dir=../shared/data/omniglot --model=protonet --split=vinyals "
            "--subset=trainval --ways=60 --shots=5 --queries=5 --episodes=10000 "
            "--episodes_per_epoch=500 --learning_rate=0.001 --lr_decay_every=2000 "
            "--lr_decay_rate=0.5 --seed=0 && "
            "python tools/train.py --model_dir=runs/protonet_omniglot_1shot "
            "--init_from=runs/protonet_omniglot --data_dir=../shared/data/omniglot "
            "--model=protonet --split=vinyals --subset=trainval --ways=60 --shots=1 "
            "--queries=5 --episodes=2000 --episodes_per_epoch=500 --learning_rate=0.0001 "
            "--lr_decay_every=1000 --lr_decay_rate=0.5 --seed=1"),
    ),
    ZooEntry(
        name="matching_omniglot",
        description="Matching Network (cosine attention, no FCE), conv4, Omniglot Vinyals "
                    "split; any N-way K-shot.",
        sha256="242f6e04a75fad125dfa9151629516eebf7d3d8dc6852b8544511cf564be2bfb",
        protocol="vinyals",
        train_command=(
            "python tools/train.py --model_dir=runs/matching_omniglot "
            "--data_dir=../shared/data/omniglot --model=matching --model_config='{\"scale\": 30}' "
            "--embedding_from=zoo/protonet_omniglot --split=vinyals --subset=trainval "
            "--ways=60 --shots=1 --queries=5 --episodes=500 --episodes_per_epoch=250 "
            "--learning_rate=1e-4 --lr_decay_every=500 --lr_decay_rate=0.5 --seed=0"),
    ),
    ZooEntry(
        name="protonet_omniglot_lake",
        description="Prototypical Network, conv4, trained on Omniglot's 30 background "
                    "alphabets only; Lake's within-alphabet 20-way 1-shot protocol.",
        sha256="ae3c6d9fcfaa0fd538d90b78792aa8846ff73679931517fc2762fc76977f4667",
        protocol="lake",
        train_command=(
            "python tools/train.py --model_dir=runs/protonet_omniglot_lake "
            "--data_dir=../shared/data/omniglot --model=protonet --split=lake "
            "--subset=background --rotations --within_alphabet --ways=60 --shots=5 "
            "--queries=5 --episodes=3000 --episodes_per_epoch=250 --learning_rate=0.001 "
            "--lr_decay_every=1250 --lr_decay_rate=0.5 --seed=0"),
    ),
    ZooEntry(
        name="siamese_omniglot",
        description="Siamese network (L1 distance head trained on same/different pairs), "
                    "conv4 twin from protonet_omniglot, Omniglot Vinyals split; pair scorer "
                    "and any N-way K-shot.",
        sha256="f79904a350395be70d981439c9bad04b4084cf94291b0c8d01c802a45ca82ac6",
        protocol="vinyals",
        train_command=(
            "python tools/train.py --model_dir=runs/siamese_omniglot "
            "--data_dir=../shared/data/omniglot --model=siamese "
            "--model_config='{\"head_init\": \"distance\"}' "
            "--embedding_from=zoo/protonet_omniglot --freeze_embedding --within_alphabet "
            "--split=vinyals --subset=trainval --pairs=128 --episodes=500 "
            "--episodes_per_epoch=250 --learning_rate=0.01 --lr_decay_every=250 "
            "--lr_decay_rate=0.5 --seed=0"),
    ),
    ZooEntry(
        name="siamese_omniglot_lake",
        description="Siamese network (L1 distance head trained on same/different pairs), "
                    "conv4 twin from protonet_omniglot_lake, Omniglot background alphabets "
                    "only; Lake's within-alphabet 20-way 1-shot protocol.",
        sha256="bef1422d46bbb50a000b8a226f097ff9d3312d7d3d6ec8b38d8aa57b2d428cbd",
        protocol="lake",
        train_command=(
            "python tools/train.py --model_dir=runs/siamese_omniglot_lake "
            "--data_dir=../shared/data/omniglot --model=siamese "
            "--model_config='{\"head_init\": \"distance\"}' "
            "--embedding_from=zoo/protonet_omniglot_lake --freeze_embedding --within_alphabet "
            "--split=lake --subset=background --rotations --pairs=128 --episodes=500 "
            "--episodes_per_epoch=250 --learning_rate=0.01 --lr_decay_every=250 "
            "--lr_decay_rate=0.5 --seed=0"),
    ),
    ZooEntry(
        name="relation_omniglot",
        description="Relation Network, conv4 feature maps + relation CNN, Omniglot Vinyals "
                    "split; trained on 1-shot episodes (K > 1 is out of its range).",
        sha256="a88b7a1d8eebb85ccc9fccf660671260179d90d0e9c1dbfd59ff5ca8f972e0b9",
        protocol="vinyals",
        train_command=(
            "python tools/train.py --model_dir=runs/relation_omniglot "
            "--data_dir=../shared/data/omniglot --model=relation "
            "--embedding_from=zoo/protonet_omniglot --split=vinyals --subset=trainval "
            "--ways=20 --shots=1 --queries=10 --episodes=1500 --episodes_per_epoch=250 "
            "--learning_rate=0.001 --lr_decay_every=1000 --lr_decay_rate=0.5 --seed=0"),
    ),
    ZooEntry(
        name="relation_omniglot_5shot",
        description="Relation Network of relation_omniglot fine-tuned on 5-shot episodes "
                    "(summed class maps), Omniglot Vinyals split; for K = 5.",
        sha256="7b4433ca5bdd736b69e717a802520214c690933f5705f17c41fac6b08b512981",
        protocol="vinyals",
        train_command=(
            "python tools/train.py --model_dir=runs/relation_omniglot_5shot "
            "--data_dir=../shared/data/omniglot --model=relation "
            "--init_from=zoo/relation_omniglot --split=vinyals --subset=trainval "
            "--ways=20 --shots=5 --queries=10 --episodes=500 --episodes_per_epoch=250 "
            "--learning_rate=5e-4 --lr_decay_every=500 --lr_decay_rate=0.5 --seed=0"),
    ),
    ZooEntry(
        name="maml_omniglot",
        description="MAML (second order, 1 inner step, alpha 0.4), conv4, Omniglot Vinyals "
                    "split, 5-way; trained on 1-shot meta-batches of 32 (2,000 meta-steps, "
                    "a partial budget).",
        sha256="8a09fcf9abdbd160b715b2d9472581c89e381a05866257590d284ebc5815967e",
        protocol="vinyals",
        train_command=(
            "python tools/train.py --model_dir=runs/maml_omniglot "
            "--data_dir=../shared/data/omniglot --model=maml "
            "--model_config='{\"ways\": 5, \"algorithm\": \"maml\"}' --split=vinyals "
            "--subset=trainval --ways=5 --shots=1 --queries=5 --episodes_per_step=32 "
            "--episodes=64000 --episodes_per_epoch=1600 --learning_rate=0.001 "
            "--lr_decay_every=32000 --lr_decay_rate=0.5 --seed=0"),
    ),
    ZooEntry(
        name="metanet_omniglot",
        description="Meta Networks (fast weights from loss gradients, task- and example-level), "
                    "conv4 from the ProtoNet's embedding, Omniglot Vinyals split; any N up to "
                    "20, any K; trained on 20-way 1-shot episodes.",
        sha256="1a77c980d3b0fdbfc8290a2af3cc4b6c19f980bbd6b56cf13638d832ee46d3b7",
        protocol="vinyals",
        train_command=(
            "python tools/train.py --model_dir=runs/metanet_omniglot "
            "--data_dir=../shared/data/omniglot --model=metanet "
            "--model_config='{\"max_ways\": 20}' --embedding_from=zoo/protonet_omniglot "
            "--split=vinyals --subset=trainval --ways=20 --shots=1 --queries=5 "
            "--episodes=2000 --episodes_per_epoch=500 --learning_rate=0.001 "
            "--lr_decay_every=2000 --lr_decay_rate=0.5 --seed=0"),
    ),
    ZooEntry(
        name="maml_sinusoid",
        description="MAML (second order, 1 inner step) around an MLP 40-40: sinusoid "
                    "regression from K = 5 points.",
        sha256="04ff012469853fa572aaf3fcb269d5091b052226298af9e2fd7573d74bed2901",
        protocol="sinusoid",
        train_command=(
            "python tools/train.py --model_dir=runs/maml_sinusoid --model=maml_regressor "
            "--dataset=sinusoid --shots=5 --queries=10 --episodes_per_step=25 "
            "--episodes=1000000 --episodes_per_epoch=25000 --learning_rate=0.001 "
            "--lr_decay_every=1000000 --lr_decay_rate=1.0 --inner_learning_rate=0.01 "
            "--inner_steps=1 --test_inner_steps=10 --seed=0"),
    ),
    ZooEntry(
        name="pretrained_sinusoid",
        description="MLP 40-40 pretrained on mixed sinusoid tasks (MAML's baseline), "
                    "fine-tuned at test by the same inner steps.",
        sha256="ecabb8df6cec540a9ec3af1c7c3bccb902aa07ae1c340fe6a31a8ede377d077a",
        protocol="sinusoid",
        train_command=(
            "python tools/train.py --model_dir=runs/pretrained_sinusoid "
            "--model=maml_regressor --dataset=sinusoid --shots=5 --queries=10 "
            "--episodes_per_step=25 --episodes=250000 --episodes_per_epoch=25000 "
            "--learning_rate=0.001 --lr_decay_every=1000000 --lr_decay_rate=1.0 "
            "--inner_learning_rate=0.01 --inner_steps=0 --test_inner_steps=10 --seed=0"),
    ),
    ZooEntry(
        name="sequence_lstm_omniglot",
        description="LSTM baseline of the memory-augmented network (Santoro et al. 2016): "
                    "label sequences of 5 Omniglot classes x 10 instances, 20x20, one-step"
                    " label offset.",
        sha256="bd34ce33f7a89f2f0a4a07557c717ab333383e870dffc73fc131fbad50f5a4fd",
        protocol="vinyals",
        train_command=(
            "python tools/train.py --model_dir=runs/sequence_lstm_omniglot "
            "--data_dir=../shared/data/omniglot --model=sequence_lstm --split=vinyals "
            "--subset=trainval --ways=5 --instances=10 --episodes_per_step=16 --distort "
            "--episodes=80000 --episodes_per_epoch=1600 --learning_rate=0.001 "
            "--lr_decay_every=40000 --lr_decay_rate=0.5 --seed=0"),
    ),
    ZooEntry(
        name="fomaml_omniglot",
        description="First-order MAML (1 inner step, alpha 0.4), conv4, Omniglot Vinyals "
                    "split, 5-way; 900 meta-steps of 32 1-shot tasks (a partial budget).",
        sha256="1dc7eafa428232b90b87911b92ba8c2d4572d87d13b665595b570a7531f81532",
        protocol="vinyals",
        train_command=(
            "python tools/train.py --model_dir=runs/fomaml_omniglot "
            "--data_dir=../shared/data/omniglot --model=maml --model_config='{\"ways\": 5, "
            "\"algorithm\": \"maml\"}' --first_order --split=vinyals --subset=trainval "
            "--ways=5 --shots=1 --queries=5 --episodes_per_step=32 --episodes=28800 "
            "--episodes_per_epoch=1600 --learning_rate=0.001 --lr_decay_every=32000 "
            "--lr_decay_rate=0.5 --seed=0"),
    ),
    ZooEntry(
        name="mann_omniglot",
        description="Memory-augmented neural network (Santoro et al. 2016) with the NTM's "
                    "key strength on its reads: LSTM controller, 128x40 LRUA memory, 4 "
                    "heads; label sequences of 5 Omniglot classes x 10 instances, 20x20 (a"
                    " partial budget).",
        sha256="e7d21372740ba76d6147b234018602e79cec2ac3c535c9bb5e28fae372032a21",
        protocol="vinyals",
        train_command=(
            "python tools/train.py --model_dir=runs/mann_omniglot "
            "--data_dir=../shared/data/omniglot --model=mann "
            "--model_config='{\"key_strength\": true}' --split=vinyals --subset=trainval "
            "--ways=5 --instances=10 --episodes_per_step=16 --distort --episodes=299200 "
            "--episodes_per_epoch=1600 --learning_rate=0.001 --lr_decay_every=400000 "
            "--lr_decay_rate=0.5 --seed=0"),
    ),
    ZooEntry(
        name="metasgd_omniglot",
        description="Meta-SGD (learned per-parameter inner rates, second order), conv4, "
                    "Omniglot Vinyals split, 5-way; 225 meta-steps of 32 1-shot tasks (a "
                    "small budget).",
        sha256="b8707d6f679985f93df3ff75430d153cbfa2e4268098e216e751ca38b6f0c197",
        protocol="vinyals",
        train_command=(
            "python tools/train.py --model_dir=runs/metasgd_omniglot "
            "--data_dir=../shared/data/omniglot --model=maml --model_config='{\"ways\": 5, "
            "\"algorithm\": \"metasgd\"}' --split=vinyals --subset=trainval --ways=5 --shots=1"
            " --queries=5 --episodes_per_step=32 --episodes=7200 --episodes_per_epoch=800 "
            "--learning_rate=0.001 --lr_decay_every=16000 --lr_decay_rate=0.5 --seed=0"),
    ),
    ZooEntry(
        name="metalstm_omniglot",
        description="LSTM meta-learner (Ravi & Larochelle 2017), conv4 with 32 filters, T "
                    "= 5 updates, Omniglot Vinyals split, 5-way; 250 steps of 16 1-shot "
                    "episodes (a small budget).",
        sha256="7fc9090efd586ad89700e315c5b7baeb5285be12207c0307f51b149cd1ec8113",
        protocol="vinyals",
        train_command=(
            "python tools/train.py --model_dir=runs/metalstm_omniglot "
            "--data_dir=../shared/data/omniglot --model=metalstm --model_config='{\"ways\": "
            "5}' --split=vinyals --subset=trainval --ways=5 --shots=1 --queries=5 "
            "--episodes_per_step=16 --episodes=4000 --episodes_per_epoch=800 "
            "--learning_rate=0.001 --lr_decay_every=8000 --lr_decay_rate=0.5 --seed=0"),
    ),
    ZooEntry(
        name="reptile_omniglot",
        description="Reptile (5 SGD steps of 0.1 per task, batched), conv4, Omniglot "
                    "Vinyals split, 5-way; 300 outer steps of 5 tasks (a tiny budget).",
        sha256="09d16cac37d2aedef372c93222236d008721af59303e4b643b044f4aa023f383",
        protocol="vinyals",
        train_command=(
            "python tools/train.py --model_dir=runs/reptile_omniglot "
            "--data_dir=../shared/data/omniglot --model=maml --model_config='{\"ways\": 5, "
            "\"algorithm\": \"reptile\"}' --inner_learning_rate=0.1 --inner_steps=5 "
            "--test_inner_steps=10 --optimizer=sgd --learning_rate=1.0 --split=vinyals "
            "--subset=trainval --ways=5 --shots=1 --queries=9 --episodes_per_step=5 "
            "--episodes=1500 --episodes_per_epoch=250 --lr_decay_every=2500 "
            "--lr_decay_rate=0.5 --seed=0"),
    ),
]}


def list_models() -> dict:
    """{name: one-line description} of every zoo model."""
    return {name: entry.description for name, entry in REGISTRY.items()}


def get_entry(name) -> ZooEntry:
    if name not in REGISTRY:
        raise ValueError(f"Unknown zoo model {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(entry: ZooEntry) -> pathlib.Path:
    """The weights path of `entry`, after its sha256 matched the registry's."""
    path = entry.weights_path
    if not path.is_file():
        raise FileNotFoundError(f"Weights of {entry.name!r} not found at {path}")
    actual = file_sha256(path)
    if actual != entry.sha256:
        raise ValueError(f"Weights of {entry.name!r} at {path} have sha256 {actual}, expected "
                         f"{entry.sha256}: the file is corrupted or not the released one; "
                         "refusing to load it")
    return path


def load(name):
    """The zoo model `name`, built from its config, with hash-verified weights."""
    entry = get_entry(name)
    verify_weights(entry)
    return model_from_dir(entry.directory)
