# RMT-T + Mask R-CNN, 1x schedule, COCO instance segmentation.
# Port of the official qhfan/RMT detect/configs/RMT/maskrcnn_t_1x.py
# (mmdet 2.x) to mmdet 3.x. The other maskrcnn_rmt_* configs inherit this one.
# Batch: 8 GPUs x 2 images = 16, as the official runs.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)
default_scope = 'mmdet'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.RMT',
        arch='t',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        # the official detection backbone hard-codes SyncBatchNorm in the stem
        # and the downsampling layers
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/rmt/RMT-T.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))

train_dataloader = dict(batch_size=2, num_workers=2)

# official: AdamW, no weight decay on norms, fp16 with dynamic loss scale;
# schedule (linear warm-up 500 iters, x0.1 at epochs 8 and 11, 12 epochs)
# is the one of the mmdet base
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='AdamW', lr=0.0004, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))

auto_scale_lr = dict(enable=False, base_batch_size=16)
default_hooks = dict(checkpoint=dict(max_keep_ckpts=1))
