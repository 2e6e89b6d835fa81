# The DeiT ImageNet-1k schedule (timm `create_optimizer` / `create_scheduler`
# with DeiT's defaults) in mmengine terms, for a total batch of 1024:
# - AdamW, lr 5e-4 * batch / 512 = 1e-3, eps 1e-8, betas (0.9, 0.999),
#   weight decay 0.05, none on 1-D parameters (biases, norms, layer
#   scales: timm's `filter_bias_and_bn`);
# - 5 warm-up epochs from 1e-6, cosine to 1e-5, 300 epochs. timm's
#   scheduler reports 300 + 10 cool-down epochs, but the DeiT-derived
#   training loops run `for epoch in range(args.start_epoch, args.epochs)`
#   with --epochs 300, so the cool-down epochs never run (RMT's published
#   logs end at epoch 299). timm steps the lr once per epoch; here warm-up
#   and cosine are updated per iteration (MMPretrain's way).
# - mixed precision (DeiT trains with torch.cuda.amp and a dynamic scaler).
# Configs with another batch override lr, `start_factor` (= 1e-6 / lr),
# `eta_min` and `auto_scale_lr`.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='AdamW',
        lr=1e-3,
        weight_decay=0.05,
        eps=1e-8,
        betas=(0.9, 0.999)),
    paramwise_cfg=dict(flat_decay_mult=0.0))

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=True,
        begin=5,
        end=300,
        convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()

auto_scale_lr = dict(base_batch_size=1024)
