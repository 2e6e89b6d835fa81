# ImageNet-1k classification, RMT-S: rmt_t_in1k_cls.py (the official
# recipe) with the official RMT_S (drop path 0.15, hard-coded there).
_base_ = ['./rmt_t_in1k_cls.py']

model = dict(backbone=dict(arch='s', drop_path_rate=0.15))
