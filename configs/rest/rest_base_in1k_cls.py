# ImageNet-1k classification, ResT-Base: rest_lite_in1k_cls.py (the
# official v1 recipe); get_started.md: drop path 0.2, 8 GPUs x 256.
_base_ = ['./rest_lite_in1k_cls.py']

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.2), head=dict(in_channels=768))
