"""The built-in data keeps the key out of the dilated FCN's reach (issue 18, part 4).

The reach is measured, not computed: with every weight made positive (so that no path cancels),
an output pixel's logit has a nonzero gradient on exactly the input columns it can see. One batch
element per output column gives all 384 at once.
"""

import torch

from danet import DANet, receptive_field
from pipeline import synthetic
from pipeline.presets import get_preset


def test_no_shape_pixel_is_within_the_fcn_reach_of_the_key():
    preset = get_preset("cpu")
    model = DANet(4, preset.backbone, dilated=preset.dilated, attention="none").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    scene = {**synthetic.SCENE_DEFAULTS, **preset.synthetic}
    H, W = 8, scene["width"]                     # the height does not change the horizontal reach
    cols = torch.arange(W)
    x = torch.rand(W, 3, H, W, requires_grad=True)
    model(x)[0][cols, 0, H // 2, cols].sum().backward()                   # element b: output column b
    sees = x.grad.abs().sum((1, 2)) > 0                                    # (W, W): row b, input columns
    reach = max(int((cols[row] - b).abs().max()) for b, row in enumerate(sees))
    assert reach >= receptive_field(model)["receptive_field"] // 2        # 213: the stretch adds to it
    assert scene["min_distance"] > reach, (f"a shape pixel {scene['min_distance']} px from the key is within "
                                           f"the FCN's measured reach of {reach} px")
