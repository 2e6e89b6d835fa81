# ADE20K with mmseg's 512x512 pipelines at 2 images per GPU:
# 8 GPUs x 2 images = 16 a step, the batch of every segmentation recipe in
# configs/ (and of the official RMT runs).
_base_ = 'mmseg::_base_/datasets/ade20k.py'

crop_size = (512, 512)
train_dataloader = dict(batch_size=2, num_workers=2)

auto_scale_lr = dict(enable=False, base_batch_size=16)
