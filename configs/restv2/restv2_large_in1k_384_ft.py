# ImageNet-1k fine-tuning of ResT v2-Large at 384x384 from its 224
# classifier: the recipe of restv2_tiny_in1k_384_ft.py (TRAINING.md gives
# the tiny command); drop path 0.5 as restv2_large_in1k_cls.py.
_base_ = ['./restv2_tiny_in1k_384_ft.py']

load_from = 'checkpoints/restv2/restv2_large_224_in1k_mmpretrain.pth'
model = dict(
    backbone=dict(arch='large', drop_path_rate=0.5),
    head=dict(in_channels=1024))
