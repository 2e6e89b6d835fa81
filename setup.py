"""Install mmvitmix.

The OpenMMLab stack (torch, mmengine, mmcv with ops, mmdet, mmseg,
mmpretrain) is installed by ``tools/install_env.sh`` (or already present on a
user's machine); this file installs the package itself, editable with
``pip install --no-build-isolation --use-pep517 -e .``, and compiles its
fused ops (``mmvitmix._ext``, see :func:`get_extensions`). Both flags
matter: the build must see the installed torch, and without
``--use-pep517`` pip takes the legacy ``setup.py develop`` route, which
setuptools >= 80 hands to an isolated build (no torch, no ops).
"""
import os
import re
import sys

from setuptools import find_packages, setup


def get_version():
    with open(os.path.join('mmvitmix', 'version.py')) as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def read_requirements(name):
    path = os.path.join('requirements', name)
    with open(path) as f:
        return [
            line.strip() for line in f
            if line.strip() and not line.startswith('#')
        ]


def _cuda_include_dirs():
    """CUDA headers shipped in pip wheels (``nvidia/cu13/include``).

    Some CUDA toolkits lack headers that torch's own headers include
    (cusparse.h); the ``nvidia-*`` wheels torch depends on carry them.
    """
    import importlib.util
    spec = importlib.util.find_spec('nvidia')
    dirs = []
    for root in (spec.submodule_search_locations or []) if spec else []:
        inc = os.path.join(root, 'cu13', 'include')
        if os.path.isdir(inc):
            dirs.append(inc)
    return dirs


def add_mim_extension():
    """Ship configs, tools and model-index.yml as ``mmvitmix/.mim``.

    That folder is where ``mim`` (openmim) looks for a codebase's configs
    and tools (``mim train mmvitmix CONFIG`` runs
    ``mmvitmix/.mim/tools/train.py``), as in mmdet and mmpretrain. An
    editable install links the folder's entries to this checkout, so edits
    show at once; a wheel or sdist build copies them (links do not survive
    packaging). Generated, so git-ignored.
    """
    if 'editable_wheel' in sys.argv or 'develop' in sys.argv:
        mode = 'symlink'
    elif any(cmd in sys.argv for cmd in ('bdist_wheel', 'sdist', 'build')):
        mode = 'copy'
    else:  # metadata only (egg_info, dist_info): leave the folder as it is
        return
    import shutil
    root = os.path.dirname(os.path.abspath(__file__))
    mim = os.path.join(root, 'mmvitmix', '.mim')
    os.makedirs(mim, exist_ok=True)
    for name in ('configs', 'tools', 'model-index.yml'):
        src, dst = os.path.join(root, name), os.path.join(mim, name)
        if not os.path.exists(src):
            continue
        if os.path.islink(dst) or os.path.isfile(dst):
            os.remove(dst)
        elif os.path.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(os.path.relpath(src, mim), dst)
        elif os.path.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
                '__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)


