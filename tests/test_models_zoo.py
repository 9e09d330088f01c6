"""Tests for the CIFAR model zoo (``kdbench.models.cifar``).

The golden data in ``GOLDEN`` was computed once, outside this repository, by
running the reference definitions of megvii-research/mdistiller
``mdistiller/models/cifar/{resnet,wrn,vgg,mobilenetv2,ShuffleNetv1,ShuffleNetv2,resnetv2}.py``
(the canonical names map to its ``cifar_model_dict`` constructors: vgg* -> vgg*_bn,
MobileNetV2 -> mobile_half, ...).  HobbitLong/RepDistiller ``models/*.py`` define
the same architectures with identical state_dict keys, shapes and order, so the
fingerprints below hold for both.  Per model:

* ``n_keys`` / ``keys_sha256``: count and sha256 of the newline-joined sorted
  ``"key:[shape]"`` lines of ``state_dict()`` (``order_sha256``: same lines in
  state_dict order, i.e. parameter order, which optimizer states depend on);
* ``init_checksum``: ``_checksum`` summed over the float entries (sorted keys)
  right after construction under ``torch.manual_seed(0)`` (same construction and
  init order => same initial weights as the reference for the same seed);
* ``logits``: first 5 logits of both rows, and ``row_sums``, in eval mode after
  ``_fill_`` on ``_input()``;
* ``feats`` / ``preacts``: ``(shape, _checksum)`` of mdistiller's
  ``feats["feats"]`` / ``feats["preact_feats"]`` for the same run (``None``:
  mdistiller's MobileNetV2 has no ``preact_feats``).
"""

from __future__ import annotations

import functools
import hashlib
import math

import pytest
import timm
import torch

from kdbench.models.cifar import ZOO_MODELS

# exact parameter counts with num_classes=100
PARAM_COUNTS = {
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg11": 9_277_284,
    "vgg13": 9_462_180,
    "vgg16": 14_774_436,
    "vgg19": 20_086_692,
    "MobileNetV2": 812_836,
    "ShuffleV1": 949_258,
    "ShuffleV2": 1_355_528,
    "ResNet18": 11_220_132,
    "ResNet34": 21_328_292,
    "ResNet50": 23_705_252,
}

