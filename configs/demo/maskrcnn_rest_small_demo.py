# Mask R-CNN with a ResT-Small backbone trained FROM SCRATCH on the bundled
# demo shapes: maskrcnn_rmt_t_demo.py (data, heads, schedule) with the
# backbone swapped. ResT-Small has the same stage widths as RMT-T, so the
# neck is unchanged. Run it through tools/run_demo.py (`make demo`), or with
# any mmengine Runner-based train script, from the repository root.
_base_ = ['./maskrcnn_rmt_t_demo.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.ResT',
        arch='small',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        norm_cfg=dict(type='BN'),
        init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]))

work_dir = 'work_dirs/demo_rest_small'
