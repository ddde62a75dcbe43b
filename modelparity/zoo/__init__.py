"""The built-in models; each is a factory returning a ModelSpec, referenced like a user's model."""

BUILTIN_MODELS: dict[str, str] = {
    "resnet18": "modelparity.zoo.vision:resnet18",
    "mobilenet_v3_small": "modelparity.zoo.vision:mobilenet_v3_small",
    "digits_cnn": "modelparity.zoo.digits:digits_cnn",
    "tiny_transformer": "modelparity.zoo.transformer:tiny_transformer",
    "pad_to_even": "modelparity.zoo.branching:pad_to_even",
    "scaled_silu_cnn": "modelparity.zoo.custom_op:scaled_silu_cnn",
}