# Source: megvii-research/mdistiller mdistiller/models/cifar/*.py (== HobbitLong/RepDistiller
# models/*.py), computed with torch 2.14.1 CPU; see the module docstring.
GOLDEN = {
    'resnet8': {
        'n_keys': 56,
        'keys_sha256': '1e8d9d7be7abe181752664d09525a8bc82c6a5a5d6f0c0563bd4ce14934c7cc1',
        'order_sha256': 'e8db99945f8eca9b40013382f62d810d1891df7c74028518ba7ade498b396128',
        'init_checksum': 24.01011284,
        'logits': [[-0.020732582, 0.54804105, 0.061974764, 0.27644449, -2.044528], [0.12614954, 0.44220799, 0.126728, 0.31291699, -2.1297328]],
        'row_sums': [5.9735498, 6.2800827],
        'feats': [([2, 16, 32, 32], -171.320735), ([2, 16, 32, 32], -271.728163), ([2, 32, 16, 16], 21.1387542), ([2, 64, 8, 8], -10.8692849)],
        'preacts': [([2, 16, 32, 32], -171.320735), ([2, 16, 32, 32], -231.497799), ([2, 32, 16, 16], 33.8011393), ([2, 64, 8, 8], -8.67688157)],
    },
    'resnet14': {
        'n_keys': 92,
        'keys_sha256': '1f7917f3e9058e760aa0da90285f02d2755417b8ae8745e1a0aeea0c8f37edf2',
        'order_sha256': 'd12dfdebf42b2f48ad5b213e0845221d8012fe2e1ea3e2e30029bc7b43b6759f',
        'init_checksum': 0.2782145963,
        'logits': [[-1.6703153, 0.44163501, -0.63976097, 1.1564023, -1.6863315], [-1.5689709, 0.50581717, -0.70003462, 1.2738618, -1.6644711]],
        'row_sums': [11.833628, 12.341772],
        'feats': [([2, 16, 32, 32], -171.320735), ([2, 16, 32, 32], -230.883494), ([2, 32, 16, 16], -26.5479766), ([2, 64, 8, 8], 15.9127788)],
        'preacts': [([2, 16, 32, 32], -171.320735), ([2, 16, 32, 32], -186.358943), ([2, 32, 16, 16], -16.1232233), ([2, 64, 8, 8], 14.0397641)],
    },
    'resnet20': {
        'n_keys': 128,
        'keys_sha256': '892061a106f86ce08b424243541f1db6651ec9dd5dc8cd96cc567d96d8bfd08c',
        'order_sha256': '7f6fa1e22906e740c018328977cbfb750f8ebf0a114fe31236bce8a4b204d0ed',
        'init_checksum': 27.23633538,
        'logits': [[-2.2241852, -0.1891529, 1.6489565, 2.2572246, -3.6031103], [-2.1383946, -0.070810378, 1.4746283, 2.0943987, -3.3732505]],
        'row_sums': [15.038145, 13.764166],
        'feats': [([2, 16, 32, 32], -171.320735), ([2, 16, 32, 32], -334.428754), ([2, 32, 16, 16], 85.6201101), ([2, 64, 8, 8], 11.2734138)],
        'preacts': [([2, 16, 32, 32], -171.320735), ([2, 16, 32, 32], -315.151188), ([2, 32, 16, 16], 68.1940586), ([2, 64, 8, 8], 1.06586304)],
    },
    'resnet32': {
        'n_keys': 200,
        'keys_sha256': 'aa95989e7c0111bc6c9401c677759bbbb2f5002cadbbaf32e9901b867642c5bf',
        'order_sha256': 'e55d7cbfc3a881b7b29da792e8ba700a623c7cd8cb9672dddde795ddc0cb9a0b',
        'init_checksum': 41.38272754,
        'logits': [[-6.9651361, 0.87666708, 4.5160351, -1.0016028, -8.8254509], [-6.8016143, 1.0043191, 4.1761665, -1.1231837, -8.6729898]],
        'row_sums': [-11.431602, -12.550034],
        'feats': [([2, 16, 32, 32], -171.320735), ([2, 16, 32, 32], -344.93892), ([2, 32, 16, 16], -58.2421329), ([2, 64, 8, 8], -41.524263)],
        'preacts': [([2, 16, 32, 32], -171.320735), ([2, 16, 32, 32], -413.538413), ([2, 32, 16, 16], -21.2189242), ([2, 64, 8, 8], -83.8215599)],
    },
    'resnet44': {
        'n_keys': 272,
        'keys_sha256': '3525fc1cfb28ce7461a1de5958c5b96a6a9a23ea1a39bda010b9ccd784a1786c',
        'order_sha256': 'b41f946cf6c27fbd82bc3308ea411b2b8a1f15173bd9c67e15c28b1507dc2c4b',
        'init_checksum': 50.97328451,
        'logits': [[-12.31111, 5.0209904, -1.0397449, 12.464494, -23.88201], [-11.996862, 4.9010477, -0.55418682, 12.20684, -23.288824]],
        'row_sums': [-22.430206, -17.26712],
        'feats': [([2, 16, 32, 32], -171.320735), ([2, 16, 32, 32], -306.226779), ([2, 32, 16, 16], -28.0578386), ([2, 64, 8, 8], 90.5368471)],
        'preacts': [([2, 16, 32, 32], -171.320735), ([2, 16, 32, 32], -321.963357), ([2, 32, 16, 16], 9.28907815), ([2, 64, 8, 8], 184.490887)],
    },
    'resnet56': {
        'n_keys': 344,
        'keys_sha256': '337d9f747868f1dd54d6d7640f29b5495c81266abf5b75ce3fe79b984e436dc8',
        'order_sha256': 'b6b5d7f3f75fd65ffb5eb46df0655c4da88af328354b7ac7cd6f412afcd6b471',
        'init_checksum': 123.5317615,
        'logits': [[-0.87190509, -4.5681252, -1.8379397, 25.371056, -41.334915], [-0.3549397, -3.5087361, -1.5934806, 25.236506, -39.115669]],
        'row_sums': [193.1989, 182.79041],
        'feats': [([2, 16, 32, 32], -171.320735), ([2, 16, 32, 32], -255.561413), ([2, 32, 16, 16], -52.6211814), ([2, 64, 8, 8], -52.2919849)],
        'preacts': [([2, 16, 32, 32], -171.320735), ([2, 16, 32, 32], -277.206175), ([2, 32, 16, 16], -134.015004), ([2, 64, 8, 8], -150.943615)],
    },
    'resnet110': {
        'n_keys': 668,
        'keys_sha256': '14082e796776b460ed1fff87b1b937b16d37063316e9b09f4c6b681012e82267',
        'order_sha256': '9165a4f43f9963c7742cc5a20f2c2a53675797fc3a06a76823d5623803f054e5',
        'init_checksum': 164.2864017,
        'logits': [[219.02989, -305.63998, 941.06915, 2116.5398, -4022.3787], [206.58116, -278.63806, 885.427, 2006.3965, -3815.7505]],
        'row_sums': [7396.0723, 6878.3896],
        'feats': [([2, 16, 32, 32], -171.320735), ([2, 16, 32, 32], 1230.33807), ([2, 32, 16, 16], -500.914458), ([2, 64, 8, 8], -347.480332)],
        'preacts': [([2, 16, 32, 32], -171.320735), ([2, 16, 32, 32], 1154.91581), ([2, 32, 16, 16], -178.620132), ([2, 64, 8, 8], -10538.3451)],
    },
    'resnet8x4': {
        'n_keys': 62,
        'keys_sha256': 'd2115bc0725be5ead0d11b3ea02f243922f1a63e67e3feb39a594d8510b5040b',
        'order_sha256': 'dac3c85e56032d054dd683d8ebd8ca65c0c31a2187239048eb0824d3cf1eb9d4',
        'init_checksum': 93.84916617,
        'logits': [[-1.0883275, -0.90908241, 0.56607169, 0.0019693626, -0.54059792], [-1.0815881, -0.91915375, 0.54035431, -0.05894557, -0.5017333]],
        'row_sums': [2.8385792, 3.5207782],
        'feats': [([2, 32, 32, 32], 47.5860992), ([2, 64, 32, 32], 12.9242717), ([2, 128, 16, 16], 66.8855573), ([2, 256, 8, 8], -18.4116149)],
        'preacts': [([2, 32, 32, 32], 47.5860992), ([2, 64, 32, 32], 376.33102), ([2, 128, 16, 16], 160.791335), ([2, 256, 8, 8], -19.2136955)],
    },
    'resnet32x4': {
        'n_keys': 206,
        'keys_sha256': '5a2f4296fdc06de274ff4dbdd98f013c369727f2fc46aaf29f3de184aabe4061',
        'order_sha256': '9003d1892c7428b4957add08e08b32d3063f365ad4f31f1521a3864075f7baf2',
        'init_checksum': -5.934653254,
        'logits': [[-3.8081148, -2.7869647, 1.7843059, 1.3923484, -2.7231541], [-3.5288703, -2.8035166, 1.7835938, 1.4079925, -2.7112651]],
        'row_sums': [26.906513, 28.274878],
        'feats': [([2, 32, 32, 32], 47.5860992), ([2, 64, 32, 32], -314.809371), ([2, 128, 16, 16], -124.412675), ([2, 256, 8, 8], 118.402504)],
        'preacts': [([2, 32, 32, 32], 47.5860992), ([2, 64, 32, 32], -342.14459), ([2, 128, 16, 16], -127.096945), ([2, 256, 8, 8], 112.434116)],
    },
    'wrn_16_1': {
        'n_keys': 82,
        'keys_sha256': 'ae038b3a5a5d794f5fe8045c717df1cdf07257269ffd3ca0fdd3aa3ed1b155a4',
        'order_sha256': '04314a789f8d24c7c8bb2054bb551fe646ed36eb60b0aae099ffcbde79ab0d95',
        'init_checksum': -3.232565584,
        'logits': [[-0.068069935, 0.29950473, -0.38551989, -1.9642161, 0.8053869], [-0.096530594, 0.63920784, -0.3791014, -1.9385172, 1.1166185]],
        'row_sums': [0.33385086, 0.90479755],
        'feats': [([2, 16, 32, 32], 135.343884), ([2, 16, 32, 32], 142.178227), ([2, 32, 16, 16], -8.096065), ([2, 64, 8, 8], -64.1661617)],
        'preacts': [([2, 16, 32, 32], 135.343884), ([2, 16, 32, 32], 175.463012), ([2, 32, 16, 16], -17.5616983), ([2, 64, 8, 8], -39.9161575)],
    },
    'wrn_16_2': {
        'n_keys': 83,
        'keys_sha256': 'ea6f5696b4b895000cb527a48693615d6484dc07ea1d73cbafe987e173b2e8a6',
        'order_sha256': 'a106b6a56a89db58442b91f012ca881c2309de9244a9e90bb42f2ac173a95e60',
        'init_checksum': 49.91353392,
        'logits': [[-0.2305337, 1.4210299, -1.0250199, -1.1735599, 0.51613188], [-0.2031853, 1.2985114, -0.93680602, -1.1355945, 0.52976924]],
        'row_sums': [6.9663463, 7.1728964],
        'feats': [([2, 16, 32, 32], 190.006298), ([2, 32, 32, 32], -176.168738), ([2, 64, 16, 16], -118.067859), ([2, 128, 8, 8], 107.910665)],
        'preacts': [([2, 16, 32, 32], 190.006298), ([2, 32, 32, 32], -125.561644), ([2, 64, 16, 16], -104.376577), ([2, 128, 8, 8], 108.904053)],
    },
    'wrn_40_1': {
        'n_keys': 226,
        'keys_sha256': 'ba38642fd19d16899eba3c55e2423446d13b0ab51fee35cbeea2e55ad55a127a',
        'order_sha256': '8e58a9bfe8f696112359009068311581694cc1c864181eaef61d54e3bbf627e3',
        'init_checksum': 17.65317395,
        'logits': [[-3.3442457, -1.8480421, -1.0388761, -0.78313494, 3.0418029], [-3.6912134, -1.4254071, -0.68907195, -0.42796251, 2.5277057]],
        'row_sums': [-6.4230852, -12.208423],
        'feats': [([2, 16, 32, 32], 45.6779046), ([2, 16, 32, 32], 152.962984), ([2, 32, 16, 16], -173.227149), ([2, 64, 8, 8], -252.512768)],
        'preacts': [([2, 16, 32, 32], 45.6779046), ([2, 16, 32, 32], 153.577896), ([2, 32, 16, 16], -139.34304), ([2, 64, 8, 8], -216.800206)],
    },
    'wrn_40_2': {
        'n_keys': 227,
        'keys_sha256': 'd1626a5a68f51e63df931c31d33e36aa44cbf7bf7f4e1bb35295aec5e7aaef02',
        'order_sha256': '6dccacf500023d1097e122c3ebd4a3973962c6b3bff5145bc1df3617a2f03f43',
        'init_checksum': 164.2456046,
        'logits': [[2.5335298, -4.0726447, -1.2283899, 1.9412556, 2.1943445], [2.4170105, -3.8181496, -1.02171, 1.8145454, 2.1948488]],
        'row_sums': [17.346334, 20.409821],
        'feats': [([2, 16, 32, 32], 18.7633254), ([2, 32, 32, 32], 22.3317229), ([2, 64, 16, 16], -188.275065), ([2, 128, 8, 8], -14.3912767)],
        'preacts': [([2, 16, 32, 32], 18.7633254), ([2, 32, 32, 32], 78.9137382), ([2, 64, 16, 16], -157.504939), ([2, 128, 8, 8], -21.8438212)],
    },
    'vgg8': {
        'n_keys': 37,
        'keys_sha256': '192725c09135bb468f48264e150336fb6a3214823198f08e101dd1f8718b71f1',
        'order_sha256': 'ca75148b67e2c303891594b9a846d8b58a008cc7f2f62f26b668b93d8cdab6a0',
        'init_checksum': -11.46898284,
        'logits': [[0.87611127, -0.011525081, 0.30156741, 0.12744895, 0.47815886], [0.85582924, 0.010245873, 0.28090802, 0.052963495, 0.50267923]],
        'row_sums': [1.8762686, 1.8030938],
        'feats': [([2, 64, 32, 32], -297.326844), ([2, 128, 16, 16], -99.4523221), ([2, 256, 8, 8], 11.9576269), ([2, 512, 4, 4], -13.9016815), ([2, 512, 4, 4], 6.68321845)],
        'preacts': [([2, 64, 32, 32], -297.326844), ([2, 128, 16, 16], 28.388517), ([2, 256, 8, 8], 19.5074348), ([2, 512, 4, 4], -26.9328583), ([2, 512, 4, 4], 13.5412097)],
    },
    'vgg11': {
        'n_keys': 58,
        'keys_sha256': 'a940a6a922200af3b5bfc7793eb68613da68f329dbe653b7aeb04e045c1070fd',
        'order_sha256': 'd8c10b92554dcdadec76999c041357c8aa9a313e0113d6b18499d91f42ff22aa',
        'init_checksum': 57.82888236,
        'logits': [[-0.00044219382, 0.099119425, -0.024237588, -0.026686102, 0.037478752], [0.0013325671, 0.080070615, -0.026972691, -0.002654297, 0.032501284]],
        'row_sums': [-0.35387778, -0.33134013],
        'feats': [([2, 64, 32, 32], -297.326844), ([2, 128, 16, 16], -99.4523221), ([2, 256, 8, 8], -9.84160793), ([2, 512, 4, 4], 1.64655305), ([2, 512, 4, 4], -4.64519989)],
        'preacts': [([2, 64, 32, 32], -297.326844), ([2, 128, 16, 16], 28.388517), ([2, 256, 8, 8], 0.361777891), ([2, 512, 4, 4], -1.74549609), ([2, 512, 4, 4], -8.71311968)],
    },
    'vgg13': {
        'n_keys': 72,
        'keys_sha256': '1203d287d079e46931a979c90eb72bd3d6023df68ba90b60f6fd8156f85ac5f6',
        'order_sha256': '4d2abc3e78bcd58e4d8bc1cc26f257faca1321019e58339d77b7b90fe5c9913d',
        'init_checksum': 35.4247936,
        'logits': [[0.047506943, -0.039419126, 0.016138982, -0.036912203, 0.042294655], [0.04859842, -0.034048669, 0.02038189, -0.034533534, 0.041962076]],
        'row_sums': [-0.78767145, -0.73232037],
        'feats': [([2, 64, 32, 32], -215.665822), ([2, 128, 16, 16], 28.2394715), ([2, 256, 8, 8], -17.2113923), ([2, 512, 4, 4], 1.02170748), ([2, 512, 4, 4], 0.517839431)],
        'preacts': [([2, 64, 32, 32], -215.665822), ([2, 128, 16, 16], 39.0525754), ([2, 256, 8, 8], -12.3676561), ([2, 512, 4, 4], 8.26111442), ([2, 512, 4, 4], 6.47571854)],
    },
    'vgg16': {
        'n_keys': 93,
        'keys_sha256': 'd5e1b22db9c02c63a83212aac365e8a33436d9c9deb01c4e7529d341eb18aec8',
        'order_sha256': '26c1cf13b2b5c6a3bb2cca69ca16c28f23c9a9708b7b6c8a69c574280647519f',
        'init_checksum': 52.49487812,
        'logits': [[-0.023128962, 0.0050389413, 0.019132016, -0.021864599, 0.0029227971], [-0.021198153, 0.0069783609, 0.018598609, -0.020992745, 0.0041289194]],
        'row_sums': [-0.14490409, -0.13908885],
        'feats': [([2, 64, 32, 32], -215.665822), ([2, 128, 16, 16], 28.2394715), ([2, 256, 8, 8], 1.553221), ([2, 512, 4, 4], -8.29873458), ([2, 512, 4, 4], 2.79687859)],
        'preacts': [([2, 64, 32, 32], -215.665822), ([2, 128, 16, 16], 39.0525754), ([2, 256, 8, 8], -3.85727948), ([2, 512, 4, 4], -8.41565193), ([2, 512, 4, 4], 5.29333777)],
    },
    'vgg19': {
        'n_keys': 114,
        'keys_sha256': 'a84ffc4efab96ae0b3aa5b85a6647081bd57dd784099d2a16cf74a0443a3204c',
        'order_sha256': '1a93ab2993077fb9d79732e4f70d2a12123014e45821ef17b421478500e07627',
        'init_checksum': -145.354551,
        'logits': [[-0.0010131001, 0.0049772738, 0.0089082764, -0.00022821035, -0.0091331117], [-0.00056865439, 0.004967717, 0.0087098517, -0.00042956881, -0.0089158732]],
        'row_sums': [0.21649919, 0.2159448],
        'feats': [([2, 64, 32, 32], -215.665822), ([2, 128, 16, 16], 28.2394715), ([2, 256, 8, 8], -1.80766852), ([2, 512, 4, 4], -0.295782209), ([2, 512, 4, 4], 0.568297222)],
        'preacts': [([2, 64, 32, 32], -215.665822), ([2, 128, 16, 16], 39.0525754), ([2, 256, 8, 8], -2.24148084), ([2, 512, 4, 4], 0.136968761), ([2, 512, 4, 4], 0.814578694)],
    },
    'MobileNetV2': {
        'n_keys': 320,
        'keys_sha256': '706cec19a66f21b869b7cc8183cc55a15107031bfbb175b4378528e25ad12e79',
        'order_sha256': '65a2b7a92c0cccd885e6a10fe37ba10a2ac4be814697b864c49031db766895d1',
        'init_checksum': 39.06065245,
        'logits': [[-0.0078561278, 0.0092528723, -0.010775143, 0.002976751, 0.012778548], [-0.0085070003, 0.0099682044, -0.0114837, 0.0027963137, 0.011599602]],
        'row_sums': [-0.03062626, -0.044591941],
        'feats': [([2, 16, 16, 16], 13.8040657), ([2, 12, 16, 16], -2.38381735), ([2, 16, 8, 8], -2.95063044), ([2, 48, 4, 4], 1.67584199), ([2, 160, 2, 2], -0.0268374951)],
        'preacts': None,
    },
    'ShuffleV1': {
        'n_keys': 296,
        'keys_sha256': 'd337d06f2b5500001d5a3032f8a0cb655c2552385fed559ddad6864529f1ed22',
        'order_sha256': '56df8355892d65cf980a8cbe69d9094368aadd3ca0317a7f5f5e9a10095128e5',
        'init_checksum': 122.0675911,
        'logits': [[-0.1710005, 0.98222697, 0.73218524, -0.39036345, -0.36525097], [-0.15755756, 0.93559909, 0.68219513, -0.34813094, -0.34010518]],
        'row_sums': [-10.106615, -9.7727909],
        'feats': [([2, 24, 32, 32], -64.6709136), ([2, 240, 16, 16], -35.3781029), ([2, 480, 8, 8], 23.0283676), ([2, 960, 4, 4], 4.7428114)],
        'preacts': [([2, 24, 32, 32], -64.6709136), ([2, 240, 16, 16], -40.2738977), ([2, 480, 8, 8], 15.815601), ([2, 960, 4, 4], 3.79925333)],
    },
    'ShuffleV2': {
        'n_keys': 338,
        'keys_sha256': 'b7a1d5223ee3e848a7c52922cae0b6220f5140e7341b8bb1cd89f08c32147afc',
        'order_sha256': '819595e190ffbe47c30ded14881414990b7078c9f93c93782235ca27e08c7d8e',
        'init_checksum': 148.2990769,
        'logits': [[0.017506212, 0.0058007166, 0.00090630341, -0.029037181, -0.0015912498], [0.017354473, 0.0062802946, 0.0014956963, -0.026969753, -0.0016886154]],
        'row_sums': [-0.15560396, -0.14386895],
        'feats': [([2, 24, 32, 32], 74.8274234), ([2, 116, 16, 16], -27.5636096), ([2, 232, 8, 8], 2.15578251), ([2, 464, 4, 4], 0.35104899)],
        'preacts': [([2, 24, 32, 32], 74.8274234), ([2, 116, 16, 16], 4.87276986), ([2, 232, 8, 8], 0.52919096), ([2, 464, 4, 4], -0.4542655)],
    },
    'ResNet18': {
        'n_keys': 122,
        'keys_sha256': 'bad0f3c079fb75768b6a7a5f4152da0db3ac9014033732ec9b4fee7daafbe4d7',
        'order_sha256': '57cb1c9d5f6c3dd12b2933acaa62cfe432b7b4fecfdd95c65a77fcf88ca1333d',
        'init_checksum': 101.8214037,
        'logits': [[0.49220821, -2.2392678, 0.772892, -0.10092968, -0.048277188], [0.50395823, -2.25616, 0.72804296, -0.12857099, -0.16509299]],
        'row_sums': [4.3390207, 3.9665256],
        'feats': [([2, 64, 32, 32], -87.8031031), ([2, 64, 32, 32], -316.86627), ([2, 128, 16, 16], -70.1428723), ([2, 256, 8, 8], 80.5224881), ([2, 512, 4, 4], 63.2829148)],
        'preacts': [([2, 64, 32, 32], -87.8031031), ([2, 64, 32, 32], -368.010755), ([2, 128, 16, 16], -82.9593146), ([2, 256, 8, 8], 87.5729667), ([2, 512, 4, 4], 56.5932733)],
    },
    'ResNet34': {
        'n_keys': 218,
        'keys_sha256': '1fac94b56aadea3f6428f5b887cd0be93fc90b9b26ee19779914ad013102c675',
        'order_sha256': '6c71ec22d369e31adf41645e9e84b0083f61d0da5ec773d8e138404f113a561c',
        'init_checksum': 18.64352,
        'logits': [[-1.5915623, 7.8031201, 6.1349745, -7.3694553, -2.3880434], [-1.2635022, 7.9064574, 5.6459603, -6.9142776, -2.3237526]],
        'row_sums': [32.575787, 32.557224],
        'feats': [([2, 64, 32, 32], -87.8031031), ([2, 64, 32, 32], -254.162437), ([2, 128, 16, 16], 15.1609577), ([2, 256, 8, 8], 31.6183006), ([2, 512, 4, 4], 206.720368)],
        'preacts': [([2, 64, 32, 32], -87.8031031), ([2, 64, 32, 32], -181.361558), ([2, 128, 16, 16], -47.9702437), ([2, 256, 8, 8], 10.8114439), ([2, 512, 4, 4], 217.401945)],
    },
    'ResNet50': {
        'n_keys': 320,
        'keys_sha256': '74254a6e49746cd1d7b360bf1e1283bd1aabd6b3792af68c31fbf629764f4092',
        'order_sha256': 'c622422aecd3c46aeed98175f44dd025068e891f0ca573fb830253fc02d10519',
        'init_checksum': 199.8843797,
        'logits': [[-0.49624196, -0.51527894, -0.6061269, 0.24497375, -1.0328419], [-0.43012857, -0.53425539, -0.58592653, 0.27232638, -1.1396657]],
        'row_sums': [-4.2830968, -4.238122],
        'feats': [([2, 64, 32, 32], -87.8031031), ([2, 256, 32, 32], -315.902563), ([2, 512, 16, 16], -199.421671), ([2, 1024, 8, 8], 13.159951), ([2, 2048, 4, 4], -129.967853)],
        'preacts': [([2, 64, 32, 32], -87.8031031), ([2, 256, 32, 32], -383.2932), ([2, 512, 16, 16], -248.170032), ([2, 1024, 8, 8], 26.7191647), ([2, 2048, 4, 4], -118.932967)],
    },
}

