# RMT-S + Cascade Mask R-CNN, 3x schedule + multi-scale training, COCO
# (official qhfan/RMT detect/configs/RMT/casrcnn_s_3x.py on
# _base_/models/RMT_cas_rcnn.py, mmdet 2.x), ported to mmdet 3.x: mmdet's
# cascade-mask-rcnn_r50_fpn with the RMT-S backbone of
# _base_/maskrcnn_rmt_s.py, the official 4conv1fc box heads (SyncBN, GIoU
# loss on decoded boxes, class-specific regression), the multi-scale resize /
# crop pipeline of ../_base_/datasets/coco_instance_ms_3x.py and the 3x
# schedule of maskrcnn_rmt_s_3x.py. cascade_maskrcnn_rmt_b_3x.py inherits
# this file. Batch: 8 GPUs x 2 images = 16, as the official runs.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    '../_base_/datasets/coco_instance_ms_3x.py',
    '../_base_/default_runtime_det.py'
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.RMT',
        arch='s',
        drop_path_rate=0.15,
        out_indices=(0, 1, 2, 3),
        # the official detection backbone hard-codes SyncBatchNorm in the stem
        # and the downsampling layers
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/rmt/RMT-S.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]),
    # official: 4 shared convs (SyncBN) + 1 fc per stage instead of mmdet's
    # 2 fc, GIoU loss (weight 10) on decoded boxes; the three stages differ
    # only in their target stds
    roi_head=dict(bbox_head=[
        dict(
            type='ConvFCBBoxHead',
            num_shared_convs=4,
            num_shared_fcs=1,
            in_channels=256,
            conv_out_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0., 0., 0., 0.],
                target_stds=stds),
            reg_class_agnostic=False,
            reg_decoded_bbox=True,
            norm_cfg=dict(type='SyncBN', requires_grad=True),
            loss_cls=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
        for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                     [0.033, 0.033, 0.067, 0.067])
    ]))

# official: AdamW, no weight decay on norms (the heads' SyncBN included:
# norm_decay_mult=0), fp16 with dynamic loss scale
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='AdamW', lr=0.0004, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0., custom_keys={'norm': dict(decay_mult=0.)}))

# official: linear warm-up 500 iters, x0.1 at epochs 27 and 33, 36 epochs
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1)
]
