# ImageNet-1k, 224x224, the DeiT training recipe (timm `create_transform`
# with RandAugment rand-m9-mstd0.5-inc1, bicubic, RandomErasing 0.25 'pixel',
# test resize 256 + centre crop 224) in MMPretrain 1.x names: MMPretrain's
# Swin / DeiT ImageNet pipeline. DeiT's repeated augmentation (RASampler,
# three repeats per epoch, on by default in the DeiT-derived training scripts
# of RMT, ResT v1 and Container) is MMPretrain's RepeatAugSampler.
# Mixup / CutMix and label smoothing belong to the model
# (`configs/_base_/models/imageclassifier_deit.py`).
_base_ = ['mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py']

train_dataloader = dict(
    sampler=dict(type='RepeatAugSampler', num_repeats=3, shuffle=True))
