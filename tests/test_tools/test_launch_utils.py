"""Fast checks of tools/train.py, tools/test.py and the launch scripts.

No training here: config dispatch, argument handling, the CPU fallbacks of
multi-process launches and the command lines the shell scripts build.
"""
import importlib
import os
import stat
import subprocess
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmvitmix.apis import launch
from tests.utils import load_script

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / 'tools'


train_tool = load_script('tools/train.py')
test_tool = load_script('tools/test.py')


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------ scope
def test_scope_from_default_scope(tmp_path):
    cfg_file = _write(tmp_path / 'a.py', "default_scope = 'mmseg'\n")
    cfg = Config.fromfile(str(cfg_file))
    assert launch.resolve_scope(cfg, str(cfg_file)) == 'mmseg'


def test_scope_from_base_chain(tmp_path):
    # a.py -> local b.py -> mmdet::..., and no default_scope anywhere
    _write(tmp_path / 'base' / 'b.py',
           "_base_ = 'mmdet::_base_/schedules/schedule_1x.py'\n")
    cfg_file = _write(tmp_path / 'a.py', "_base_ = ['./base/b.py']\nx = 1\n")
    assert launch.scope_from_bases(str(cfg_file)) == ['mmdet']
    cfg = Config.fromfile(str(cfg_file))
    assert 'default_scope' not in cfg
    assert launch.resolve_scope(cfg, str(cfg_file)) == 'mmdet'


def test_scope_errors(tmp_path):
    cfg_file = _write(tmp_path / 'none.py', 'x = 1\n')
    with pytest.raises(ValueError, match='default_scope') as info:
        launch.resolve_scope(Config.fromfile(str(cfg_file)), str(cfg_file))
    assert "['mmdet', 'mmpretrain', 'mmseg']" in str(info.value)

    cfg_file = _write(tmp_path / 'pose.py', "default_scope = 'mmpose'\n")
    with pytest.raises(ValueError, match="'mmpose'.*accepted values"):
        launch.resolve_scope(Config.fromfile(str(cfg_file)), str(cfg_file))

    for scope in ('mmdet', 'mmseg'):
        _write(tmp_path / f'{scope}.py',
               f"_base_ = '{scope}::_base_/default_runtime.py'\n")
    mixed = _write(tmp_path / 'mixed.py',
                   "_base_ = ['./mmdet.py', './mmseg.py']\n")
    with pytest.raises(ValueError, match='several libraries'):
        launch.resolve_scope(Config(dict(x=1)), str(mixed))


@pytest.mark.parametrize('scope,model_type', [
    ('mmdet', 'MaskRCNN'),
    ('mmseg', 'EncoderDecoder'),
    ('mmpretrain', 'ImageClassifier'),
])
def test_load_config(tmp_path, scope, model_type):
    cfg_file = _write(
        tmp_path / 'cfg.py',
        f"_base_ = '{scope}::_base_/default_runtime.py'\n"
        f"model = dict(type='{model_type}',\n"
        "             backbone=dict(type='mmvitmix.RMT'))\n")
    cfg = launch.load_config(
        str(cfg_file), {'model.backbone.arch': 's'}, launcher='none')
    assert cfg.default_scope == scope
    assert cfg.launcher == 'none'
    assert cfg.model.backbone.arch == 's'
    from mmvitmix.registry import MODELS
    assert MODELS.get('RMT') is not None
    # the downstream library's modules are registered
    registry = importlib.import_module(f'{scope}.registry').MODELS
    assert model_type in registry.module_dict
    with pytest.raises(ValueError, match='unknown launcher'):
        launch.load_config(str(cfg_file), None, launcher='torchrun')
    with pytest.raises(FileNotFoundError, match='does not exist'):
        launch.load_config(str(tmp_path / 'nope.py'))


def test_work_dir_default(tmp_path):
    cfg = Config(dict())
    launch.set_work_dir(cfg, None, 'configs/x/my_model_1x.py')
    assert cfg.work_dir == os.path.join('./work_dirs', 'my_model_1x')
    cfg = Config(dict(work_dir='from_cfg'))
    launch.set_work_dir(cfg, None, 'configs/x/my_model_1x.py')
    assert cfg.work_dir == 'from_cfg'
    launch.set_work_dir(cfg, str(tmp_path), 'configs/x/my_model_1x.py')
    assert cfg.work_dir == str(tmp_path)


# ---------------------------------------------------------- CPU launches
def _sync_bn_cfg():
    return Config(
        dict(
            launcher='pytorch',
            sync_bn='torch',
            model=dict(
                backbone=dict(
                    norm_cfg=dict(type='SyncBN', requires_grad=True)),
                decode_head=[
                    dict(norm_cfg=dict(type='MMSyncBN', group=None,
                                       stats_mode='N')),
                    dict(norm_cfg=dict(type='GN', num_groups=4)),
                ])))


