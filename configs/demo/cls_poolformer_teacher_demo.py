# The TEACHER of the RIFormer distillation demo: a tiny PoolFormer (token
# mixer: 3x3 average pooling) trained from scratch on the bundled shape
# crops (circle / square / triangle; chance 33%). Then distil a tiny
# RIFormer from it with configs/demo/cls_riformer_distill_demo.py
# (docs/riformer.md, "CPU demonstration"):
#   python tools/dataset_converters/make_demo_cls.py --out data/demo/cls
#   python tools/train.py configs/demo/cls_poolformer_teacher_demo.py
_base_ = ['./cls_riformer_demo.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='PoolFormer',
        # the student's macro structure (cls_riformer_demo.py), so that
        # every token mixer pairs with one of the student and the weights
        # can initialise it
        arch=dict(
            layers=[1, 1, 2, 1],
            embed_dims=[16, 32, 64, 128],
            mlp_ratios=[4, 4, 4, 4],
            layer_scale_init_value=1e-5),
        # MMPretrain's default (0) freezes the patch embedding
        frozen_stages=-1))

work_dir = 'work_dirs/demo_cls_poolformer_teacher'
