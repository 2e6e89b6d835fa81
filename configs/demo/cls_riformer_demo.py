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

work_dir = 'work_dirs/demo_cls_riformer'
