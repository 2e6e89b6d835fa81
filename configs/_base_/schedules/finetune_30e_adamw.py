# Short fine-tuning schedule (ours, not an official recipe): AdamW lr 1e-4
# for a total batch of 32, weight decay 0.05 (none on 1-D parameters), 1
# warm-up epoch, cosine to 1e-6 over 30 epochs, gradient clipping at 5;
# the new head learns 10x faster than the pretrained backbone.
optim_wrapper = dict(
    optimizer=dict(
        type='AdamW', lr=1e-4, weight_decay=0.05, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        flat_decay_mult=0.0, custom_keys={'head': dict(lr_mult=10.0)}),
    clip_grad=dict(max_norm=5.0))

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=1,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-6,
        by_epoch=True,
        begin=1,
        end=30,
        convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=30, val_interval=1)
val_cfg = dict()
test_cfg = dict()

auto_scale_lr = dict(base_batch_size=32)