def get_extensions():
    """The fused attention ops, ``mmvitmix._ext`` (mmcv's source layout).

    CPU kernels are always built (``CppExtension``); the CUDA kernels are
    added (``CUDAExtension``) where CUDA is available or ``FORCE_CUDA=1``,
    for the architectures in ``TORCH_CUDA_ARCH_LIST`` (default
    ``8.0;9.0``). Without torch (e.g. only reading the metadata) nothing is
    built and the package falls back to its PyTorch reference ops.
    ``MMVITMIX_BUILD_OPS=0`` skips the build and leaves an
    ``mmvitmix/_ext*.so`` already in the checkout as it is (to reinstall
    the package, e.g. to refresh ``mmvitmix/.mim``, without recompiling).
    """
    if os.environ.get('MMVITMIX_BUILD_OPS', '1') == '0':
        print('mmvitmix: MMVITMIX_BUILD_OPS=0, so the fused ops are not '
              '(re)built', file=sys.stderr)
        return [], {}
    if (os.environ.get('CUDA_HOME') is None
            and os.path.exists('/usr/local/cuda/bin/nvcc')):
        # torch otherwise guesses the prefix of the first nvcc on PATH,
        # which may be a wrapper script outside the toolkit
        os.environ['CUDA_HOME'] = '/usr/local/cuda'
    try:
        import torch
        from torch.utils.cpp_extension import (BuildExtension, CppExtension,
                                               CUDAExtension)
    except ImportError:
        print('mmvitmix: torch is not importable here, so the fused ops '
              '(mmvitmix._ext) are NOT built and the PyTorch reference ops '
              'will be used; install with `pip install --no-build-isolation '
              '--use-pep517 -e .` to build them', file=sys.stderr)
        return [], {}
    from glob import glob
    csrc = os.path.join('mmvitmix', 'ops', 'csrc')
    sources = sorted(glob(os.path.join(csrc, 'pytorch', '*.cpp')) +
                     glob(os.path.join(csrc, 'pytorch', 'cpu', '*.cpp')))
    include_dirs = [
        os.path.abspath(os.path.join(csrc, 'common')),
        os.path.abspath(os.path.join(csrc, 'pytorch'))
    ]
    # at::parallel_for is OpenMP inside the headers: without -fopenmp the
    # kernels would run on one thread
    cxx_flags = ['-O3', '-g0', '-fopenmp', '-Wno-psabi']
    define_macros = []
    with_cuda = (torch.cuda.is_available()
                 or os.environ.get('FORCE_CUDA', '0') == '1')
    if with_cuda:
        os.environ.setdefault('TORCH_CUDA_ARCH_LIST', '8.0;9.0')
        # recorded in the binary (mmvitmix._ext.cuda_arch_list()) so that
        # the dispatcher never launches a kernel the GPU has no code for
        archs = '_'.join(
            re.split(r'[;\s]+', os.environ['TORCH_CUDA_ARCH_LIST'].strip()))
        if not re.fullmatch(r'[0-9._A-Za-z+]+', archs):
            raise ValueError('TORCH_CUDA_ARCH_LIST must list architectures '
                             "such as '8.0;9.0+PTX', got "
                             f"{os.environ['TORCH_CUDA_ARCH_LIST']!r}")
        define_macros.append(('MMVITMIX_CUDA_ARCHS', archs))
        sources += sorted(glob(os.path.join(csrc, 'pytorch', 'cuda', '*.cu')))
        include_dirs += _cuda_include_dirs()
        define_macros.append(('MMVITMIX_WITH_CUDA', None))
        ext = CUDAExtension(
            'mmvitmix._ext',
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=dict(
                cxx=cxx_flags,
                nvcc=['-O3', '--expt-relaxed-constexpr']),
            extra_link_args=['-fopenmp'])
    else:
        ext = CppExtension(
            'mmvitmix._ext',
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=dict(cxx=cxx_flags),
            extra_link_args=['-fopenmp'])
    return [ext], dict(build_ext=BuildExtension)


ext_modules, cmdclass = get_extensions()
add_mim_extension()

setup(
    name='mmvitmix',
    version=get_version(),
    description='RMT, ResT, Container-Light and RIFormer backbones for '
    'MMDetection, MMSegmentation and MMPretrain',
    long_description=open('README.md').read() if os.path.exists('README.md') else '',
    long_description_content_type='text/markdown',
    license='Apache License 2.0',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'docs')),
    include_package_data=True,
    package_data={'mmvitmix': ['.mim/**/*']},
    python_requires='>=3.8',
    install_requires=read_requirements('runtime.txt'),
    extras_require=dict(
        det=['mmdet>=3.0.0,<4.0.0'],
        seg=['mmsegmentation>=1.0.0,<2.0.0'],
        cls=['mmpretrain>=1.0.0,<2.0.0'],
        tests=read_requirements('tests.txt')),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False)
