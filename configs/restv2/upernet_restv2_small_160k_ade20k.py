# ResT v2-Small + UperNet, 160k iterations, ADE20K 512x512.
# Official upernet_restv2_small_512_160k_ade20k.py (mmseg 0.x): drop path
# 0.2, AdamW lr 1.5e-4, weight decay 0.05, the same warm-up and poly
# schedule as the tiny config. The official file also names a
# LearningRateDecayOptimizerConstructor (stage_wise, decay_rate 0.9,
# num_layers (1, 2, 12, 2)) that the official repository does not ship, so
# its layer ids are unknown: not ported (plain AdamW, no decay on norms as
# in the tiny config). See README.md.
_base_ = ['./upernet_restv2_tiny_160k_ade20k.py']

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.2,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/restv2/restv2_small_224.pth')))
optim_wrapper = dict(optimizer=dict(lr=0.00015, weight_decay=0.05))
