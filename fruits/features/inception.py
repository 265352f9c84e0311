"""InceptionV3's structure as the featurizer uses it: the blocks that can end the network.

A module of its own, without numpy or TensorFlow, so the configuration can validate
``featurizer.layer`` cheaply.
"""

__all__ = ["FULL_NETWORK", "LAYERS", "blocks", "feature_dim", "is_layer"]

# The InceptionV3 blocks whose output can be average-pooled into the features, with the number
# of channels (= feature length) of each. mixed10 is the whole network; an earlier block costs
# less arithmetic, and with the shared weights (ImageNet's up to mixed5 only) it also separates
# the varieties better (BENCHMARKS.md, section 3, Feature extractor).
LAYERS = {
    "mixed0": 256,
    "mixed1": 288,
    "mixed2": 288,
    "mixed3": 768,
    "mixed4": 768,
    "mixed5": 768,
    "mixed6": 768,
    "mixed7": 768,
    "mixed8": 1280,
    "mixed9": 2048,
    "mixed10": 2048,
}
FULL_NETWORK = "mixed10"


def blocks(layer: str) -> list[str]:
    """The blocks of a ``featurizer.layer`` value: one block (``mixed3``) or several joined
    by ``+`` (``mixed2+mixed3``), whose pooled outputs are concatenated in that order. mixed2
    is computed anyway on the way to mixed3, so adding it costs nearly nothing."""
    return layer.split("+")


def is_layer(layer: str) -> bool:
    parts = blocks(layer)
    return all(part in LAYERS for part in parts) and len(set(parts)) == len(parts)


def feature_dim(layer: str) -> int:
    return sum(LAYERS[part] for part in blocks(layer))
