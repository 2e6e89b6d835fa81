# Mask R-CNN with a Container-Light backbone trained FROM SCRATCH on the
# bundled demo shapes: maskrcnn_rmt_t_demo.py (data, head sizes, schedule)
# with the backbone swapped. BatchNorm trains normally here (batch 8 on one
# process). Run it through tools/run_demo.py (`make demo`), or with any
# mmengine Runner-based train script, from the repository root.
_base_ = ['./maskrcnn_rmt_t_demo.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.ContainerLight',
        arch='light',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        norm_cfg=dict(type='BN'),
        init_cfg=None),
    neck=dict(in_channels=[64, 128, 320, 512]))

work_dir = 'work_dirs/demo_container_light'