def test_convert_sync_bn_cfg():
    cfg = _sync_bn_cfg()
    changed = launch.convert_sync_bn_cfg(cfg)
    assert changed == [
        'model.backbone.norm_cfg (SyncBN)',
        'model.decode_head[0].norm_cfg (MMSyncBN)', "sync_bn ('torch')"
    ]
    assert cfg.model.backbone.norm_cfg == dict(type='BN', requires_grad=True)
    assert cfg.model.decode_head[0].norm_cfg == dict(type='BN')
    assert cfg.model.decode_head[1].norm_cfg == dict(type='GN', num_groups=4)
    assert cfg.sync_bn is None


def test_prepare_cpu_distributed_none_launcher():
    cfg = _sync_bn_cfg()
    cfg.launcher = 'none'
    before = cfg.to_dict()
    assert launch.prepare_cpu_distributed(cfg) is False
    assert cfg.to_dict() == before


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only fallback')
def test_prepare_cpu_distributed(monkeypatch):
    import torch.distributed as dist
    calls = []
    monkeypatch.setattr(dist, 'is_initialized', lambda: False)
    monkeypatch.setattr(dist, 'init_process_group',
                        lambda **kw: calls.append(kw))
    cfg = _sync_bn_cfg()
    cfg.env_cfg = dict(dist_cfg=dict(backend='nccl', timeout=60))
    cfg.find_unused_parameters = True
    assert launch.prepare_cpu_distributed(cfg) is True
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model.backbone.norm_cfg.type == 'BN'
    assert cfg.model_wrapper_cfg == dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=True,
        device_ids=None)
    assert len(calls) == 1 and calls[0]['backend'] == 'gloo'
    assert calls[0]['timeout'].total_seconds() == 60

    # a wrapper from the config keeps its settings, loses the device ids
    cfg = _sync_bn_cfg()
    cfg.model_wrapper_cfg = dict(
        type='MMDistributedDataParallel', find_unused_parameters=True)
    launch.prepare_cpu_distributed(cfg)
    assert cfg.model_wrapper_cfg == dict(
        type='MMDistributedDataParallel',
        find_unused_parameters=True,
        device_ids=None)

    cfg = _sync_bn_cfg()
    cfg.env_cfg = dict(dist_cfg=dict(backend='hccl'))
    with pytest.raises(ValueError, match="'gloo'"):
        launch.prepare_cpu_distributed(cfg)


# ------------------------------------------------------------ train args
def _train_cfg(**extra):
    return Config(
        dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(lr=0.1)),
             **extra))


def test_train_args(tmp_path):
    cfg = _train_cfg()
    args = train_tool.parse_args(['cfg.py', '--amp', '--resume'])
    train_tool.apply_train_args(cfg, args)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.resume is True and cfg.load_from is None
    assert cfg.work_dir == os.path.join('./work_dirs', 'cfg')

    ckpt = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {'w': torch.zeros(2)}}, ckpt)
    cfg = _train_cfg(auto_scale_lr=dict(enable=False, base_batch_size=16))
    args = train_tool.parse_args(
        ['cfg.py', '--resume', str(ckpt), '--auto-scale-lr', '--work-dir',
         str(tmp_path)])
    train_tool.apply_train_args(cfg, args)
    assert cfg.resume is True and cfg.load_from == str(ckpt)
    assert cfg.auto_scale_lr.enable is True
    assert cfg.work_dir == str(tmp_path)

    # a damaged checkpoint is named, not resumed from
    damaged = _write(tmp_path / 'epoch_2.pth', 'x')
    with pytest.raises(RuntimeError, match=r"cannot resume from '.*epoch_2"
                       r".pth': the checkpoint is damaged.*epoch_1.pth"):
        train_tool.apply_train_args(
            _train_cfg(),
            train_tool.parse_args(['cfg.py', '--resume', str(damaged)]))

    with pytest.raises(ValueError, match='base_batch_size'):
        train_tool.apply_train_args(
            _train_cfg(), train_tool.parse_args(['cfg.py', '--auto-scale-lr']))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        train_tool.apply_train_args(
            _train_cfg(),
            train_tool.parse_args(['cfg.py', '--resume',
                                   str(tmp_path / 'no.pth')]))
    with pytest.raises(ValueError, match='--amp'):
        train_tool.apply_train_args(
            Config(dict(optim_wrapper=dict(type='ApexOptimWrapper'))),
            train_tool.parse_args(['cfg.py', '--amp']))


def test_local_rank_arg(monkeypatch):
    # setenv first so that teardown removes what parse_args exports
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.delenv('LOCAL_RANK')
    train_tool.parse_args(['cfg.py', '--local-rank', '3'])
    assert os.environ['LOCAL_RANK'] == '3'
    # torchrun's variable wins over the argument
    train_tool.parse_args(['cfg.py', '--local_rank', '5'])
    assert os.environ['LOCAL_RANK'] == '3'


