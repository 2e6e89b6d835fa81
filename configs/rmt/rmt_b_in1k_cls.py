# ImageNet-1k classification, RMT-B: rmt_t_in1k_cls.py (the official
# recipe) with the official RMT_M2 (drop path 0.4, hard-coded there).
_base_ = ['./rmt_t_in1k_cls.py']

model = dict(backbone=dict(arch='b', drop_path_rate=0.4))
