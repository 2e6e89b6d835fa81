# A tiny RIFormer trained the plain way (labels, cross-entropy) on the
# bundled shape crops: the baseline of the distillation demo
# (configs/demo/cls_riformer_distill_demo.py, docs/riformer.md).
#   python tools/dataset_converters/make_demo_cls.py --out data/demo/cls
#   python tools/train.py configs/demo/cls_riformer_demo.py
_base_ = ['./cls_rmt_demo.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.RIFormer',
        # RIFormer-S12's structure at a quarter width and 5 blocks
        arch=dict(
            layers=[1, 1, 2, 1],
            embed_dims=[16, 32, 64, 128],
            mlp_ratios=[4, 4, 4, 4],
            layer_scale_init_value=1e-5),
        out_indices=(3, ),
        init_cfg=None),
    head=dict(in_channels=128))

# 767 training crops, 24 iterations per epoch, 15 epochs (the RMT demo's
# 6 epochs at lr 1e-3 leave these small MetaFormers far from converged)
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, end=10),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=True,
        begin=0,
        end=15,
        convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=15, val_interval=15)
default_hooks = dict(checkpoint=dict(interval=15))

work_dir = 'work_dirs/demo_cls_riformer'
