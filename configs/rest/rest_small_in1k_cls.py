# ImageNet-1k classification, ResT-Small: rest_lite_in1k_cls.py (the
# official v1 recipe); get_started.md: drop path 0.1, 8 GPUs x 256.
_base_ = ['./rest_lite_in1k_cls.py']

model = dict(backbone=dict(arch='small', drop_path_rate=0.1))
