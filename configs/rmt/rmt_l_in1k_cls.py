# ImageNet-1k classification, RMT-L: rmt_t_in1k_cls.py (the official
# recipe) with the official RMT_L6 (drop path 0.5, hard-coded there).
_base_ = ['./rmt_t_in1k_cls.py']

model = dict(
    backbone=dict(arch='l', drop_path_rate=0.5), head=dict(in_channels=640))