NAMES = list(PARAM_COUNTS)
RESNET_NAMES = [n for n in NAMES if n.startswith("resnet") or n.startswith("ResNet")]


# ---------------------------------------------------------------------------
# helpers (the same code produced the golden data from the reference models)

def _fill_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Deterministically overwrite every float parameter/buffer, in sorted key order."""
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    with torch.no_grad():
        for key in sorted(sd):
            t = sd[key]
            if key.endswith("num_batches_tracked"):
                continue
            u = torch.rand(t.shape, generator=g, dtype=torch.float64)
            if key.endswith("running_var"):
                v = 0.5 + 0.5 * u
            elif key.endswith("running_mean"):
                v = 0.02 * (u - 0.5)
            elif t.dim() >= 2:  # conv / linear weight: U(-2, 2) / sqrt(fan_in)
                v = (4 * u - 2) / math.sqrt(t[0].numel())
            elif key.endswith("weight"):  # BN gamma
                v = 0.5 + 0.5 * u
            else:  # BN beta, conv / linear bias
                v = 0.02 * (u - 0.5)
            t.copy_(v.to(t.dtype))
    return model


def _input(batch: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn((batch, 3, size, size), generator=torch.Generator().manual_seed(seed))


@functools.lru_cache(maxsize=None)
def _cos_table(n: int) -> torch.Tensor:
    return torch.cos(torch.arange(n, dtype=torch.float64))


def _checksum(t: torch.Tensor) -> float:
    """Order-sensitive checksum: sum of the flattened values weighted by cos(index)."""
    t = t.detach().double().flatten()
    size = 1 << max(10, (t.numel() - 1).bit_length())  # cached power-of-two table
    return float((t * _cos_table(size)[: t.numel()]).sum())


def _key_lines(sd, sort: bool = True):
    keys = sorted(sd) if sort else list(sd)
    return [f"{k}:{list(sd[k].shape)}" for k in keys]


def _sha(lines) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _create(name: str, **kwargs):
    return timm.create_model(ZOO_MODELS[name], num_classes=100, **kwargs)


class _Run:
    """One model per name: seeded construction, then filled and run once (cached)."""

    def __init__(self, name: str):
        torch.manual_seed(0)
        model = _create(name)
        sd = model.state_dict()
        self.init_checksum = sum(_checksum(sd[k]) for k in sorted(sd) if sd[k].is_floating_point())
        self.init_abs = sum(float(v.double().abs().sum()) for v in sd.values() if v.is_floating_point())
        self.model = _fill_(model).eval()
        with torch.no_grad():
            self.logits = self.model(_input())
            self.final, self.feats, self.preacts = self.model.forward_intermediates(_input(), return_preact=True)


@functools.lru_cache(maxsize=None)
def _run(name: str) -> _Run:
    return _Run(name)


def _assert_close(ours: torch.Tensor, ref, scale: float, rel: float = 1e-4):
    ref = torch.as_tensor(ref, dtype=ours.dtype)
    assert torch.allclose(ours, ref, rtol=0, atol=rel * scale), (ours, ref)


@pytest.fixture(scope="module", autouse=True)
def _module_env():
    """One intra-op thread while this module runs (batch-2 CIFAR inference gains
    nothing from more, and on a busy 2-core box OpenMP oversubscription makes it
    many times slower); afterwards restore it and drop the cached models."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
    _run.cache_clear()


