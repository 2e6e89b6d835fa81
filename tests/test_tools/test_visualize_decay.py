"""tools/analysis_tools/visualize_decay.py writes a PNG that depends on
the head; the decay maps match γ^distance."""
import math

import numpy as np

from tests.utils import load_script

visualize_decay = load_script('tools/analysis_tools/visualize_decay.py')


def test_decay_maps_by_hand():
    whole, w_pass, h_pass = visualize_decay.decay_maps(
        math.log(0.5), 5, 7, 2, 3)
    close = np.isclose
    assert close(whole[2, 3], 1) and close(whole[0, 0], 0.5**(2 + 3))
    assert close(whole[4, 6], 0.5**(2 + 3))
    assert close(w_pass[2, 6], 0.5**3) and w_pass[1, 3] == 0
    assert close(h_pass[0, 3], 0.25) and h_pass[2, 4] == 0
    np.testing.assert_allclose(whole, np.outer(h_pass[:, 3], w_pass[2]))


def test_png_non_empty_and_changes_with_head(tmp_path):
    outs = []
    for head in (0, 3):
        out = tmp_path / f'head{head}.png'
        visualize_decay.main(['--arch', 't', '--stage', '0', '--head',
                              str(head), '--size', '64', '--out', str(out)])
        assert out.stat().st_size > 1000
        outs.append(out.read_bytes())
    assert outs[0] != outs[1]
    from PIL import Image
    a, b = (np.asarray(Image.open(tmp_path / f'head{h}.png').convert('L'),
                       dtype=float) for h in (0, 3))
    assert a.shape == b.shape and np.abs(a - b).mean() > 0.5


def test_erf_panel_random_init_and_demo_image(tmp_path):
    out = tmp_path / 'erf.png'
    visualize_decay.main(['--arch', 't', '--stage', '1', '--head', '1',
                          '--size', '64', '--erf', '--out', str(out)])
    assert out.stat().st_size > 1000
    model, _ = visualize_decay.build_backbone('t', 1)
    _, image = visualize_decay.load_image(visualize_decay.default_image(), 64)
    erf = visualize_decay.effective_receptive_field(model, image)
    assert erf.shape == (64, 64) and erf.max() > 0
    # the centre output sees the centre of the image more than a corner
    assert erf[24:40, 24:40].mean() > erf[:8, :8].mean()
