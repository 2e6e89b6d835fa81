# ResT-Small + Mask R-CNN without data: the model, the official optimiser
# and the official schedule, ported from the official wofmanaf/ResT
# d2/configs/COCO-InstanceSegmentation/mask_rcnn_rest_small_FPN_1x.yaml at
# the ResT v1 commit 508e30b (with its Base-RCNN-FPN.yaml, defaults.py and
# train_net.py, detectron2) to mmdet 3.x; see
# ../README.md. ../maskrcnn_rest_small_1x.py and ../maskrcnn_rest_small_3x.py
# add their data to it.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    # official: 90k iterations of 16 images, x0.1 at 60k and 80k,
    # detectron2's linear warm-up of 1000 iterations from 0.001; as epochs
    # (mmdet 1x): 12, x0.1 at 8 and 11
    '../../_base_/schedules/schedule_1x_warmup1k.py'
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.ResT',
        arch='small',
        # official build_rest_backbone: 0.1 for lite/small, 0.2 for base/large
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        # the official backbone uses plain BatchNorm2d in the stem and the
        # patch embeddings, in training mode (per-GPU statistics)
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/rest/rest_small.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))

# official (detectron2 at the ResT v1 commit 508e30b, d2/train_net.py and
# d2/configs/defaults.py): AdamW lr 1e-4, betas (0.9, 0.999), weight decay
# 0.05; none on the weights of norm layers (WEIGHT_DECAY_NORM 0) and 1e-4 on
# every parameter named `bias`, norm biases included (WEIGHT_DECAY_BIAS is
# bound to the default WEIGHT_DECAY, 1e-4, before the yaml raises
# WEIGHT_DECAY to 0.05, and detectron2 applies the bias override after the
# norm one). Keys: '.bias' (longer) is matched before 'norm'; every norm
# module of this model has 'norm' in its name (tests/test_configs/
# test_recipes.py checks the groups parameter by parameter).
# No gradient clipping: the v1 Base-RCNN-FPN.yaml has none (the full-model
# clipping at 0.01 came with the ResT v2 configs in 2022).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            '.bias': dict(decay_mult=1e-4 / 0.05),
            'norm': dict(decay_mult=0.)
        }))