# ---------------------------------------------------------------------------
# registry / names

def test_zoo_names_and_registry():
    assert list(ZOO_MODELS) == NAMES
    assert set(GOLDEN) == set(NAMES)
    registered = set(timm.list_models("cifar_*"))
    assert set(timm.list_models(module="cifar")) == set(ZOO_MODELS.values())
    for name, reg in ZOO_MODELS.items():
        assert reg == "cifar_" + name.lower()
        assert reg in registered


# ---------------------------------------------------------------------------
# 1-2: parameter counts and state_dict fingerprints

@pytest.mark.parametrize("name", NAMES)
def test_param_count(name):
    model = _run(name).model
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[name]
    assert model.num_classes == 100


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_fingerprint(name):
    sd = _run(name).model.state_dict()
    lines = _key_lines(sd)
    assert len(lines) == GOLDEN[name]["n_keys"]
    assert _sha(lines) == GOLDEN[name]["keys_sha256"]
    assert _sha(_key_lines(sd, sort=False)) == GOLDEN[name]["order_sha256"]


@pytest.mark.parametrize("name", NAMES)
def test_seeded_init_matches_reference(name):
    run = _run(name)
    # identical construction/init order gives bit-identical weights; the slack only
    # covers last-ulp differences of vectorised RNG transforms across CPUs
    assert abs(run.init_checksum - GOLDEN[name]["init_checksum"]) <= 1e-7 * run.init_abs + 1e-6


