"""Names and values the recipe shares across modules, defined once (torch-free, imports nothing)."""

# Label of a position the loss ignores (Hugging Face / PyTorch convention: prompt, padding, non-assistant turns).
IGNORE_INDEX = -100

# The two halves of the training-dynamics split (sftmix.dynamics), as written in the confidence table.
CONFIDENT, UNCONFIDENT = "confident", "unconfident"

# How a Mixup variant pairs examples (sftmix.variants.Variant.pairing, sftmix.pairing.PairedBatchSampler).
PAIRINGS = ("conf_unconf", "random", "conf_conf", "unconf_unconf")
