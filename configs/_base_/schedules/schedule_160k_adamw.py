# UperNet schedule, 160k iterations at batch 16: mmseg's Swin UperNet
# protocol, which the official RMT follows too (from UniFormer / CSWin):
# AdamW lr 6e-5, weight decay 0.01 and none on norms, fp32, linear warm-up of
# 1500 iterations from 1e-6, then poly decay (power 1.0) to 0 over 160k
# iterations; evaluation every 16k, keeping the latest and the best (mIoU)
# checkpoints.
_base_ = 'mmseg::_base_/schedules/schedule_160k.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=160000,
        by_epoch=False)
]
train_cfg = dict(max_iters=160000, val_interval=16000)
default_hooks = dict(
    checkpoint=dict(
        by_epoch=False, interval=16000, max_keep_ckpts=1, save_best='mIoU'))
