"""SFTMix: instruction tuning with a confidence-aware Mixup regulariser (Xiao et al., 2024, arXiv 2410.05248).

The recipe stands alone: ``from sftmix import mixup_loss`` in your own training loop, or use
:class:`sftmix.trainer.SFTMixTrainer` / ``bench train``.
"""
__version__ = "0.1.0"


def __getattr__(name):
    # Lazy so that `import sftmix` (e.g. for the variants list) does not import torch.
    if name in ("mixup_loss", "ntp_loss"):
        from . import loss  # torch: only when a loss is asked for

        return getattr(loss, name)
    raise AttributeError(name)
