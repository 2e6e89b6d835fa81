# ImageNet-1k classification, ResT v2-Base: the recipe of
# restv2_tiny_in1k_cls.py. TRAINING.md gives the command for tiny only; the
# drop path here (0.3) is the one the official detection builder
# (build_restv2_backbone) uses for restv2_base.
_base_ = ['./restv2_tiny_in1k_cls.py']

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.3),
    head=dict(in_channels=768))
