# mmdet's 1x schedule (12 epochs, x0.1 at epochs 8 and 11) with a linear
# warm-up of 1000 iterations from 0.001 instead of 500, as in mmdet's Swin
# Mask R-CNN 1x configs. It is also the official ResT v1 detectron2 schedule
# (90k iterations of 16 images, x0.1 at 60k and 80k, detectron2's linear
# warm-up of 1000 iterations from 0.001) expressed in epochs.
# The optimiser is left to the configs (mmdet's SGD until replaced).
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]