# ---------------------------------------------------------------------------
# 3: same logits and stage features as the reference

@pytest.mark.parametrize("name", NAMES)
def test_logits_match_reference(name):
    run, gold = _run(name), GOLDEN[name]
    assert run.logits.shape == (2, 100)
    scale = float(run.logits.abs().max())
    _assert_close(run.logits[:, :5], gold["logits"], scale)
    _assert_close(run.logits.sum(1), gold["row_sums"], scale * 100)
    # forward() == forward_head(forward_features()) == head on forward_intermediates' final
    with torch.no_grad():
        assert torch.allclose(run.model.forward_head(run.final), run.logits, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("name", NAMES)
def test_intermediates_match_reference(name):
    run, gold = _run(name), GOLDEN[name]
    ref_pre = gold["preacts"] if gold["preacts"] is not None else gold["feats"]  # MobileNetV2: preacts == feats
    for ours, ref in ((run.feats, gold["feats"]), (run.preacts, ref_pre)):
        assert len(ours) == len(ref)
        for t, (shape, cs) in zip(ours, ref):
            assert list(t.shape) == shape
            assert abs(_checksum(t) - cs) <= 1e-5 * float(t.double().abs().sum()) + 1e-6


# ---------------------------------------------------------------------------
# 4: community checkpoint format

# the six community teachers of the CRD / mdistiller CIFAR-100 benchmark plus one
# model per remaining family
CHECKPOINT_NAMES = ["resnet56", "resnet110", "resnet32x4", "ResNet50", "wrn_40_2", "vgg13",
                    "resnet8x4", "wrn_16_2", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2", "ResNet18"]


@pytest.mark.parametrize("name", CHECKPOINT_NAMES)
def test_checkpoint_roundtrip(name, tmp_path):
    run = _run(name)
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": run.model.state_dict(), "epoch": 240}, path)
    fresh = _create(name)
    fresh.load_state_dict(torch.load(path, map_location="cpu")["model"], strict=True)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(_input()), run.logits)


# ---------------------------------------------------------------------------
# 5: interface

@pytest.mark.parametrize("name", NAMES)
def test_interface(name):
    run = _run(name)
    model = run.model
    info = model.feature_info
    assert len(info) == len(run.feats) == len(run.preacts)
    for d, f, p in zip(info, run.feats, run.preacts):
        assert set(d) == {"num_chs", "reduction", "module"}
        assert f.shape[1] == d["num_chs"] and f.shape[2] == f.shape[3] == 32 // d["reduction"]
        assert p.shape == f.shape
        assert isinstance(model.get_submodule(d["module"]), torch.nn.Module)
    with torch.no_grad():
        assert torch.equal(model.forward_features(_input()), run.final)
        emb = model.forward_head(run.final, pre_logits=True)
    assert run.final.shape[1] == model.num_features
    assert emb.shape == (2, model.num_features)
    assert isinstance(model.get_classifier(), torch.nn.Linear)
    assert model.get_classifier().in_features == model.num_features


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "ShuffleV2"])
def test_intermediates_indices_and_return_forms(name):
    run = _run(name)
    model, n = run.model, len(run.feats)
    x = _input()
    with torch.no_grad():
        final, last2 = model.forward_intermediates(x, indices=2)
        only = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        feats, pres = model.forward_intermediates(x, indices=[1], intermediates_only=True, return_preact=True)
        final3, all_feats, all_pres = model.forward_intermediates(x, return_preact=True)
    assert torch.equal(final, run.final) and torch.equal(final3, run.final)
    assert len(last2) == 2 and all(torch.equal(a, b) for a, b in zip(last2, run.feats[-2:]))
    assert isinstance(only, list) and len(only) == 2
    assert torch.equal(only[0], run.feats[0]) and torch.equal(only[1], run.feats[n - 1])
    assert torch.equal(feats[0], run.feats[1]) and torch.equal(pres[0], run.preacts[1])
    assert len(all_feats) == len(all_pres) == n
    with pytest.raises((ValueError, IndexError)):
        model.forward_intermediates(x, indices=n + 1)


