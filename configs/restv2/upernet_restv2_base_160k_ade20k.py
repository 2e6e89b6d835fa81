# ResT v2-Base + UperNet, 160k iterations, ADE20K 512x512.
# Official upernet_restv2_base_512_160k_ade20k.py (mmseg 0.x): drop path
# 0.3, otherwise as upernet_restv2_small_160k_ade20k.py (same note on the
# layer-decay constructor the official repository does not ship).
_base_ = ['./upernet_restv2_small_160k_ade20k.py']

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/restv2/restv2_base_224.pth')))
