"""Keras losses: ``TaylorGLOLoss``, the baselines ``BaikalLoss`` and ``Poly1Loss``, and loss I/O.

Cross-entropy is Keras's own (``get("cross_entropy")``). All losses here accept
one-hot or sparse integer labels, are registered serializable (``model.save`` /
``keras.models.load_model`` need no ``custom_objects``) and use only ``keras.ops``.
"""

from taylorglo_tf import extras

with extras.needs("taylorglo_tf.losses"):  # Keras: the `train` extra
    from taylorglo_tf.losses.baselines import BaikalLoss, Poly1Loss
    from taylorglo_tf.losses.progress import TrainingProgress
    from taylorglo_tf.losses.serialization import NAMES, from_dict, get, load_json, save_json
    from taylorglo_tf.losses.taylor_loss import TaylorGLOLoss, partial_derivatives

__all__ = [
    "NAMES",
    "BaikalLoss",
    "Poly1Loss",
    "TaylorGLOLoss",
    "TrainingProgress",
    "from_dict",
    "get",
    "load_json",
    "partial_derivatives",
    "save_json",
]
