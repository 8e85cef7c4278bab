"""Training stage: fixed-length batches, losses, schedules and the resumable loop."""
from s2s_qat.training.batches import BatchOrder, EncodedSplit, encode_split
from s2s_qat.training.losses import label_smoothed_nll
from s2s_qat.training.loop import Trainer, TrainResult, cross_entropy_loss, make_strategy, save_result

__all__ = ["BatchOrder", "EncodedSplit", "encode_split", "label_smoothed_nll", "Trainer", "TrainResult",
           "cross_entropy_loss", "make_strategy", "save_result"]