# ------------------------------------------------------------- test args
@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_show_dir(scope):
    cfg = Config(
        dict(default_scope=scope,
             default_hooks=dict(visualization=dict(type='VisHook')),
             visualizer=dict(type='Visualizer')))
    args = test_tool.parse_args(['cfg.py', 'ckpt.pth', '--show-dir', 'vis'])
    test_tool.trigger_visualization(cfg, args)
    hook = cfg.default_hooks.visualization
    if scope == 'mmdet':
        assert hook.draw is True and hook.test_out_dir == 'vis'
    elif scope == 'mmseg':
        assert hook.draw is True and cfg.visualizer.save_dir == 'vis'
    else:
        assert hook.enable is True and hook.out_dir == 'vis'
    with pytest.raises(ValueError, match='default_hooks.visualization'):
        test_tool.trigger_visualization(Config(dict(default_scope=scope)),
                                        args)


# --------------------------------------------------------- shell scripts
def _fake_bin(tmp_path, name):
    """An executable that records its arguments, one per line."""
    log = tmp_path / f'{name}.args'
    exe = _write(tmp_path / 'bin' / name,
                 f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {log}\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return log


#: variables the scripts read; the caller's values must not leak in
_SCRIPT_VARS = ('NNODES', 'NODE_RANK', 'MASTER_ADDR', 'PORT', 'GPUS',
                'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS', 'PYTHON')


def _run_script(tmp_path, script, *args, **env):
    full_env = {
        k: v
        for k, v in os.environ.items() if k not in _SCRIPT_VARS
    }
    full_env['PATH'] = f'{tmp_path / "bin"}{os.pathsep}{full_env["PATH"]}'
    full_env.update(env)
    return subprocess.run(['bash', str(TOOLS / script), *args],
                          env=full_env,
                          capture_output=True,
                          text=True,
                          timeout=60)


@pytest.mark.parametrize('script,args,tail', [
    ('slurm_train.sh', ['part', 'job', 'c.py', 'wd', '--amp'],
     ['train.py', 'c.py', '--work-dir=wd', '--launcher=slurm', '--amp']),
    ('slurm_test.sh', ['part', 'job', 'c.py', 'ck.pth', '--out', 'r.pkl'],
     ['test.py', 'c.py', 'ck.pth', '--launcher=slurm', '--out', 'r.pkl']),
])
def test_slurm_scripts(tmp_path, script, args, tail):
    log = _fake_bin(tmp_path, 'srun')
    proc = _run_script(
        tmp_path, script, *args, GPUS='16', GPUS_PER_NODE='8',
        CPUS_PER_TASK='4', SRUN_ARGS='--quotatype=auto --exclusive',
        PYTHON='python3')
    assert proc.returncode == 0, proc.stderr
    argv = log.read_text().splitlines()
    assert argv[:10] == [
        '-p', 'part', '--job-name=job', '--gres=gpu:8', '--ntasks=16',
        '--ntasks-per-node=8', '--cpus-per-task=4', '--kill-on-bad-exit=1',
        '--quotatype=auto', '--exclusive'
    ]
    assert argv[10:12] == ['python3', '-u']
    assert argv[12] == str(TOOLS / tail[0])
    assert argv[13:] == tail[1:]


@pytest.mark.parametrize('script,args,tail', [
    ('dist_train.sh', ['c.py', '4', '--amp'],
     ['train.py', 'c.py', '--launcher', 'pytorch', '--amp']),
    ('dist_test.sh', ['c.py', 'ck.pth', '4', '--out', 'r.pkl'],
     ['test.py', 'c.py', 'ck.pth', '--launcher', 'pytorch', '--out',
      'r.pkl']),
])
def test_dist_scripts_command(tmp_path, script, args, tail):
    log = _fake_bin(tmp_path, 'fakepython')
    proc = _run_script(tmp_path, script, *args, PYTHON='fakepython',
                       NNODES='2', NODE_RANK='1', MASTER_ADDR='10.0.0.1',
                       PORT='29600')
    assert proc.returncode == 0, proc.stderr
    argv = log.read_text().splitlines()
    assert argv[:7] == [
        '-m', 'torch.distributed.run', '--nnodes=2', '--node_rank=1',
        '--master_addr=10.0.0.1', '--master_port=29600', '--nproc_per_node=4'
    ]
    assert argv[7] == str(TOOLS / tail[0])
    assert argv[8:] == tail[1:]

    # defaults: one node, rank 0, localhost, port 29500
    proc = _run_script(tmp_path, script, *args, PYTHON='fakepython')
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().splitlines()[2:6] == [
        '--nnodes=1', '--node_rank=0', '--master_addr=127.0.0.1',
        '--master_port=29500'
    ]


@pytest.mark.parametrize('script,nargs', [('dist_train.sh', 2),
                                          ('dist_test.sh', 3),
                                          ('slurm_train.sh', 4),
                                          ('slurm_test.sh', 4)])
def test_scripts_usage(tmp_path, script, nargs):
    _fake_bin(tmp_path, 'srun')
    proc = _run_script(tmp_path, script, *(['x'] * (nargs - 1)),
                       PYTHON='false')
    assert proc.returncode == 2
    assert 'usage:' in proc.stderr
