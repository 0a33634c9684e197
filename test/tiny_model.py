"""A PEM model small enough to train a few iterations per test on 2 CPU cores (a model config as a dict)."""

TINY_MODEL = {
    "name": "pem_stdc1_tiny",
    "backbone": {"name": "stdc1"},
    "pixel_decoder": {"name": "pem", "conv_dim": 32, "mask_dim": 64},
    "transformer_decoder": {"name": "masked", "hidden_dim": 64, "num_queries": 12, "num_heads": 4,
                            "dim_feedforward": 128, "num_layers": 3, "pre_norm": True, "cross_attention": "pem"},
}
