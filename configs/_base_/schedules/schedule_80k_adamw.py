# Semantic FPN schedule, 80k iterations at batch 16: the official RMT one
# (qhfan/RMT segmentation/configs/RMT/RMT_FPN_*_1x.py, PVT's protocol):
# AdamW lr 1e-4, weight decay 1e-4, fp32, poly decay (power 0.9, min lr
# 1e-6) over 80k iterations, evaluation and a checkpoint every 4k.
_base_ = 'mmseg::_base_/schedules/schedule_80k.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001),
    clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-6,
        power=0.9,
        begin=0,
        end=80000,
        by_epoch=False)
]
train_cfg = dict(max_iters=80000, val_interval=4000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=4000))