@pytest.mark.parametrize("name", NAMES)
def test_small_input(name):
    """8x8 inputs work (adaptive pooling); the feature maps shrink with the reductions."""
    model = _run(name).model
    with torch.no_grad():
        final, feats = model.forward_intermediates(_input(size=8))
        assert model(_input(size=8)).shape == (2, 100)
    for d, f in zip(model.feature_info, feats):
        assert f.shape[1] == d["num_chs"]
        assert f.shape[2] == f.shape[3] == max(1, 8 // d["reduction"])


def test_vgg_pools_after_group3_only_at_64px():
    """Reference quirk: the 4th max-pool runs only for 64x64 inputs."""
    model = _run("vgg8").model
    with torch.no_grad():
        f32 = model.forward_intermediates(_input(1, 32), intermediates_only=True)
        f64 = model.forward_intermediates(_input(1, 64), intermediates_only=True)
    assert f32[3].shape[-1] == f32[4].shape[-1] == 4
    assert f64[3].shape[-1] == 8 and f64[4].shape[-1] == 4


def test_timm_entry_points_kwargs_and_pretrained():
    fn = timm.models.model_entrypoint("cifar_resnet8")
    model = fn(pretrained=False, pretrained_cfg={"x": 1}, pretrained_cfg_overlay=None,
               cache_dir="/nonexistent", num_classes=10, drop_rate=None)
    assert model.num_classes == 10 and model(_input()).shape == (2, 10)
    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model("cifar_resnet8", pretrained=True)
    with pytest.raises(ValueError, match="pretrained"):
        fn(pretrained=True)
    # family arguments pass through timm
    wrn = timm.create_model("cifar_wrn_16_1", num_classes=10, drop_rate=0.3)
    assert wrn.block1.layer[0].drop_rate == 0.3


@pytest.mark.parametrize("name", ["resnet8", "MobileNetV2", "vgg8"])
def test_reset_classifier(name):
    model = _create(name)
    model.reset_classifier(10)
    assert model.num_classes == 10 and model.get_classifier().out_features == 10
    assert model(_input()).shape == (2, 10)
    model.reset_classifier(0)
    assert model(_input()).shape == (2, model.num_features)
    if name == "MobileNetV2":  # head stays at classifier.0 (reference key layout)
        model.reset_classifier(100)
        assert {"classifier.0.weight", "classifier.0.bias"} <= set(model.state_dict())


def test_train_step_runs():
    model = _create("resnet8").train()
    _, feats, pres = model.forward_intermediates(_input(), return_preact=True)
    loss = model.forward_head(feats[-1]).logsumexp(1).mean() + sum(p.square().mean() for p in pres)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_wrn_repeat_preact_bn_reproduces_mdistiller_buffers():
    """mdistiller's WRN.forward re-applies three BNs for its preact features, so in
    train mode their running stats are updated twice per step; opt-in here."""
    plain = _create("wrn_16_1").train()
    twice = _create("wrn_16_1", repeat_preact_bn=True).train()
    twice.load_state_dict(plain.state_dict())
    bns = ["block2.layer.0.bn1", "block3.layer.0.bn1", "bn1"]
    before = {b: plain.get_submodule(b).running_mean.clone() for b in bns}
    plain(_input())
    twice(_input())
    m = 0.1
    for b in bns:
        p, t = plain.get_submodule(b), twice.get_submodule(b)
        assert int(p.num_batches_tracked) == 1 and int(t.num_batches_tracked) == 2
        # one update: r1 = (1-m) r0 + m mu  =>  two updates: (1-m) r1 + m mu = (2-m) r1 - (1-m) r0
        assert torch.allclose(t.running_mean, (2 - m) * p.running_mean - (1 - m) * before[b], atol=1e-6)
    assert int(twice.get_submodule("block2.layer.1.bn1").num_batches_tracked) == 1
