"""keras-hub's spelling of loading a zoo model through its class:
`PrototypicalNetwork.from_preset("protonet_omniglot")`."""


class FromPreset:
    """Mixin of every model base class: `from_preset` loads a zoo entry (or a directory of
    one's own) and refuses one whose model is not of this class."""

    @classmethod
    def from_preset(cls, preset, load_weights=True):
        """The zoo model `preset` (a name, or a folder with config.json and weights), sha256
        verified; ValueError, before any weights are read, when it is not a `cls`."""
        from keras_fewshot import zoo  # the zoo imports the models: resolved at call time
        return zoo.from_preset(cls, preset, load_weights=load_weights)
